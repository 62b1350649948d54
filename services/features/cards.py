"""The verification service's rules: the per-operator cap, idempotency and number ownership."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from registry.clock import Clock, utc_now
from registry.subscribers import mask_msisdn
from services.domain.cards import (
    ActivateCard,
    AgentSale,
    Card,
    CardState,
    CardType,
    DeactivateCard,
    Eligibility,
    IndustryBinding,
    OnlineSale,
    SalesChannel,
    Suspension,
)
from services.domain.documents import Document
from services.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    QuotaViolation,
    RealnameError,
    Unavailable,
)
from services.domain.pseudonym import Pseudonymizer
from services.domain.ratelimit import RateLimiter
from services.features import industry
from services.features.citizen import CLOSED_BY_DEACTIVATION, Resolution
from services.features.guards import ActivationGuard, GuardAssumptionChanged, HolderCheck
from services.features.seller_checks import SELLER_NOT_AUTHORIZED, SellerCheck
from services.storage import cards_repo as repo
from services.storage import disputes_repo, industry_repo, proofing_repo
from services.storage.database import Database, RetryTransaction
from services.storage.rawsql import Probe, Tx
from services.storage.reference_cache import ReferenceCache

CARD_LIMIT_REACHED = "CARD_LIMIT_REACHED"
REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
# Times an activation re-runs its guards' outside checks when a policy changes under it.
GUARD_ROUNDS = 3
NUMBER_NOT_OPERATORS = "NUMBER_NOT_OPERATORS"
UNKNOWN_OPERATOR = "UNKNOWN_OPERATOR"

REGISTRATION_INCOMPLETE = "REGISTRATION_INCOMPLETE"
CARD_NOT_ACTIVE = "CARD_NOT_ACTIVE"
SAME_HOLDER = "SAME_HOLDER"
DOCUMENT_BLOCKED = "DOCUMENT_BLOCKED"
NOT_THE_HOLDER = "NOT_THE_HOLDER"
NOT_SUSPENDED_FOR_REVERIFICATION = "NOT_SUSPENDED_FOR_REVERIFICATION"
NOT_AN_INDUSTRY_CARD = "NOT_AN_INDUSTRY_CARD"
CARD_NOT_REBINDABLE = "CARD_NOT_REBINDABLE"


@dataclass(frozen=True)
class TransferCard:
    """A validated request to move a live personal card to a new holder."""

    request_id: str
    msisdn: str
    new_document: Document
    new_holder_name: str | None = None


@dataclass(frozen=True)
class ReverifyHolder:
    """A validated request to return a card suspended for re-verification to service."""

    request_id: str
    msisdn: str
    document: Document
    holder_name: str | None = None


@dataclass(frozen=True)
class RebindDevice:
    """A validated request to bind an industry card to another device."""

    request_id: str
    msisdn: str
    imei: str


TransferCheck = Callable[[str, TransferCard], None]
"""A rule run before a transfer's transaction (operator id, command); refuses by raising."""


class _Refusal(Exception):
    """Carries a refusal out of the deciding transaction, to be recorded after it."""

    def __init__(self, error: RealnameError) -> None:
        self.error = error


# Sentinel returned by the refusal-recording transaction when it recorded a new refusal.
_REFUSED = cast(Card, object())


def _refuse_untransferable(row: repo.CardRow) -> None:
    """Refuses (as a recorded outcome) a card that may not change holder."""
    card = row.card
    if card.card_type is CardType.INDUSTRY:
        raise _Refusal(
            FailedPrecondition(
                "industry cards are bound to their enterprise and may not be resold",
                reason=industry.RESALE_PROHIBITED,
            )
        )
    if row.id_key is None or not card.verified:
        raise _Refusal(
            FailedPrecondition(
                "the card's real-name registration is incomplete: the holder must complete "
                "registration before the card can be transferred",
                reason=REGISTRATION_INCOMPLETE,
            )
        )
    if card.state is not CardState.ACTIVE:
        raise _Refusal(
            FailedPrecondition(
                f"only an ACTIVE card can be transferred; this one is {card.state.value}",
                reason=CARD_NOT_ACTIVE,
                metadata={"state": card.state.value},
            )
        )


def _wrong_state(card: Card, rule: str, reason: str) -> _Refusal:
    """A recorded refusal of a card not in the state the operation needs (state in metadata)."""
    shown = card.state.value + (f" ({card.suspension})" if card.suspension else "")
    return _Refusal(
        FailedPrecondition(
            f"{rule}; this one is {shown}",
            reason=reason,
            metadata={"state": card.state.value, "suspension": card.suspension or ""},
        )
    )


def _refuse_blocked(tx: Tx, id_key: bytes, masked: str) -> None:
    """Refuses (as a recorded outcome) to put a card in service under a blocked document."""
    reason = proofing_repo.is_blocked(tx, id_key)
    if reason is not None:
        raise _Refusal(
            FailedPrecondition(
                f"document {masked} is blocked ({reason.lower()})",
                reason=DOCUMENT_BLOCKED,
                metadata={"status": reason},
            )
        )


class CardDesk:
    """Answers eligibility and records activations so the cap holds under any concurrency."""

    def __init__(
        self,
        db: Database,
        pseudonymizer: Pseudonymizer,
        clock: Clock = utc_now,
        sellers: SellerCheck | None = None,
        reference: ReferenceCache | None = None,
        *,
        guards: Sequence[ActivationGuard] = (),
        document_limiter: RateLimiter | None = None,
    ) -> None:
        self._db = db
        # Per (operator, document key): one operator's burst never throttles another's calls.
        self._document_limiter = document_limiter
        self._guards = list(guards)
        self._transfer_checks: list[TransferCheck] = []
        self._holder_checks: list[HolderCheck] = []
        self._pseudo = pseudonymizer
        self._clock = clock
        self._sellers = sellers
        self._reference = reference or ReferenceCache()

    def _seller_channel(
        self, tx: Tx, operator_id: str, channel: SalesChannel, card_type: CardType
    ) -> SalesChannel:
        """The sales channel as recorded: an online sale's serial checked and made canonical."""
        if not isinstance(channel, OnlineSale):
            return channel
        if self._sellers is None:
            raise FailedPrecondition(
                "online sales need the seller registry, which this service does not run",
                reason=SELLER_NOT_AUTHORIZED,
            )
        serial = self._sellers.check_online_sale(
            tx, operator_id, channel.store_authorization_serial, card_type
        )
        return OnlineSale(serial)

    def add_guard(self, guard: ActivationGuard) -> None:
        """Adds a rule every later activation must pass (wired by the composition root)."""
        self._guards.append(guard)

    def drop_guards(self) -> None:
        """Removes every guard: only to measure their cost (REALNAME_LAYERS_OFF=guards)."""
        self._guards.clear()

    def today(self) -> dt.date:
        """The current date in China Standard Time, the calendar documents are issued in."""
        return (self._clock() + dt.timedelta(hours=8)).date()

    @staticmethod
    def _unknown_operator(operator_id: str) -> PermissionDenied:
        return PermissionDenied(
            "the calling operator is not registered with this service",
            reason=UNKNOWN_OPERATOR,
            metadata={"operator": operator_id},
        )

    def _operator(self, tx: Tx, operator_id: str) -> repo.OperatorRow:
        op = repo.get_operator(tx, operator_id)
        if op is None:
            raise self._unknown_operator(operator_id)
        return op

    def check_eligibility(
        self,
        operator_id: str,
        document: Document,
        card_type: CardType,
        binding: IndustryBinding | None = None,
    ) -> Eligibility:
        """Tells whether the document can get another card of this type from the operator.

        For an industry card the answer is about the enterprise's quota (``binding``).
        """
        key = self._pseudo.document_key(document)
        if self._document_limiter is not None:
            self._document_limiter.check((operator_id, key))

        probes = [list(guard.eligibility_probes(operator_id, document)) for guard in self._guards]
        every_probe = [p for wanted in probes for p in wanted]

        def work(tx: Tx) -> Eligibility:
            answer: Eligibility | None
            if card_type is CardType.INDUSTRY:
                assert binding is not None, "validation requires a binding for industry cards"
                answer = industry.eligibility(tx, operator_id, binding, key)
                if answer is None:
                    raise self._unknown_operator(operator_id)
                answers = tx.probe_all(every_probe)
            else:
                # The guards' reads ride on the count's statement: one round trip, as before.
                found = repo.holding(tx, key, operator_id, every_probe)
                if found is None:
                    raise self._unknown_operator(operator_id)
                active, limit, answers = found
                reason = "" if active < limit else CARD_LIMIT_REACHED
                answer = Eligibility(active < limit, active, limit, reason)
            # The guards' rules come first, as in an activation, which runs them before the cap.
            for guard, wanted in zip(self._guards, probes, strict=True):
                refusal = guard.eligibility(operator_id, document, answers[: len(wanted)])
                answers = answers[len(wanted) :]
                if refusal is not None:
                    return Eligibility(False, answer.active_cards, answer.limit, refusal.reason)
            return answer

        return self._db.run_tx(work, readonly=True)

    def activate(self, operator_id: str, cmd: ActivateCard) -> Card:
        """Activates a card within the cap; a retried request id returns the first outcome."""
        key = self._pseudo.document_key(cmd.document)
        if self._document_limiter is not None:
            self._document_limiter.check((operator_id, key))
        if isinstance(cmd.channel, AgentSale):
            channel = f"agent:{cmd.channel.agent_id}"
        elif isinstance(cmd.channel, OnlineSale):
            channel = f"online:{cmd.channel.store_authorization_serial}"
        else:
            channel = f"legacy:{cmd.channel.import_id}"
        binding = cmd.industry
        fingerprint = self._pseudo.fingerprint(
            "activate",
            str(cmd.document.type.value),
            cmd.document.number,
            cmd.msisdn,
            cmd.iccid,
            str(cmd.card_type.value),
            channel,
            *(
                ()
                if binding is None
                else (binding.enterprise_id, binding.scenario, binding.imei or "")
            ),
        )

        # Set per round below: what each guard reads in the transaction.
        probes: list[list[Probe]] = []
        every_probe: list[Probe] = []

        # The first attempt assumes the common case (a new request, free number, a free slot)
        # and writes in one statement; any surprise switches to the careful path, which reads
        # the idempotency record and the live cards first and tells the caller exactly why.
        careful = False

        def common_case(
            tx: Tx, new_card: repo.NewCard, now: dt.datetime, op: repo.OperatorRow
        ) -> Card:
            """A personal card's activation assuming every check passes: one statement writes
            it (``activate_common``); any surprise rolls it back and sends the request down the
            careful path, which runs the steps one at a time and says exactly why."""
            nonlocal careful
            written = repo.activate_common(
                tx, new_card, probes=every_probe, request_id=cmd.request_id,
                fingerprint=fingerprint,
            )  # fmt: skip
            try:
                self._check_guards(
                    tx, operator_id, cmd, now, probes=probes, answers=written.answers
                )
            except RealnameError:
                # Only the careful path has read the idempotency record a retry must replay.
                careful = True
                raise RetryTransaction(backoff=False) from None
            if written.only_the_cap:
                # The careful path would read no earlier outcome (the request was new), find
                # the number free and the guards content, and refuse for the cap: refuse now.
                raise _Refusal(self._cap_refusal(operator_id, cmd.document, op))
            if not written.done:
                careful = True
                raise RetryTransaction(backoff=False)
            assert written.inserted is not None
            card_id, card = written.inserted
            for guard in self._guards:
                guard.activated(tx, operator_id, card_id, cmd, now)
            return card

        def work(tx: Tx) -> Card:
            nonlocal careful
            now = self._clock()
            if careful:
                stored = self._replay(tx, operator_id, cmd.request_id, "activate", fingerprint)
                if stored is not None:
                    return stored
            op = self._reference.operator(tx, operator_id)
            if op is None:
                raise self._unknown_operator(operator_id)
            if self._reference.segment_owner(tx, cmd.msisdn) != operator_id:
                # Not recorded: it is the caller's mistake, not a state of the world.
                raise PermissionDenied(
                    f"number {mask_msisdn(cmd.msisdn)} is not in a segment of the calling operator",
                    reason=NUMBER_NOT_OPERATORS,
                    metadata={"operator": operator_id},
                )
            try:
                channel = self._seller_channel(tx, operator_id, cmd.channel, cmd.card_type)
            except FailedPrecondition:
                # A retried request must replay its first outcome even if the authorization
                # was revoked since; only the careful path reads the idempotency record.
                if not careful:
                    careful = True
                    raise RetryTransaction(backoff=False) from None
                raise
            new_card = repo.NewCard(
                operator_id, cmd.msisdn, cmd.iccid, key, cmd.document.type,
                cmd.document.masked(), cmd.card_type, channel, now, cmd.industry,
            )  # fmt: skip
            if not careful and cmd.card_type is CardType.PERSONAL:
                return common_case(tx, new_card, now, op)
            try:
                answers = tx.probe_all(every_probe)
                self._check_guards(tx, operator_id, cmd, now, probes=probes, answers=answers)
            except RealnameError as refused:
                # Only the careful path has read the idempotency record a retry must replay.
                if not careful:
                    careful = True
                    raise RetryTransaction(backoff=False) from None
                raise _Refusal(refused) from None
            if careful:
                taken = repo.live_card_conflict(tx, cmd.msisdn, cmd.iccid)
                if taken is not None:
                    raise _Refusal(
                        AlreadyExists(
                            f"the {taken.upper()} is already held by a live card",
                            reason=f"{taken.upper()}_IN_USE",
                        )
                    )
            statement = new_card.statement(tx)
            inserted = new_card.inserted(tx.one(statement.sql, statement.params))
            if inserted is None:
                careful = True
                raise RetryTransaction(backoff=False)
            if cmd.card_type is CardType.INDUSTRY:
                # Industry cards count under the enterprise's quota, not the person's cap.
                assert cmd.industry is not None, "validation requires a binding"
                if not industry.claim_card(tx, operator_id, cmd.industry, key):
                    if not careful:
                        careful = True
                        raise RetryTransaction(backoff=False)
                    raise _Refusal(industry.activation_refusal(tx, operator_id, cmd.industry, key))
            elif repo.claim_slot(tx, key, operator_id) is None:
                if not careful:
                    careful = True
                    raise RetryTransaction(backoff=False)
                raise _Refusal(self._cap_refusal(operator_id, cmd.document, op))
            card_id, card = inserted
            recorded = repo.record_request(
                tx,
                operator_id=operator_id,
                request_id=cmd.request_id,
                operation="activate",
                fingerprint=fingerprint,
                now=now,
                card_id=card_id,
            )
            if not recorded:
                careful = True
                raise RetryTransaction(backoff=False)
            for guard in self._guards:
                guard.activated(tx, operator_id, card_id, cmd, now)
            return card

        for _round in range(GUARD_ROUNDS):
            for guard in self._guards:
                guard.before(operator_id, cmd)
            probes = [list(guard.probes(operator_id, cmd)) for guard in self._guards]
            every_probe = [p for wanted in probes for p in wanted]
            try:
                return self._decide(work, operator_id, cmd.request_id, "activate", fingerprint)
            except GuardAssumptionChanged:
                continue  # a guard's policy changed meanwhile: its checks run again
        raise Unavailable(
            "the activation rules kept changing during this request; retry",
            reason="TRANSACTION_CONFLICT",
        )

    @staticmethod
    def _cap_refusal(operator_id: str, document: Document, op: repo.OperatorRow) -> QuotaExceeded:
        """The refusal of a card for a document already at the operator's cap (a new card or
        a transfer's new holder)."""
        return QuotaExceeded(
            f"document {document.masked()} already holds {op.card_limit} live "
            f"cards with operator {operator_id}",
            reason=CARD_LIMIT_REACHED,
            violations=[
                QuotaViolation(
                    f"document:{document.type.name}/operator:{operator_id}",
                    f"at most {op.card_limit} live cards per document per operator",
                )
            ],
            metadata={"operator": operator_id, "limit": str(op.card_limit)},
        )

    def _check_guards(
        self,
        tx: Tx,
        operator_id: str,
        cmd: ActivateCard,
        now: dt.datetime,
        *,
        probes: Sequence[Sequence[Probe]],
        answers: Sequence[Any],
    ) -> None:
        """Runs every guard's ``check`` on its share of the probes' answers; refuses by raising."""
        for guard, wanted in zip(self._guards, probes, strict=True):
            guard.check(tx, operator_id, cmd, now, answers[: len(wanted)])
            answers = answers[len(wanted) :]

    def deactivate(self, operator_id: str, cmd: DeactivateCard) -> Card:
        """Deactivates the operator's live card with this MSISDN and frees its slot."""
        fingerprint = self._pseudo.fingerprint("deactivate", cmd.msisdn)

        def work(tx: Tx) -> Card:
            now = self._clock()
            stored = self._replay(tx, operator_id, cmd.request_id, "deactivate", fingerprint)
            if stored is not None:
                return stored
            self._operator(tx, operator_id)
            row = repo.live_card_of_operator(tx, operator_id, cmd.msisdn)
            if row is None:
                raise _Refusal(
                    NotFound(
                        f"operator {operator_id} has no live card {mask_msisdn(cmd.msisdn)}",
                        reason="CARD_NOT_FOUND",
                    )
                )
            if not repo.deactivate_card(tx, row.id, now, row.id_key):
                raise RetryTransaction
            repo.release_count(tx, row)
            # A dispute of the card has nothing left to decide: the card is gone, as the
            # DEACTIVATED resolution would have made it.
            disputes_repo.close_open_disputes_of_card(
                tx, row.id, Resolution.DEACTIVATED.name, CLOSED_BY_DEACTIVATION, now
            )
            if not repo.record_request(
                tx,
                operator_id=operator_id,
                request_id=cmd.request_id,
                operation="deactivate",
                fingerprint=fingerprint,
                now=now,
                card_id=row.id,
            ):
                raise RetryTransaction  # a concurrent duplicate won: replay its outcome
            return repo.card_by_id(tx, row.id)

        return self._decide(work, operator_id, cmd.request_id, "deactivate", fingerprint)

    def add_transfer_check(self, check: TransferCheck) -> None:
        """Adds a rule run before every transfer, outside the transaction.

        The place for the new holder's identity check (proofing); a RealnameError it raises is
        returned to the caller as is (not recorded under the request id).
        """
        self._transfer_checks.append(check)

    def transfer(self, operator_id: str, cmd: TransferCard) -> Card:
        """Moves a live, verified personal card to a new holder within the new holder's cap.

        One transaction claims the new holder's slot (the cap re-checked by the same statement
        as an activation), frees the old holder's and rewrites the card's holder columns.
        Idempotent by request id; refusals are recorded and replayed like activations'.
        """
        key = self._pseudo.document_key(cmd.new_document)
        if self._document_limiter is not None:
            self._document_limiter.check((operator_id, key))
        fingerprint = self._pseudo.fingerprint(
            "transfer", cmd.msisdn, str(cmd.new_document.type.value), cmd.new_document.number
        )
        for check in self._transfer_checks:
            check(operator_id, cmd)

        def work(tx: Tx) -> Card:
            now = self._clock()
            stored = self._replay(tx, operator_id, cmd.request_id, "transfer", fingerprint)
            if stored is not None:
                return stored
            op = self._operator(tx, operator_id)
            row = repo.live_card_of_operator(tx, operator_id, cmd.msisdn)
            if row is None:
                raise _Refusal(
                    NotFound(
                        f"operator {operator_id} has no live card {mask_msisdn(cmd.msisdn)}",
                        reason="CARD_NOT_FOUND",
                    )
                )
            _refuse_untransferable(row)
            assert row.id_key is not None
            if row.id_key == key:
                raise _Refusal(
                    FailedPrecondition(
                        "the card is already registered under this document", reason=SAME_HOLDER
                    )
                )
            # The screen ran before the transaction; a block landing since is met here.
            _refuse_blocked(tx, key, cmd.new_document.masked())
            try:
                # The activation rules about the holder (the minimum interval) hold for them too.
                for guard in self._guards:
                    guard.new_holder(tx, operator_id, cmd.new_document, now)
            except RealnameError as refused:
                raise _Refusal(refused) from None
            if repo.claim_slot(tx, key, operator_id) is None:
                raise _Refusal(self._cap_refusal(operator_id, cmd.new_document, op))
            repo.release_slot(tx, row.id_key, operator_id)
            if not repo.change_holder(
                tx,
                row.id,
                old_key=row.id_key,
                new_key=key,
                document_type=cmd.new_document.type,
                document_masked=cmd.new_document.masked(),
                now=now,
            ):
                raise RetryTransaction
            if not repo.record_request(
                tx,
                operator_id=operator_id,
                request_id=cmd.request_id,
                operation="transfer",
                fingerprint=fingerprint,
                now=now,
                card_id=row.id,
            ):
                raise RetryTransaction  # a concurrent duplicate won: replay its outcome
            return repo.card_by_id(tx, row.id)

        return self._decide(work, operator_id, cmd.request_id, "transfer", fingerprint)

    def add_holder_check(self, check: HolderCheck) -> None:
        """Adds a check of the holder run before ReverifyHolder's transaction.

        Proofing wires its screen (blocklist, then the identity authority when the operator's
        policy checks identities); a RealnameError it raises is returned as is (not recorded).
        """
        self._holder_checks.append(check)

    def reverify(self, operator_id: str, cmd: ReverifyHolder) -> Card:
        """Returns a card suspended for re-verification to ACTIVE once its holder passes again.

        The holder checks run first; the transaction then requires the card's own document, the
        REVERIFICATION suspension and a document no longer blocked, read with the card so an
        unblock racing a block cannot put the card back in service. Idempotent by request id;
        refusals in the transaction are recorded and replayed like a transfer's.
        """
        key = self._pseudo.document_key(cmd.document)
        if self._document_limiter is not None:
            self._document_limiter.check((operator_id, key))
        fingerprint = self._pseudo.fingerprint(
            "reverify", cmd.msisdn, str(cmd.document.type.value), cmd.document.number
        )
        for check in self._holder_checks:
            check(operator_id, cmd.document, cmd.holder_name)

        def work(tx: Tx) -> Card:
            now = self._clock()
            stored = self._replay(tx, operator_id, cmd.request_id, "reverify", fingerprint)
            if stored is not None:
                return stored
            self._operator(tx, operator_id)
            row = self._live_card(tx, operator_id, cmd.msisdn)
            if row.id_key != key:
                raise _Refusal(
                    FailedPrecondition(
                        f"card {mask_msisdn(cmd.msisdn)} is not registered under document "
                        f"{cmd.document.masked()}",
                        reason=NOT_THE_HOLDER,
                    )
                )
            card = row.card
            if (
                card.state is not CardState.SUSPENDED
                or card.suspension != Suspension.REVERIFICATION
            ):
                raise _wrong_state(
                    card,
                    "only a card suspended for re-verification can be re-verified",
                    NOT_SUSPENDED_FOR_REVERIFICATION,
                )
            _refuse_blocked(tx, key, cmd.document.masked())
            if not repo.lift_suspension(tx, row.id, Suspension.REVERIFICATION):
                raise RetryTransaction
            if not repo.record_request(
                tx,
                operator_id=operator_id,
                request_id=cmd.request_id,
                operation="reverify",
                fingerprint=fingerprint,
                now=now,
                card_id=row.id,
            ):
                raise RetryTransaction  # a concurrent duplicate won: replay its outcome
            return repo.card_by_id(tx, row.id)

        return self._decide(work, operator_id, cmd.request_id, "reverify", fingerprint)

    def rebind_device(self, operator_id: str, cmd: RebindDevice) -> Card:
        """Binds a live industry card to another device, lifting a DEVICE_MISMATCH suspension.

        Idempotent by request id; refusals are recorded and replayed.
        """
        fingerprint = self._pseudo.fingerprint("rebind", cmd.msisdn, cmd.imei)

        def work(tx: Tx) -> Card:
            now = self._clock()
            stored = self._replay(tx, operator_id, cmd.request_id, "rebind", fingerprint)
            if stored is not None:
                return stored
            self._operator(tx, operator_id)
            row = self._live_card(tx, operator_id, cmd.msisdn)
            card = row.card
            if card.card_type is not CardType.INDUSTRY:
                raise _Refusal(
                    FailedPrecondition(
                        f"card {mask_msisdn(cmd.msisdn)} is not an industry card: only industry "
                        "cards are bound to a device",
                        reason=NOT_AN_INDUSTRY_CARD,
                    )
                )
            mismatch = (
                card.state is CardState.SUSPENDED and card.suspension == Suspension.DEVICE_MISMATCH
            )
            if card.state is not CardState.ACTIVE and not mismatch:
                raise _wrong_state(
                    card,
                    "only an ACTIVE card or one suspended for DEVICE_MISMATCH can be bound to "
                    "another device",
                    CARD_NOT_REBINDABLE,
                )
            if mismatch and row.id_key is not None:
                # Lifting the suspension puts the card in service: never under a blocked document.
                _refuse_blocked(tx, row.id_key, card.document_masked)
            if not industry_repo.rebind_device(tx, row.id, cmd.imei, lift=mismatch):
                raise RetryTransaction
            if not repo.record_request(
                tx,
                operator_id=operator_id,
                request_id=cmd.request_id,
                operation="rebind",
                fingerprint=fingerprint,
                now=now,
                card_id=row.id,
            ):
                raise RetryTransaction  # a concurrent duplicate won: replay its outcome
            return repo.card_by_id(tx, row.id)

        return self._decide(work, operator_id, cmd.request_id, "rebind", fingerprint)

    @staticmethod
    def _live_card(tx: Tx, operator_id: str, msisdn: str) -> repo.CardRow:
        """The operator's live card with this number; a recorded NOT_FOUND refusal if none."""
        row = repo.live_card_of_operator(tx, operator_id, msisdn)
        if row is None:
            raise _Refusal(
                NotFound(
                    f"operator {operator_id} has no live card {mask_msisdn(msisdn)}",
                    reason="CARD_NOT_FOUND",
                )
            )
        return row

    def get_card(self, operator_id: str, msisdn: str) -> Card:
        """Returns the operator's card with this MSISDN (live, else most recent)."""

        def work(tx: Tx) -> Card:
            self._operator(tx, operator_id)
            card = repo.latest_card_of_operator(tx, operator_id, msisdn)
            if card is None:
                raise NotFound(
                    f"operator {operator_id} has no card {mask_msisdn(msisdn)}",
                    reason="CARD_NOT_FOUND",
                )
            return card

        return self._db.run_tx(work, readonly=True)

    def list_cards(self, operator_id: str, document: Document) -> list[Card]:
        """Lists the operator's cards, live and past, for a document."""
        key = self._pseudo.document_key(document)
        if self._document_limiter is not None:
            self._document_limiter.check((operator_id, key))

        def work(tx: Tx) -> list[Card]:
            self._operator(tx, operator_id)
            return repo.cards_of_holder(tx, key, operator_id)

        return self._db.run_tx(work, readonly=True)

    def _replay(
        self,
        tx: Tx,
        operator_id: str,
        request_id: str,
        operation: str,
        fingerprint: bytes,
    ) -> Card | None:
        stored = repo.find_request(tx, operator_id, request_id)
        if stored is None:
            return None
        if stored.operation != operation or stored.fingerprint != fingerprint:
            raise FailedPrecondition(
                "this request_id was already used for a different request",
                reason=REQUEST_ID_REUSED,
                metadata={"request_id": request_id},
            )
        if stored.error is not None:
            raise stored.error
        assert stored.card_id is not None
        return repo.card_by_id(tx, stored.card_id)

    def _decide(
        self,
        work: Callable[[Tx], Card],
        operator_id: str,
        request_id: str,
        operation: str,
        fingerprint: bytes,
    ) -> Card:
        """Runs a mutating unit of work; a refusal is recorded afterwards, in its own transaction.

        Recording refusals apart keeps the deciding transaction free of writes when it refuses,
        so under SERIALIZABLE a burst of refused requests for one document does not abort itself
        on false read/write conflicts. A duplicate request id racing with the refusal finds the
        first outcome and replays it.
        """
        try:
            return self._db.run_tx(work)
        except _Refusal as refusal:
            error = refusal.error

        def record(tx: Tx) -> Card:
            # Recorded first, read only when the request id is taken: a new refusal (the usual
            # case, e.g. every call past the cap on a hot document) costs one statement.
            if repo.record_request(
                tx,
                operator_id=operator_id,
                request_id=request_id,
                operation=operation,
                fingerprint=fingerprint,
                now=self._clock(),
                error=error,
            ):
                return _REFUSED
            stored = self._replay(tx, operator_id, request_id, operation, fingerprint)
            if stored is None:
                raise RetryTransaction(backoff=False)  # the record that was there is gone
            return stored

        outcome = self._db.run_tx(record)
        if outcome is _REFUSED:
            raise error
        return outcome
