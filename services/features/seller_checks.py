"""Seller checks on the hot path: verification, the process's trust cache, CRLs and OCSP.

What a serving process holds in memory:

* a :class:`~registry.pki.verify.Verifier` over the trust bundle (root, operator CAs, CRLs) read
  from the database. Every transaction that changes a CRL, a CA or a shop's current
  authorization bumps ``authz_state.generation``; a verification uses the generation the
  :class:`RegistryWatch` polled (or, when it cannot, reads it in the same statement as the
  certificate it needs), and a newer one makes the process reload the bundle first (keeping its
  verdicts when only an issuance moved it);
* operator CA keys, opened once from their encrypted PKCS#8 with the CA passphrase;
* one OCSP responder per operator (all its key generations);
* a :class:`RegistryWatch`: each shop's current certificates (or that it has none) as of the
  generation, which every issuance, renewal, revocation, CRL and CA change moves. A background
  thread reads the generation every :data:`POLL_INTERVAL` and drops the shop cache when it moved;
  this process's own writes drop it at once. VerifySeller by shop or by certificate then answers
  from memory, with no database round trip, as long as the last successful poll *started* at most
  :data:`STALENESS_BOUND` ago -- otherwise (poller stopped, database unreachable) it reads the
  database as before. The bound this gives: a change committed by another process (a revocation
  at another worker or host, a new authorization, a CA revoked by the CLI) is in force for every
  verification that starts :data:`STALENESS_BOUND` after its commit, or earlier.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from sqlalchemy import Connection

from registry.authz import authorities, workflow
from registry.authz.errors import (
    NotFoundError,
    RegistryError,
)
from registry.authz.judge import RecordFacts, judge
from registry.authz.records import (
    decode_scope,
    parse_serial,
    serial_hex,
)
from registry.authz.tables import ROOT_ISSUER
from registry.clock import Clock, utc_now
from registry.pki.authority import CertificateAuthority
from registry.pki.bundle import TrustBundle
from registry.pki.errors import (
    CertificateFormatError,
    InvalidOperatorError,
    PkiError,
    RevocationUnavailableError,
)
from registry.pki.ocsp import CertificateStatus, OcspResponder, unsuccessful_response
from registry.pki.operators import validate_operator_id
from registry.pki.revocation import reason_code, reason_from_code
from registry.pki.scope import CardType, Scope
from registry.pki.verify import Reason, Verdict, Verifier
from services.domain.cards import CardType as CardKind
from services.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Unavailable,
    Violations,
)
from services.features.sellers import (
    RegistryConfig,
    SellerService,
    check_operator,
    check_province,
    mapped_errors,
    read_mapped,
    refuse_nul,
    write_mapped,
)
from services.storage import sellers_repo as repo
from services.storage.database import Database
from services.storage.rawsql import Tx

log = logging.getLogger("realname.registry")

SELLER_NOT_AUTHORIZED: Final = "SELLER_NOT_AUTHORIZED"
"""ErrorInfo reason of an online activation without a valid authorization of the caller."""


MAX_SWEEP_BATCH: Final = 5000
"""Most shops in one VerifySellers request."""

REFRESH_MARGIN: Final = dt.timedelta(hours=1)
"""How long before a CRL's nextUpdate the in-memory bundle is re-read (to pick up a re-signing)."""

RETRY_STALE_AFTER: Final = dt.timedelta(minutes=1)
"""Least time between re-reads of a bundle whose CRLs nobody has re-signed yet."""

# Order in which verdicts for several operators' authorizations of one shop are preferred: the
# one closest to "authorized" answers for the shop.
_PREFERENCE: Final = {
    reason: rank
    for rank, reason in enumerate(
        (
            Reason.AUTHORIZED,
            Reason.OUT_OF_SCOPE,
            Reason.NOT_YET_VALID,
            Reason.EXPIRED,
            Reason.REVOKED,
            Reason.OPERATOR_REVOKED,
            Reason.INVALID_SIGNATURE,
            Reason.UNKNOWN_STORE,
        )
    )
}


@dataclass(frozen=True, slots=True)
class SellerVerdict:
    """A verdict about a seller, with the authorization fields it was judged on."""

    reason: Reason
    detail: str
    marketplace: str = ""
    shop_id: str = ""
    serial_hex: str = ""
    operator: str = ""
    legal_name: str = ""
    credit_code: str = ""
    scope: Scope | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    revocation_reason: int | None = None

    @property
    def authorized(self) -> bool:
        """Whether the reason is AUTHORIZED."""
        return self.reason is Reason.AUTHORIZED


class SellerCheck(Protocol):
    """What the card desk asks before an online-channel activation."""

    def check_online_sale(self, tx: Tx, operator: str, serial: str, card_type: CardKind) -> str:
        """Return the canonical serial if it authorizes ``operator``'s sale, else raise."""


@dataclass(frozen=True, slots=True)
class _Trust:
    generation: int
    verifier: Verifier
    refresh_at: dt.datetime
    # From this moment on every revocation in the bundle is in force (its newest thisUpdate).
    present_from: dt.datetime
    bundle: TrustBundle
    # AUTHORIZED verdicts (scope unchecked) by certificate bytes, about the present only.
    authorized: dict[bytes, Verdict] = field(default_factory=dict)

    def is_present(self, moment: dt.datetime) -> bool:
        """Whether a verdict at ``moment`` may come from, or go to, the cache."""
        return self.present_from <= moment < self.refresh_at


VERDICT_CACHE_SIZE: Final = 50_000
"""Most AUTHORIZED verdicts a process keeps per generation."""

POLL_INTERVAL: Final = 0.1
"""Seconds between two reads of the registry generation by a process's :class:`RegistryWatch`."""

STALENESS_BOUND: Final = 0.25
"""Seconds: the oldest poll an answer from memory may rest on (see :class:`RegistryWatch`).

A change committed by another process is in force for every verification that starts this long
after its commit. Above :data:`POLL_INTERVAL` by a margin for the poll's own round trip and
scheduling on a busy host; a poll that does not finish in time makes answers read the database.
"""

SHOP_CACHE_SIZE: Final = 50_000
"""Most shops (known or unknown) a process remembers per generation."""


class RegistryWatch:
    """The registry generation as last polled, and each shop's current certificates as of it.

    Answers from memory are allowed only while the poller runs and its last successful poll
    started within :data:`STALENESS_BOUND`: every change committed before that poll's statement
    began is visible to it (each statement reads a snapshot at least that new), so a cached answer
    is never older than the bound. A shop entry is stored only with the generation read in the
    same statement as its certificates, and only if that is the polled one: a read racing a
    change can never be cached as current.
    """

    def __init__(
        self,
        db: Database,
        *,
        interval: float = POLL_INTERVAL,
        bound: float = STALENESS_BOUND,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self.interval = interval
        """Seconds between polls; read before each wait, so a change applies from the next one."""
        self._bound = bound
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # The generation and the shops cached at it, swapped together in one assignment so a
        # lock-free reader never pairs a new generation with the old generation's shops.
        self._cache: tuple[int, dict[tuple[str, str], list[repo.StoredCertificate]]] = (-1, {})
        # monotonic() at the start of the last successful poll; -inf: nothing to rely on.
        self._polled_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    @property
    def bound(self) -> float:
        """The staleness bound in seconds."""
        return self._bound

    def fresh_generation(self) -> int | None:
        """The polled generation if answers may rest on it now, else None (read the database)."""
        # polled_at before the generation: poll() sets them in the other order, so the
        # generation read is at least as new as the poll whose age is checked.
        polled_at = self._polled_at
        generation = self._cache[0]
        if self._thread is None or self._monotonic() - polled_at > self._bound:
            return None
        return generation

    def poll(self) -> int:
        """Read the generation now; drop the shop cache if it moved. Raises what the read does."""
        started = self._monotonic()
        try:
            generation = self._db.run_tx(repo.generation, readonly=True)
        except BaseException:
            with self._lock:
                # A failed poll (own write's check included) must not leave older data trusted.
                self._polled_at = float("-inf")
            raise
        with self._lock:
            if started < self._polled_at:
                return self._cache[0]  # a poll that started later has already answered
            if generation != self._cache[0]:
                self._cache = (generation, {})
            self._polled_at = started
        return generation

    def changed(self) -> None:
        """This process committed a change: re-poll now (on failure, read the database)."""
        try:
            self.poll()
        except Exception:
            # Not the writer's failure: its change is committed, and the failed poll has already
            # stopped answers from memory until the background poll reads the generation again.
            log.warning("registry generation unreadable after a write; reading the database")

    def shop(
        self, generation: int, marketplace: str, shop_id: str
    ) -> list[repo.StoredCertificate] | None:
        """The cached certificates of a shop at ``generation`` ([] = none), None if not cached."""
        cached, shops = self._cache
        return shops.get((marketplace, shop_id)) if cached == generation else None

    def remember(
        self,
        generation: int,
        marketplace: str,
        shop_id: str,
        found: list[repo.StoredCertificate],
    ) -> None:
        """Cache what the database said of a shop, if it was read at the polled generation."""
        with self._lock:
            cached, shops = self._cache
            if generation != cached or self._thread is None:
                return
            if len(shops) >= SHOP_CACHE_SIZE:
                # Oldest first (dicts keep insertion order): hot shops come straight back.
                del shops[next(iter(shops))]
            shops[(marketplace, shop_id)] = found

    def start(self) -> None:
        """Start polling on a daemon thread (a serving process; see ``realname serve``)."""
        if self._thread is not None:
            return
        self._stop.clear()
        thread = threading.Thread(target=self._run, name="registry-watch", daemon=True)
        self._thread = thread
        thread.start()

    def stop(self) -> None:
        """Stop polling; answers read the database again."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=10)
        with self._lock:
            self._thread = None
            self._polled_at = float("-inf")
            self._cache = (self._cache[0], {})

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
                if self._failing:
                    self._failing = False
                    log.info("registry generation readable again; answering from memory")
            except Exception as exc:
                # Keep polling: meanwhile verifications read the database (poll() saw to that),
                # and one log line per outage, not ten a second.
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "cannot read the registry generation; verifications read the database",
                        extra={"fields": {"error": type(exc).__name__}},
                    )
            self._stop.wait(self.interval)


class TrustCache:
    """The process's verifier, reloaded when the registry's generation moves past it."""

    def __init__(self, db: Database, clock: Clock, refresh: Callable[[], object]) -> None:
        self._db = db
        self._clock = clock
        self._refresh = refresh
        self._lock = threading.Lock()
        self._trust: _Trust | None = None

    def verifier(self, generation: int, *, may_write: bool = True) -> Verifier:
        """A verifier at least as new as ``generation`` (read in the caller's statement).

        When the bundle's CRLs near their nextUpdate, ``may_write`` lets this call re-sign them
        first; callers inside a write transaction pass False (on SQLite a second writer would
        wait for their own lock) and rely on the background refresher.
        """
        trust = self._trust
        now = self._clock()
        if trust is not None and trust.generation >= generation and now < trust.refresh_at:
            return trust.verifier
        with self._lock:
            trust = self._trust
            if trust is not None and trust.generation >= generation and now < trust.refresh_at:
                return trust.verifier
            with mapped_errors():
                snapshot = self._db.read(authorities.load_bundle)
                if may_write and snapshot.earliest_next_update - REFRESH_MARGIN <= now:
                    self._refresh()
                    snapshot = self._db.read(authorities.load_bundle)
            if trust is not None and snapshot.bundle == trust.bundle and now < trust.refresh_at:
                # The generation moved for an issuance or renewal: same CAs and CRLs, so the
                # verifier and its AUTHORIZED verdicts still hold.
                self._trust = replace(trust, generation=snapshot.generation)
                return trust.verifier
            if trust is None:
                verifier = Verifier(snapshot.bundle)
            else:
                # update() keeps the already-verified CAs and CRLs and swaps atomically.
                verifier = trust.verifier
                verifier.update(snapshot.bundle)
            refresh_at = max(
                snapshot.earliest_next_update - REFRESH_MARGIN, now + RETRY_STALE_AFTER
            )
            self._trust = _Trust(
                snapshot.generation,
                verifier,
                refresh_at,
                snapshot.latest_this_update,
                snapshot.bundle,
            )
            return verifier

    def verify(
        self,
        generation: int,
        certificate: bytes,
        card_type: CardType | None,
        province: str | None,
        moment: dt.datetime,
        *,
        may_write: bool = True,
    ) -> Verdict:
        """Verify like ``Verifier.verify``, remembering AUTHORIZED chains for this generation.

        A certificate's signatures never change, and every revocation or CA change moves the
        generation (a new cache), so an AUTHORIZED verdict computed without a scope stays true
        until the store certificate expires (it never outlives its CA) or the bundle is re-read
        -- but only for the present: from the bundle's newest CRL on, every revocation it lists
        is in force. A verdict about an earlier moment (a courier's offline handover) may say
        AUTHORIZED for a store revoked since, so such a moment is verified afresh and its
        verdict never cached. The scope is checked on every call, where the Verifier checks it
        too: last.
        """
        verifier = self.verifier(generation, may_write=may_write)
        trust = self._trust
        assert trust is not None
        if not trust.is_present(moment):
            return verifier.verify(certificate, card_type=card_type, province=province, at=moment)
        cached = trust.authorized.get(certificate)
        if cached is None or not _in_validity(cached, moment):
            cached = verifier.verify(certificate, at=moment)
            if cached.reason is not Reason.AUTHORIZED:
                return verifier.verify(
                    certificate, card_type=card_type, province=province, at=moment
                )
            if len(trust.authorized) < VERDICT_CACHE_SIZE:
                trust.authorized[certificate] = cached
        authorization = cached.authorization
        assert authorization is not None
        if not authorization.scope.permits(card_type, province):
            asked = f"{card_type or 'any card type'} in {province or 'any province'}"
            return replace(
                cached,
                reason=Reason.OUT_OF_SCOPE,
                detail=f"authorized for {authorization.scope.describe()}, not {asked}",
                verified_at=moment.replace(microsecond=0),
            )
        return replace(cached, verified_at=moment.replace(microsecond=0))


def _in_validity(verdict: Verdict, moment: dt.datetime) -> bool:
    """Whether ``moment`` lies within the validity of the certificate ``verdict`` is about."""
    return (
        verdict.not_before is not None
        and verdict.not_after is not None
        and verdict.not_before <= moment <= verdict.not_after
    )


def _best(verdicts: Sequence[SellerVerdict]) -> SellerVerdict:
    return min(verdicts, key=lambda verdict: _PREFERENCE[verdict.reason])


def _from_verdict(verdict: Verdict, marketplace: str = "", shop_id: str = "") -> SellerVerdict:
    a = verdict.authorization
    return SellerVerdict(
        reason=verdict.reason,
        detail=verdict.detail,
        marketplace=a.marketplace if a is not None else marketplace,
        shop_id=a.shop_id if a is not None else shop_id,
        serial_hex=serial_hex(verdict.serial_number) if verdict.serial_number else "",
        operator=verdict.operator or "",
        legal_name=a.legal_name if a is not None else "",
        credit_code=a.credit_code if a is not None else "",
        scope=a.scope if a is not None else None,
        not_before=verdict.not_before,
        not_after=verdict.not_after,
        revoked_at=verdict.revoked_at,
        revocation_reason=(
            reason_code(verdict.revocation_reason)
            if verdict.revocation_reason is not None
            else None
        ),
    )


@functools.lru_cache(maxsize=1024)
def _scope(card_types: str, provinces: str) -> Scope:
    return decode_scope(card_types, provinces)


class SellerChecks(SellerService):
    """Is this seller authorized now: certificates, shops, online sales; CRLs and OCSP."""

    def __init__(
        self,
        db: Database,
        config: RegistryConfig,
        keys: authorities.OperatorKeys | None = None,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(db, config, keys, clock)
        self._trust = TrustCache(db, clock, self.refresh_crls)
        self.watch = RegistryWatch(db)
        self._ocsp_lock = threading.Lock()
        self._ocsp: dict[str, tuple[tuple[int, ...], OcspResponder]] = {}
        self._root_lock = threading.Lock()
        self._root: CertificateAuthority | None = None

    # -- verification ----------------------------------------------------------------------

    def _verify(
        self,
        generation: int,
        certificate: bytes,
        card_type: CardType | None,
        province: str | None,
        moment: dt.datetime,
        *,
        may_write: bool = True,
    ) -> Verdict:
        try:
            return self._trust.verify(
                generation, certificate, card_type, province, moment, may_write=may_write
            )
        except RevocationUnavailableError as exc:
            raise Unavailable(str(exc), reason="REVOCATION_DATA_STALE") from exc

    def stored_verdict(self, generation: int, certificate: bytes, moment: dt.datetime) -> Verdict:
        """The cached verifier's verdict on a stored certificate at ``moment`` (no scope).

        For callers inside a write transaction (courier deliveries): never re-signs CRLs.
        """
        return self._verify(generation, certificate, None, None, moment, may_write=False)

    def verify_certificate(
        self, certificate: bytes, card_type: CardType | None, province: str | None
    ) -> SellerVerdict:
        """Verify a presented certificate (PEM or DER) against the registry's trust bundle."""
        moment = self._clock()
        generation = self.watch.fresh_generation()
        if generation is None:
            generation = self._db.run_tx(repo.generation, readonly=True)
        try:
            verdict = self._verify(generation, certificate, card_type, province, moment)
        except CertificateFormatError as exc:
            raise InvalidArgument([FieldViolation("certificate", str(exc))]) from exc
        return _from_verdict(verdict)

    def verify_shop(
        self,
        marketplace: str,
        shop_id: str,
        card_type: CardType | None,
        province: str | None,
        operator: str | None,
    ) -> SellerVerdict:
        """Verify a shop's current authorization(s); the best verdict answers for the shop."""
        refuse_nul(**{"shop.marketplace": marketplace, "shop.shop_id": shop_id})
        moment = self._clock()
        polled = self.watch.fresh_generation()
        stored_now = None if polled is None else self.watch.shop(polled, marketplace, shop_id)
        if polled is None or stored_now is None:
            # Every operator's certificates, filtered below, so one entry serves every filter.
            generation, stored_now = self._db.run_tx(
                lambda tx: repo.shop_certificates(tx, marketplace, shop_id), readonly=True
            )
            self.watch.remember(generation, marketplace, shop_id, stored_now)
        else:
            generation = polled
        found = [s for s in stored_now if operator is None or s.operator == operator]
        if not found:
            return SellerVerdict(
                Reason.UNKNOWN_STORE,
                f"no authorization is recorded for {marketplace}/{shop_id}",
                marketplace=marketplace,
                shop_id=shop_id,
            )
        verdicts = [
            _from_verdict(
                self._verify(generation, stored.certificate, card_type, province, moment),
                marketplace,
                shop_id,
            )
            for stored in found
        ]
        return _best(verdicts)

    def verify_shops(
        self,
        marketplace: str,
        shop_ids: Sequence[str],
        card_type: CardType | None,
        province: str | None,
        operator: str | None,
    ) -> list[SellerVerdict]:
        """Judge a batch of shops from the registry's records (the sweep; see ``judge``)."""
        refuse_nul(marketplace=marketplace, shop_ids=shop_ids)
        moment = self._clock().replace(microsecond=0)
        rows = self._db.run_tx(
            lambda tx: repo.sweep_rows(tx, marketplace, shop_ids, operator), readonly=True
        )
        by_shop: dict[str, list[SellerVerdict]] = {}
        for row in rows:
            scope = _scope(row.card_types, row.provinces)
            reason, detail = judge(
                RecordFacts(
                    serial_hex=row.serial_hex,
                    operator=row.operator,
                    scope=scope,
                    not_before=row.not_before,
                    not_after=row.not_after,
                    revoked_at=row.revoked_at,
                    revocation_reason=row.revocation_reason,
                    ca_not_before=row.ca_not_before,
                    ca_not_after=row.ca_not_after,
                    ca_revoked_at=row.ca_revoked_at,
                    ca_revocation_reason=row.ca_revocation_reason,
                ),
                card_type=card_type,
                province=province,
                moment=moment,
            )
            revoked = reason in (Reason.REVOKED, Reason.OPERATOR_REVOKED)
            by_shop.setdefault(row.shop_id, []).append(
                SellerVerdict(
                    reason=reason,
                    detail=detail,
                    marketplace=marketplace,
                    shop_id=row.shop_id,
                    serial_hex=row.serial_hex,
                    operator=row.operator,
                    not_after=row.not_after,
                    revoked_at=(
                        (row.revoked_at if reason is Reason.REVOKED else row.ca_revoked_at)
                        if revoked
                        else None
                    ),
                )
            )
        out = []
        for shop_id in shop_ids:
            found = by_shop.get(shop_id)
            out.append(
                _best(found)
                if found
                else SellerVerdict(
                    Reason.UNKNOWN_STORE,
                    "no authorization is recorded",
                    marketplace=marketplace,
                    shop_id=shop_id,
                )
            )
        return out

    def check_online_sale(self, tx: Tx, operator: str, serial: str, card_type: CardKind) -> str:
        """Refuse an online activation unless ``serial`` is a valid authorization of ``operator``.

        Runs inside the activation's transaction: one primary-key read, then the cached verifier
        (reloaded read-only if a revocation moved the generation).
        """
        value = parse_serial(serial)
        canonical = serial_hex(value) if value is not None else serial
        stored = repo.certificate_by_serial(tx, canonical) if value is not None else None
        metadata = {"serial": canonical, "operator": operator}
        if stored is None:
            raise FailedPrecondition(
                f"no store authorization {canonical} is recorded",
                reason=SELLER_NOT_AUTHORIZED,
                metadata={**metadata, "verdict": Reason.UNKNOWN_STORE.value},
            )
        kind = CardType.PERSONAL if card_type is CardKind.PERSONAL else CardType.INDUSTRY
        verdict = self._verify(
            stored.generation, stored.certificate, kind, None, self._clock(), may_write=False
        )
        if verdict.reason is not Reason.AUTHORIZED:
            raise FailedPrecondition(
                f"store authorization {canonical} does not authorize this sale: {verdict.detail}",
                reason=SELLER_NOT_AUTHORIZED,
                metadata={**metadata, "verdict": verdict.reason.value},
            )
        if verdict.operator != operator:
            raise FailedPrecondition(
                f"store authorization {canonical} was issued by {verdict.operator}'s CA, "
                f"not {operator}'s",
                reason=SELLER_NOT_AUTHORIZED,
                metadata={**metadata, "verdict": "FOREIGN_OPERATOR"},
            )
        return canonical

    # -- published revocation data ---------------------------------------------------------

    def _root_authority(self) -> CertificateAuthority | None:
        """The root CA with its key, when this process can open it (else None: root offline)."""
        key_dir = self._config.key_dir
        if key_dir is None or not key_dir.has_root() or key_dir.passphrase() is None:
            return None
        with self._root_lock:
            if self._root is None:
                try:
                    self._root = key_dir.load_root()
                except (PkiError, RegistryError, OSError) as exc:
                    log.warning(
                        "cannot open the root key; the root CRL is not refreshed here",
                        extra={"fields": {"error": type(exc).__name__}},
                    )
                    return None
            return self._root

    def refresh_crls(self) -> list[str]:
        """Re-sign every CRL older than the refresh age (the root's only if its key is here)."""
        if not self._keys.available:
            return []
        root = self._root_authority()
        now = self._clock()

        def work(conn: Connection) -> list[str]:
            return authorities.refresh_crls(conn, self._keys, root=root, now=now)

        done = write_mapped(self._db, work)
        if done:
            self.watch.changed()
            log.info("CRLs re-signed", extra={"fields": {"issuers": ",".join(done)}})
        return done

    def crl(self, issuer: str) -> bytes | None:
        """The DER CRL of ``root`` or an operator, re-signed first if it has aged; None if none."""
        stored = read_mapped(self._reads, lambda conn: authorities.stored_crls(conn, issuer))
        if not stored:
            return None
        if stored[0].this_update <= self._clock() - authorities.CRL_REFRESH_AFTER:
            self.refresh_crls()
            stored = read_mapped(self._reads, lambda conn: authorities.stored_crls(conn, issuer))
        return stored[0].der

    def ca_certificates_pem(self, issuer: str) -> bytes | None:
        """PEM certificates of every generation of ``issuer`` (root or operator), or None."""
        ders = read_mapped(self._reads, lambda conn: authorities.ca_certificates(conn, issuer))
        if not ders:
            return None
        pem = serialization.Encoding.PEM
        return b"".join(x509.load_der_x509_certificate(der).public_bytes(pem) for der in ders)

    def _responder(self, operator: str) -> OcspResponder | None:
        generations = read_mapped(
            self._reads, lambda conn: authorities.ca_generations(conn, operator)
        )
        if not generations:
            return None
        ids = tuple(ca.id for ca in generations)
        with self._ocsp_lock:
            cached = self._ocsp.get(operator)
            if cached is not None and cached[0] == ids:
                return cached[1]
        authorities_ = read_mapped(
            self._reads, lambda conn: authorities.operator_authorities(conn, operator, self._keys)
        )
        responder = OcspResponder(authorities_)
        with self._ocsp_lock:
            self._ocsp[operator] = (ids, responder)
        return responder

    def ocsp(self, operator: str, request_der: bytes) -> bytes | None:
        """The signed OCSP response for ``operator``'s CA; None for an unknown operator."""
        try:
            validate_operator_id(operator)
        except InvalidOperatorError:
            return None
        try:
            responder = self._responder(operator)
        except FailedPrecondition:
            # No passphrase here: RFC 6960 "tryLater" tells the client to ask again elsewhere.
            return unsuccessful_response(ocsp.OCSPResponseStatus.TRY_LATER)
        if responder is None:
            return None

        def lookup(serial: int) -> CertificateStatus:
            def work(conn: Connection) -> CertificateStatus:
                try:
                    record = workflow.get_authorization(conn, serial_hex(serial))
                except NotFoundError:
                    return CertificateStatus.unknown()
                if record.operator != operator:
                    return CertificateStatus.unknown()
                key_id = next(
                    ca.key_id
                    for ca in authorities.ca_generations(conn, operator)
                    if ca.id == record.ca_id
                )
                if record.revoked_at is not None:
                    return CertificateStatus.revoked(
                        record.revoked_at,
                        reason_from_code(record.revocation_reason or 0),
                        issuer_key_id=key_id,
                    )
                return CertificateStatus.good(issuer_key_id=key_id)

            return read_mapped(self._reads, work)

        return responder.answer(request_der, lookup, now=self._clock())


def sweep_limits(v: Violations, marketplace: str, shop_ids: Sequence[str]) -> None:
    """Record what is wrong with a sweep batch's marketplace and size."""
    if not marketplace:
        v.add("marketplace", "is required")
    if not shop_ids:
        v.add("shop_ids", "must list at least one shop")
    elif len(shop_ids) > MAX_SWEEP_BATCH:
        v.add("shop_ids", f"at most {MAX_SWEEP_BATCH} shops per batch")


def check_filters(
    v: Violations, province: str | None, operator: str | None
) -> tuple[str | None, str | None]:
    """Validate the optional province and operator filters of a verification."""
    return check_province(v, province), check_operator(v, operator)


ROOT_NAME: Final = ROOT_ISSUER
"""Name of the regulator root under /crl/ and /ca/."""
