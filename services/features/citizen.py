"""The citizen's own lookup and disputes: every card under a document, and disowning one."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from registry.clock import Clock, utc_now
from registry.subscribers import mask_msisdn
from services.domain.cards import AgentSale, Card, CardState, Suspension
from services.domain.documents import Document
from services.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.domain.pseudonym import Pseudonymizer
from services.storage import cards_repo
from services.storage import disputes_repo as repo
from services.storage.database import Database, RetryTransaction
from services.storage.rawsql import Tx

CARD_NOT_FOUND = "CARD_NOT_FOUND"
CARD_NOT_LIVE = "CARD_NOT_LIVE"
DISPUTE_NOT_FOUND = "DISPUTE_NOT_FOUND"
DISPUTE_NOT_OPEN = "DISPUTE_NOT_OPEN"
# The agent-signal kind recorded against the selling agent of a disputed card.
DISPUTED_CARD_SIGNAL = "DISPUTED_CARD"
MAX_DISPUTES_LISTED = 500
# The note of a dispute closed because its operator deactivated the card (DeactivateCard).
CLOSED_BY_DEACTIVATION = "closed by DeactivateCard: the operator deactivated the card"
# A card reference: 16 bytes of MAC, URL-safe base64 without padding.
_CARD_REF = re.compile(r"[A-Za-z0-9_-]{22}")

# Records a signal against an agent in the caller's transaction:
# (tx, operator_id, agent_id, kind, detail).
AgentFlagger = Callable[[Tx, str, str, str, str], None]


class DisputeReason(Enum):
    """Why a holder disowns a card; values match the proto enum numbers."""

    NOT_MINE = 1
    NOT_NEEDED = 2


class Resolution(Enum):
    """How an operator settles a dispute; values match the proto enum numbers."""

    REVERIFIED = 1
    DEACTIVATED = 2


@dataclass(frozen=True)
class HolderCard:
    """A card as its holder sees it, with the reference a dispute names it by."""

    ref: str
    card: Card
    operator_name: str
    open_dispute_id: str | None


@dataclass(frozen=True)
class Dispute:
    """A dispute of a card, as its operator sees it (the citizen gets the masked number)."""

    id: str
    operator: str
    msisdn: str
    reason: DisputeReason
    open: bool
    resolution: Resolution | None
    agent_id: str | None
    note: str | None
    opened_at: dt.datetime
    resolved_at: dt.datetime | None

    @property
    def msisdn_masked(self) -> str:
        """The number masked, e.g. 138****1234."""
        return mask_msisdn(self.msisdn)


def _dispute(row: repo.DisputeRow) -> Dispute:
    return Dispute(
        id=str(row.id),
        operator=row.operator_id,
        msisdn=row.msisdn,
        reason=DisputeReason[row.reason],
        open=row.state == "OPEN",
        resolution=None if row.resolution is None else Resolution[row.resolution],
        agent_id=row.agent_id,
        note=row.note,
        opened_at=row.opened_at,
        resolved_at=row.resolved_at,
    )


def card_ref(key: bytes, id_key: bytes, card_id: int) -> str:
    """The opaque reference a holder names a card by: a MAC of the card under the holder's
    document, so it reveals no row id, cannot be guessed or counted, and names nothing under
    another document (a transferred card gets a new one)."""
    message = b"card-ref:v1:" + id_key + card_id.to_bytes(8, "big")
    mac = hmac.new(key, message, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def parse_ref(value: str, field: str) -> int:
    """A card or dispute reference as the row id it names; INVALID_ARGUMENT if malformed."""
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise InvalidArgument([FieldViolation(field, "must be a reference returned earlier")])
    return int(value)


def _live(state: CardState) -> bool:
    return state is not CardState.DEACTIVATED


class CitizenDesk:
    """Answers the citizen portal's lookups and runs the dispute lifecycle."""

    def __init__(
        self,
        db: Database,
        pseudonymizer: Pseudonymizer,
        clock: Clock = utc_now,
        flag_agent: AgentFlagger | None = None,
    ) -> None:
        self._db = db
        self._pseudo = pseudonymizer
        self._clock = clock
        self._flag_agent = flag_agent
        self._ref_key = pseudonymizer.derive_key("citizen-card-ref:v1")

    def today(self) -> dt.date:
        """The current date in China Standard Time, the calendar documents are issued in."""
        return (self._clock() + dt.timedelta(hours=8)).date()

    def set_agent_flagger(self, flag_agent: AgentFlagger) -> None:
        """Sets how a disputed card's selling agent is flagged (wired by the composition root)."""
        self._flag_agent = flag_agent

    def my_cards(self, document: Document) -> list[HolderCard]:
        """Every card registered under the document with any operator: live first, newest first."""
        key = self._pseudo.document_key(document)

        def work(tx: Tx) -> list[HolderCard]:
            rows = cards_repo.cards_of_document(tx, key)
            open_disputes = repo.open_disputes_of_cards(tx, [r.id for r in rows])
            operators = cards_repo.all_operators(tx)
            rows.sort(key=lambda r: (not _live(r.card.state), -r.id))
            return [
                HolderCard(
                    ref=card_ref(self._ref_key, key, r.id),
                    card=r.card,
                    operator_name=operators[r.card.operator].name,
                    open_dispute_id=(str(open_disputes[r.id]) if r.id in open_disputes else None),
                )
                for r in rows
            ]

        return self._db.run_tx(work, readonly=True)

    def dispute(self, document: Document, ref: str, reason: DisputeReason) -> Dispute:
        """Opens a dispute of a live card under the document; an open one is returned as is."""
        if not _CARD_REF.fullmatch(ref):
            raise InvalidArgument(
                [FieldViolation("card_ref", "must be a reference returned earlier")]
            )
        key = self._pseudo.document_key(document)

        def work(tx: Tx) -> Dispute:
            # The reference is matched among the document's own cards: another person's card, a
            # tampered or a made-up reference all answer like a missing card.
            row = next(
                (
                    r
                    for r in cards_repo.cards_of_document(tx, key)
                    if hmac.compare_digest(card_ref(self._ref_key, key, r.id), ref)
                ),
                None,
            )
            if row is None:
                raise NotFound(
                    "no card with this reference under the document", reason=CARD_NOT_FOUND
                )
            card_id = row.id
            existing = repo.open_dispute_of_card(tx, card_id)
            if existing is not None:
                return _dispute(existing)
            card = row.card
            if not _live(card.state):
                raise FailedPrecondition(
                    "the card is no longer active; there is nothing to dispute",
                    reason=CARD_NOT_LIVE,
                )
            agent = card.channel.agent_id if isinstance(card.channel, AgentSale) else None
            now = self._clock()
            dispute_id = repo.insert_dispute(
                tx,
                operator_id=card.operator,
                card_id=card_id,
                reason=reason.name,
                previous_state=card.state.value,
                previous_suspension=card.suspension,
                agent_id=agent,
                now=now,
            )
            if dispute_id is None or not repo.suspend_card(
                tx, card_id, card.state.value, card.suspension, Suspension.DISPUTED
            ):
                raise RetryTransaction(backoff=False)  # raced another change: read again
            if agent is not None and self._flag_agent is not None:
                self._flag_agent(tx, card.operator, agent, DISPUTED_CARD_SIGNAL, reason.name)
            return _dispute(repo.dispute_by_id(tx, dispute_id))

        return self._db.run_tx(work)

    def disputes(self, operator_id: str, open_only: bool | None, limit: int) -> list[Dispute]:
        """The operator's disputes, newest first (``open_only`` None lists all)."""
        state = None if open_only is None else ("OPEN" if open_only else "RESOLVED")
        limit = MAX_DISPUTES_LISTED if limit <= 0 else min(limit, MAX_DISPUTES_LISTED)

        def work(tx: Tx) -> list[Dispute]:
            return [_dispute(r) for r in repo.disputes_of_operator(tx, operator_id, state, limit)]

        return self._db.run_tx(work, readonly=True)

    def resolve(
        self, operator_id: str, dispute_ref: str, resolution: Resolution, note: str | None
    ) -> Dispute:
        """Settles an open dispute of the operator's card: reverified, or the card deactivated."""
        dispute_id = parse_ref(dispute_ref, "dispute_id")

        def work(tx: Tx) -> Dispute:
            found = repo.dispute_of_operator(tx, operator_id, dispute_id)
            if found is None:
                raise NotFound(
                    f"operator {operator_id} has no dispute {dispute_id}",
                    reason=DISPUTE_NOT_FOUND,
                )
            if found.state != "OPEN":
                raise FailedPrecondition(
                    "the dispute is already resolved",
                    reason=DISPUTE_NOT_OPEN,
                    metadata={"resolution": found.resolution or ""},
                )
            now = self._clock()
            if not repo.resolve_dispute(tx, dispute_id, resolution.name, note, now):
                raise RetryTransaction(backoff=False)
            if resolution is Resolution.REVERIFIED:
                # A no-op when the card moved on meanwhile (e.g. the operator deactivated it).
                repo.restore_card(
                    tx,
                    found.card_id,
                    Suspension.DISPUTED,
                    found.previous_state,
                    found.previous_suspension,
                )
            else:
                card = cards_repo.card_row_by_id(tx, found.card_id)
                assert card is not None
                if _live(card.card.state):
                    # With the holder read above: a transfer racing this must not free the wrong
                    # holder's slot (the retry reads the card again).
                    if not cards_repo.deactivate_card(tx, card.id, now, holder_key=card.id_key):
                        raise RetryTransaction(backoff=False)
                    cards_repo.release_count(tx, card)
            return _dispute(repo.dispute_by_id(tx, dispute_id))

        return self._db.run_tx(work)
