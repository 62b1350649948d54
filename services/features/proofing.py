"""Identity proofing at the point of sale: policies, readers, nonces, blocklist, fraud signals.

``ProofingDesk`` holds the operations of ``realname.v1.ProofingService``; ``ProofingGuard`` is
the activation guard that, for operators with a policy, requires the holder's name, checks it
with the identity authority, and verifies the reader's attestation. Documents appear only as
pseudonyms and masked numbers, names only sealed or hashed.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from registry.clock import Clock
from services.domain.attestation import (
    AttestationClaims,
    AttestationFormatError,
    ReaderAttestation,
    fingerprint,
    load_public_key,
    load_public_key_der,
    new_nonce,
    nonce_digest,
    parse_claims,
    public_key_der,
    signature_valid,
    subject_digest,
)
from services.domain.cards import ActivateCard, AgentSale
from services.domain.documents import Document
from services.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RealnameError,
    Violations,
)
from services.domain.holder_names import HolderNames, card_context
from services.domain.principal import Principal, Role
from services.domain.pseudonym import Pseudonymizer
from services.domain.records import ReaderRow, SignalRow
from services.features.cards import DOCUMENT_BLOCKED, CardDesk
from services.features.guards import ActivationGuard, GuardAssumptionChanged
from services.runtime.identity_authority import (
    GuardedAuthority,
    IdentityAuthority,
    ReferenceAuthority,
    Verdict,
)
from services.storage import disputes_repo
from services.storage import proofing_repo as repo
from services.storage.database import Database
from services.storage.rawsql import Probe, Tx

HOLDER_NAME_REQUIRED = "HOLDER_NAME_REQUIRED"
IDENTITY_MISMATCH = "IDENTITY_MISMATCH"
ATTESTATION_MISSING = "ATTESTATION_MISSING"
ATTESTATION_INVALID = "ATTESTATION_INVALID"
READER_NOT_REGISTERED = "READER_NOT_REGISTERED"
NONCE_REUSED = "NONCE_REUSED"
ATTESTATION_STALE = "ATTESTATION_STALE"
FACE_MATCH_FAILED = "FACE_MATCH_FAILED"
NOT_YOUR_OPERATOR = "NOT_YOUR_OPERATOR"

BLOCK_REASONS = ("LOST", "STOLEN", "CANCELLED")
SIGNAL_KINDS = ("READER_BURST", "DISTANT_READERS", "FACE_MATCH_FAILURES")
DEFAULT_FRESHNESS_SECONDS = 300
DEFAULT_FACE_MATCH_THRESHOLD = 800
_SERIAL = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
_REFERENCE = re.compile(r"[A-Za-z0-9._:/\-]{0,64}")
_EARTH_RADIUS_KM = 6371.0


class AgentFlagger(Protocol):
    """Feeds a fraud signal to the agent registry (services.features.agents.flag_agent)."""

    def __call__(
        self,
        tx: Tx,
        operator_id: str,
        agent_id: str,
        kind: str,
        detail: str,
        *,
        now: dt.datetime | None = None,
    ) -> None:
        """Records the signal in ``tx``."""


@dataclass(frozen=True)
class SignalSettings:
    """Fraud-signal thresholds (docs/operators.md, "Identity proofing at the point of sale")."""

    burst_window_seconds: int = 600
    burst_documents: int = 20
    travel_window_seconds: int = 6 * 3600
    travel_min_km: float = 50.0
    travel_max_kmh: float = 300.0
    face_window_seconds: int = 3600
    face_failures: int = 3


@dataclass(frozen=True)
class ProofingConfig:
    """What App.build wires proofing with; every field has a working default."""

    names: HolderNames | None = None
    authority: IdentityAuthority | None = None
    nonce_ttl_seconds: int = 300
    clock_skew_seconds: int = 30
    signals: SignalSettings = SignalSettings()
    flag_agent: AgentFlagger | None = None


@dataclass(frozen=True)
class Policy:
    """An operator's proofing policy."""

    attestation_required: bool
    identity_check_required: bool
    face_match_threshold_permille: int = DEFAULT_FACE_MATCH_THRESHOLD
    freshness_seconds: int = DEFAULT_FRESHNESS_SECONDS
    updated_at: dt.datetime | None = None


@dataclass(frozen=True)
class ReaderLocation:
    """Where a reader is installed."""

    latitude: float
    longitude: float
    label: str


@dataclass(frozen=True)
class BlockOutcome:
    """What BlockDocument did."""

    document_masked: str
    already_blocked: bool
    cards_flagged: int


def _place(latitude: float | None, longitude: float | None) -> tuple[float, float] | None:
    return None if latitude is None or longitude is None else (latitude, longitude)


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (latitude, longitude) points."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def _refuse(reason: str, message: str, **metadata: str) -> FailedPrecondition:
    return FailedPrecondition(message, reason=reason, metadata=metadata)


def _check_serial(v: Violations, path: str, value: str) -> None:
    if not _SERIAL.fullmatch(value):
        v.add(path, "must be 1-64 characters of [A-Za-z0-9._:-]")


class ProofingDesk:
    """The ProofingService operations and the attestation checks the guard runs."""

    def __init__(
        self,
        db: Database,
        pseudonymizer: Pseudonymizer,
        names: HolderNames,
        clock: Clock,
        *,
        config: ProofingConfig,
        authority: IdentityAuthority,
    ) -> None:
        self._db = db
        self._pseudo = pseudonymizer
        self.names = names
        self._clock = clock
        self._config = config
        self.authority = authority

    def screen(self, operator_id: str, document: Document, holder_name: str | None) -> None:
        """A new holder's check outside activation (TransferCard): blocklist, then authority.

        Without a name an operator whose policy checks identities refuses (fails closed).
        """
        key = self._pseudo.document_key(document)

        def read(tx: Tx) -> tuple[str | None, repo.Policy | None]:
            return repo.is_blocked(tx, key), repo.get_policy(tx, operator_id)

        blocked, policy = self._db.run_tx(read, readonly=True)
        if blocked is not None:
            raise _refuse(
                DOCUMENT_BLOCKED,
                f"document {document.masked()} is blocked ({blocked.lower()})",
                status=blocked,
            )
        if policy is None or not policy.identity_check_required:
            return
        if holder_name is None:
            raise InvalidArgument(
                [FieldViolation("holder_name", "required by the operator's proofing policy")],
                reason=HOLDER_NAME_REQUIRED,
            )
        today = (self._clock() + dt.timedelta(hours=8)).date()
        _raise_for(self.authority.verify(document, holder_name, today), document)

    # --- policies --------------------------------------------------------------------------

    def set_policy(self, operator_id: str, policy: Policy) -> Policy:
        """Turns proofing on for the operator, or changes its policy."""
        v = Violations()
        if not 0 <= policy.face_match_threshold_permille <= 1000:
            v.add("policy.face_match_threshold_permille", "must be 0-1000")
        if not 10 <= policy.freshness_seconds <= 3600:
            v.add("policy.freshness_seconds", "must be 10-3600")
        v.raise_if_any()
        stored = repo.Policy(
            policy.attestation_required,
            policy.identity_check_required,
            policy.face_match_threshold_permille,
            policy.freshness_seconds,
            self._clock(),
        )

        def work(tx: Tx) -> None:
            self._known_operator(tx, operator_id)
            repo.set_policy(tx, operator_id, stored)

        self._db.run_tx(work)
        return _policy(stored)

    def turn_off(self, operator_id: str) -> None:
        """Turns proofing off for the operator: its activations are checked as without a policy.

        Removing the row is enough for every process: the guard re-reads the policy in each
        activation's transaction and decides again when it differs from what it assumed.
        """

        def work(tx: Tx) -> None:
            self._known_operator(tx, operator_id)
            repo.delete_policy(tx, operator_id)

        self._db.run_tx(work)

    def get_policy(self, operator_id: str) -> Policy | None:
        """The operator's policy, or None when proofing is off for it."""
        found = self._db.run_tx(lambda tx: repo.get_policy(tx, operator_id), readonly=True)
        return None if found is None else _policy(found)

    @staticmethod
    def _known_operator(tx: Tx, operator_id: str) -> None:
        if not repo.operator_exists(tx, operator_id):
            raise PermissionDenied(
                "the calling operator is not registered with this service",
                reason="UNKNOWN_OPERATOR",
                metadata={"operator": operator_id},
            )

    # --- readers ---------------------------------------------------------------------------

    def register_reader(
        self,
        operator_id: str,
        serial: str,
        agent_id: str,
        public_key_pem: str,
        location: ReaderLocation | None,
    ) -> ReaderRow:
        """Registers a certified reader to one of the operator's agents (location None: not
        known, and the reader then takes no part in distance signals)."""
        v = Violations()
        _check_serial(v, "serial", serial)
        _check_serial(v, "agent_id", agent_id)
        der, algorithm = b"", ""
        try:
            key, algorithm = load_public_key(public_key_pem)
            der = public_key_der(key)
        except AttestationFormatError as exc:
            v.add("public_key_pem", str(exc))
        if location is not None:
            if not (-90 <= location.latitude <= 90 and -180 <= location.longitude <= 180):
                v.add("location", "latitude must be -90..90 and longitude -180..180")
            if len(location.label) > 128 or not location.label.isprintable():
                v.add("location.label", "must be at most 128 printable characters")
        v.raise_if_any()
        latitude, longitude, label = (
            (None, None, "")
            if location is None
            else (location.latitude, location.longitude, location.label)
        )
        row = ReaderRow(
            operator_id, serial, agent_id, algorithm, der, fingerprint(der), latitude,
            longitude, label, self._clock(), None, None,
        )  # fmt: skip

        def work(tx: Tx) -> None:
            self._known_operator(tx, operator_id)
            if not repo.insert_reader(tx, row):
                raise AlreadyExists(
                    f"reader {serial} is already registered", reason="READER_EXISTS"
                )

        self._db.run_tx(work)
        return row

    def list_readers(self, operator_id: str, agent_id: str) -> list[ReaderRow]:
        """The operator's readers, optionally one agent's."""
        if agent_id:
            v = Violations()
            _check_serial(v, "agent_id", agent_id)
            v.raise_if_any()
        return self._db.run_tx(
            lambda tx: repo.list_readers(tx, operator_id, agent_id or None), readonly=True
        )

    def revoke_reader(self, operator_id: str, serial: str, reason: str) -> ReaderRow:
        """Revokes one of the operator's readers."""
        v = Violations()
        _check_serial(v, "serial", serial)
        if len(reason) > 200 or not reason.isprintable():
            v.add("reason", "must be at most 200 printable characters")
        v.raise_if_any()

        def work(tx: Tx) -> ReaderRow:
            found = repo.get_reader(tx, operator_id, serial)
            if found is None:
                raise NotFound(f"no reader {serial}", reason="READER_NOT_FOUND")
            if not repo.revoke_reader(tx, operator_id, serial, reason, self._clock()):
                raise FailedPrecondition(
                    f"reader {serial} is already revoked", reason="READER_ALREADY_REVOKED"
                )
            updated = repo.get_reader(tx, operator_id, serial)
            assert updated is not None
            return updated

        return self._db.run_tx(work)

    # --- nonces ----------------------------------------------------------------------------

    def issue_nonce(self, operator_id: str) -> tuple[str, dt.datetime]:
        """A fresh single-use nonce for the operator, and when it expires."""
        nonce = new_nonce(secrets.token_bytes(24))
        now = self._clock()
        expires = now + dt.timedelta(seconds=self._config.nonce_ttl_seconds)

        def work(tx: Tx) -> None:
            self._known_operator(tx, operator_id)
            repo.insert_nonce(tx, nonce_digest(nonce), operator_id, now, expires)
            # Used or not, a nonce a day past expiry is useless: trim a few per issue.
            repo.delete_expired_nonces(tx, now - dt.timedelta(days=1), 20)

        self._db.run_tx(work)
        return nonce, expires

    # --- blocklist -------------------------------------------------------------------------

    def block_document(self, document: Document, reason: str, reference: str) -> BlockOutcome:
        """Blocks a document and takes its live cards out of service at every operator."""
        v = Violations()
        if reason not in BLOCK_REASONS:
            v.add("reason", "must be LOST, STOLEN or CANCELLED")
        if not _REFERENCE.fullmatch(reference):
            v.add("reference", "must be 0-64 characters of [A-Za-z0-9._:/-]")
        v.raise_if_any()
        key = self._pseudo.document_key(document)
        masked = document.masked()

        def work(tx: Tx) -> BlockOutcome:
            now = self._clock()
            blocked = repo.block(
                tx,
                key,
                document_type=document.type.value,
                masked=masked,
                reason=reason,
                reference=reference,
                now=now,
            )
            if not blocked:
                return BlockOutcome(masked, True, 0)
            # Every live card leaves service: active ones now, disputed ones when the dispute
            # settles, pending ones at their handover (repo.card_state_sql).
            flagged = repo.suspend_for_reverification(tx, key)
            flagged += disputes_repo.reverify_on_settlement(tx, key)
            flagged += repo.pending_cards_of_document(tx, key)
            return BlockOutcome(masked, False, flagged)

        return self._db.run_tx(work)

    def unblock_document(self, document: Document) -> bool:
        """Unblocks a document; returns whether it was blocked."""
        key = self._pseudo.document_key(document)
        return self._db.run_tx(lambda tx: repo.unblock(tx, key))

    # --- fraud signals ---------------------------------------------------------------------

    def list_signals(
        self, caller: Principal, operator_id: str | None, limit: int
    ) -> list[SignalRow]:
        """Fraud signals, newest first: the regulator's, of the operator named (None: every
        operator's); an operator's, only its own — naming another is PERMISSION_DENIED."""
        if caller.role is not Role.REGULATOR:
            if operator_id not in (None, caller.organisation):
                # Refused, not quietly narrowed: a caller must not take its own signals for
                # another operator's answer.
                raise PermissionDenied(
                    f"operator {caller.organisation} may list only its own fraud signals",
                    reason=NOT_YOUR_OPERATOR,
                    metadata={"operator": operator_id or "", "caller": caller.organisation},
                )
            operator_id = caller.organisation
        limit = 500 if limit <= 0 else min(limit, 500)
        return self._db.run_tx(lambda tx: repo.list_signals(tx, operator_id, limit), readonly=True)

    # --- attestations ----------------------------------------------------------------------

    def verify_attestation(
        self,
        operator_id: str,
        agent_id: str,
        *,
        document: Document,
        name: str,
        attestation: ReaderAttestation,
        policy: repo.Policy,
    ) -> None:
        """Checks an attestation; its nonce is consumed and the check recorded even on refusal."""
        try:
            claims = parse_claims(attestation.payload)
        except AttestationFormatError as exc:
            raise _refuse(
                ATTESTATION_INVALID, f"the attestation is malformed: {exc}", check="format"
            ) from None
        id_key = self._pseudo.document_key(document)

        def work(tx: Tx) -> RealnameError | None:
            now = self._clock()
            nonce_state = repo.consume_nonce(tx, nonce_digest(claims.nonce), operator_id, now)
            reader = repo.get_reader(tx, operator_id, claims.reader_serial)
            if reader is None or reader.agent_id != agent_id:
                return _refuse(
                    READER_NOT_REGISTERED,
                    f"reader {claims.reader_serial} is not registered to agent {agent_id}",
                    reader=claims.reader_serial,
                )
            if reader.revoked_at is not None:
                return _refuse(
                    READER_NOT_REGISTERED,
                    f"reader {claims.reader_serial} is revoked",
                    reader=claims.reader_serial,
                    status="REVOKED",
                )
            key = load_public_key_der(reader.public_key)
            if not signature_valid(key, attestation.payload, attestation.signature):
                return _refuse(
                    ATTESTATION_INVALID,
                    "the attestation's signature does not verify with the reader's key",
                    check="signature",
                )
            error = self._claims_problem(
                claims, nonce_state, document=document, name=name, policy=policy, now=now
            )
            outcome = "ACCEPTED" if error is None else error.reason
            repo.record_attestation(
                tx, reader, id_key, outcome=outcome, face_score=claims.face_score, now=now
            )
            self._raise_signals(tx, reader, id_key, now)
            return error

        error = self._db.run_tx(work)
        if error is not None:
            raise error

    def _claims_problem(
        self,
        claims: AttestationClaims,
        nonce_state: str,
        *,
        document: Document,
        name: str,
        policy: repo.Policy,
        now: dt.datetime,
    ) -> RealnameError | None:
        if nonce_state == "UNKNOWN":
            return _refuse(ATTESTATION_INVALID, "the nonce was not issued to you", check="nonce")
        if nonce_state == "USED":
            return _refuse(NONCE_REUSED, "the attestation's nonce was already used")
        if nonce_state == "EXPIRED":
            return _refuse(ATTESTATION_STALE, "the attestation's nonce expired", check="nonce")
        age = (now - claims.time).total_seconds()
        if age > policy.freshness_seconds or age < -self._config.clock_skew_seconds:
            return _refuse(
                ATTESTATION_STALE,
                f"the attestation is {int(age)} s old; at most {policy.freshness_seconds} s",
                check="time",
            )
        if claims.subject != subject_digest(claims.nonce, document, name):
            return _refuse(
                ATTESTATION_INVALID,
                f"the attested document and name are not {document.masked()} and the given name",
                check="document",
            )
        if not claims.liveness or claims.face_score < policy.face_match_threshold_permille:
            return _refuse(
                FACE_MATCH_FAILED,
                f"face match {claims.face_score}/1000 (liveness "
                f"{'passed' if claims.liveness else 'failed'}); the operator requires "
                f"{policy.face_match_threshold_permille}",
                score=str(claims.face_score),
                threshold=str(policy.face_match_threshold_permille),
            )
        return None

    def _raise_signals(self, tx: Tx, reader: ReaderRow, id_key: bytes, now: dt.datetime) -> None:
        s = self._config.signals
        raised: list[tuple[str, str, int]] = []
        count = repo.documents_attested(
            tx,
            reader.operator_id,
            reader.serial,
            now - dt.timedelta(seconds=s.burst_window_seconds),
        )
        if count >= s.burst_documents:
            detail = f"{count} documents in {s.burst_window_seconds} s"
            raised.append(("READER_BURST", detail, s.burst_window_seconds))
        failures = repo.face_failures(
            tx, reader.operator_id, reader.serial, now - dt.timedelta(seconds=s.face_window_seconds)
        )
        if failures >= s.face_failures:
            detail = f"{failures} face-match failures in {s.face_window_seconds} s"
            raised.append(("FACE_MATCH_FAILURES", detail, s.face_window_seconds))
        # Distances need both places: a reader registered without a location is unknown, not at
        # (0, 0), and neither raises nor takes part in a distance signal.
        here = _place(reader.latitude, reader.longitude)
        travel_since = now - dt.timedelta(seconds=s.travel_window_seconds)
        for other in [] if here is None else repo.sightings(tx, id_key, travel_since):
            there = _place(other.latitude, other.longitude)
            if here is None or there is None:
                continue
            km = distance_km(here, there)
            hours = max((now - other.recorded_at).total_seconds() / 3600, 1 / 60)
            if km >= s.travel_min_km and km / hours > s.travel_max_kmh:
                detail = (
                    f"one document attested {km:.0f} km away {hours * 60:.0f} min earlier "
                    f"(reader {other.operator_id}/{other.reader_serial})"
                )
                raised.append(("DISTANT_READERS", detail, s.travel_window_seconds))
                break
        for kind, detail, window in raised:
            # One signal per reader, kind and window: a burst raises one row, not one per card.
            since = now - dt.timedelta(seconds=window)
            if repo.signal_since(tx, kind, reader.operator_id, reader.serial, since):
                continue
            repo.insert_signal(tx, kind, reader, detail, now)
            if self._config.flag_agent is not None:
                self._config.flag_agent(
                    tx, reader.operator_id, reader.agent_id, kind, detail, now=now
                )


def _policy(row: repo.Policy) -> Policy:
    return Policy(
        row.attestation_required,
        row.identity_check_required,
        row.face_match_threshold_permille,
        row.freshness_seconds,
        row.updated_at,
    )


class ProofingGuard(ActivationGuard):
    """ActivateCard's proofing: name, identity authority, attestation, blocklist, sealed name."""

    def __init__(
        self,
        db: Database,
        pseudonymizer: Pseudonymizer,
        desk: ProofingDesk,
        authority: IdentityAuthority,
        clock: Clock,
    ) -> None:
        self._db = db
        self._pseudo = pseudonymizer
        self._desk = desk
        self._authority = authority
        self._clock = clock
        # Operators this process found without a policy: for them ``before`` has nothing to do
        # and skips its read. The activation transaction reads the policy again (``probes``) and
        # sends the call back through ``before`` if it is not the one assumed, so a policy set
        # by another process applies from the next activation on. An operator with a policy is
        # read afresh every time: its checks have effects (an attestation spends its nonce).
        self._known_off: set[str] = set()
        self._assumed: contextvars.ContextVar[repo.Policy | None] = contextvars.ContextVar(
            "proofing_policy_assumed"
        )

    def before(self, operator_id: str, cmd: ActivateCard) -> None:
        """Outside any transaction: the authority's remote call, then the attestation."""
        if operator_id in self._known_off:
            self._assumed.set(None)
            return

        def read(tx: Tx) -> tuple[repo.Policy | None, bool]:
            policy = repo.get_policy(tx, operator_id)
            if policy is None:
                return None, False
            return policy, repo.request_recorded(tx, operator_id, cmd.request_id)

        policy, retried = self._db.run_tx(read, readonly=True)
        self._assumed.set(policy)
        if policy is None:
            self._known_off.add(operator_id)
            return
        # A retried request id replays its first outcome: its nonce is spent, so skip the checks.
        if retried:
            return
        name = cmd.holder_name
        if name is None:
            raise InvalidArgument(
                [FieldViolation("holder_name", "required by the operator's proofing policy")],
                reason=HOLDER_NAME_REQUIRED,
            )
        verdict = Verdict.MATCH
        if policy.identity_check_required:
            today = (self._clock() + dt.timedelta(hours=8)).date()
            verdict = self._authority.verify(cmd.document, name, today)
        if policy.attestation_required and isinstance(cmd.channel, AgentSale):
            if cmd.attestation is None:
                raise _refuse(
                    ATTESTATION_MISSING,
                    "agent sales of this operator need the ID-card reader's attestation",
                )
            self._desk.verify_attestation(
                operator_id,
                cmd.channel.agent_id,
                document=cmd.document,
                name=name,
                attestation=cmd.attestation,
                policy=policy,
            )
        _raise_for(verdict, cmd.document)

    def probes(self, operator_id: str, cmd: ActivateCard) -> Sequence[Probe]:
        """The document's block reason if it is blocklisted, then the operator's policy."""
        return (
            repo.block_probe(self._pseudo.document_key(cmd.document)),
            *repo.policy_probes(operator_id),
        )

    def check(
        self,
        tx: Tx,
        operator_id: str,
        cmd: ActivateCard,
        now: dt.datetime,
        answers: Sequence[Any],
    ) -> None:
        """In the activation transaction: a blocklisted document gets no new card anywhere."""
        reason = answers[0]
        if repo.policy_from(tx, answers[1:]) != self._assumed.get(None):
            # Set, changed or removed since ``before`` decided what to check: decide again.
            self._known_off.discard(operator_id)
            raise GuardAssumptionChanged
        if reason is not None:
            raise _refuse(
                DOCUMENT_BLOCKED,
                f"document {cmd.document.masked()} is blocked ({reason.lower()})",
                status=reason,
            )

    def activated(
        self, tx: Tx, operator_id: str, card_id: int, cmd: ActivateCard, now: dt.datetime
    ) -> None:
        """Stores the holder's name sealed on the new card."""
        if cmd.holder_name is None:
            return
        sealed = self._desk.names.seal(cmd.holder_name, card_context(card_id))
        repo.set_holder_name(tx, card_id, sealed.ciphertext, sealed.key_id, sealed.name_hash)


def _raise_for(verdict: Verdict, document: Document) -> None:
    if verdict is Verdict.MATCH:
        return
    if verdict in (Verdict.MISMATCH, Verdict.UNKNOWN):
        raise _refuse(
            IDENTITY_MISMATCH,
            f"the identity authority does not match the name with document {document.masked()}",
            authority=verdict.value,
        )
    raise _refuse(
        DOCUMENT_BLOCKED,
        f"the identity authority reports document {document.masked()} as {verdict.value.lower()}",
        status=verdict.value,
    )


def wire_proofing(
    db: Database,
    pseudonymizer: Pseudonymizer,
    clock: Clock,
    cards: CardDesk,
    config: ProofingConfig | None = None,
    *,
    flag_agent: AgentFlagger | None = None,
) -> ProofingDesk:
    """Builds the proofing desk and adds its guard to ActivateCard (the composition root's part).

    Defaults: holder-name keys derived from the pepper, and the reference identity authority
    behind the deadline and circuit breaker.
    """
    config = config or ProofingConfig()
    if config.flag_agent is None and flag_agent is not None:
        config = replace(config, flag_agent=flag_agent)
    names = config.names or HolderNames.from_pepper(pseudonymizer)
    authority = config.authority or GuardedAuthority(ReferenceAuthority(db, pseudonymizer, names))
    desk = ProofingDesk(db, pseudonymizer, names, clock, config=config, authority=authority)
    cards.add_guard(ProofingGuard(db, pseudonymizer, desk, authority, clock))
    # The new holder is screened like a buyer: blocklist, and the authority when required.
    cards.add_transfer_check(
        lambda operator_id, cmd: desk.screen(operator_id, cmd.new_document, cmd.new_holder_name)
    )
    # A holder re-verified after a block is screened the same way.
    cards.add_holder_check(desk.screen)
    return desk
