"""SQL for cards, holdings, operators and idempotency records, run in the caller's transaction.

Hand-written SQL on the driver connection (see ``rawsql``); the tables are those of ``schema``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from registry.subscribers import DocumentType
from services.domain import audit
from services.domain.cards import (
    AgentSale,
    Card,
    CardState,
    CardType,
    IndustryBinding,
    LegacyRecord,
    OnlineSale,
    SalesChannel,
    ServiceStage,
)
from services.domain.errors import ErrorKind, QuotaExceeded, QuotaViolation, RealnameError
from services.storage import industry_repo
from services.storage.rawsql import Probe, Tx

_DEACTIVATED = CardState.DEACTIVATED.value
# Interpolated into queries below: a constant, never input, hence the S608 exemptions.
_CARD_COLUMNS = (
    "id, operator_id, msisdn, iccid, id_key, document_type, document_masked, card_type, state, "
    "channel, agent_id, store_authorization_serial, activated_at, deactivated_at, "
    "verified, service_stage, suspension, enterprise_id, scenario, bound_imei, import_id"
)


@dataclass(frozen=True)
class OperatorRow:
    """An operator's identity and cap."""

    id: str
    name: str
    kind: str
    card_limit: int


@dataclass(frozen=True)
class StoredRequest:
    """The recorded outcome of an earlier mutating request."""

    operation: str
    fingerprint: bytes
    card_id: int | None
    error: RealnameError | None


@dataclass(frozen=True)
class CardRow:
    """A card with the internal keys the domain needs to change it."""

    id: int
    id_key: bytes | None  # None: a legacy subscriber imported without a document
    card: Card

    @property
    def holds_slot(self) -> bool:
        """Whether the card occupies a slot in its holder's ``holdings`` row.

        Industry cards count under their enterprise's quota instead (``holds_enterprise_quota``).
        """
        return (
            self.id_key is not None
            and self.card.verified
            and self.card.card_type is CardType.PERSONAL
        )

    @property
    def holds_enterprise_quota(self) -> bool:
        """Whether the card counts under its enterprise's quota (``enterprises.active``)."""
        return self.card.card_type is CardType.INDUSTRY and self.card.industry is not None


def get_operator(tx: Tx, operator_id: str) -> OperatorRow | None:
    """Loads one operator, or None if unknown."""
    row = tx.one("SELECT id, name, kind, card_limit FROM operators WHERE id = ?", (operator_id,))
    return None if row is None else OperatorRow(row[0], row[1], row[2], int(row[3]))


def all_operators(tx: Tx) -> dict[str, OperatorRow]:
    """Every registered operator, by id."""
    rows = tx.all("SELECT id, name, kind, card_limit FROM operators")
    return {r[0]: OperatorRow(r[0], r[1], r[2], int(r[3])) for r in rows}


def all_segments(tx: Tx) -> dict[str, str]:
    """Every number-segment prefix and its operator."""
    return {str(p): str(o) for p, o in tx.all("SELECT prefix, operator_id FROM number_segments")}


def holding(
    tx: Tx, id_key: bytes, operator_id: str, probes: Sequence[Probe] = ()
) -> tuple[int, int, list[Any]] | None:
    """Returns (live cards, limit, the probes' values) of a document with an operator.

    None for an unknown operator. The probes are answered by the same statement.
    """
    extra = "".join(f", ({p.sql})" for p in probes)
    row = tx.one(
        f"SELECT o.card_limit, h.active{extra} FROM operators o "  # noqa: S608
        "LEFT JOIN holdings h ON h.operator_id = o.id AND h.id_key = ? WHERE o.id = ?",
        (*(param for p in probes for param in p.params), id_key, operator_id),
    )
    return None if row is None else (int(row[1] or 0), int(row[0]), list(row[2:]))


# One statement claims a slot: it creates the holding at 1 or raises it by one, but only while
# it is under the operator's limit. Row locks (PostgreSQL) or the write lock (SQLite) make the
# check and the increment atomic; under SERIALIZABLE a concurrent claim fails with 40001.
_CLAIM_SLOT = (
    "INSERT INTO holdings (id_key, operator_id, active) VALUES (?, ?, 1) "
    "ON CONFLICT (id_key, operator_id) DO UPDATE SET active = holdings.active + 1 "
    "WHERE holdings.active < (SELECT card_limit FROM operators WHERE id = ?) "
    "RETURNING active"
)


def claim_slot(tx: Tx, id_key: bytes, operator_id: str) -> int | None:
    """Takes one slot under the cap; returns the new count, or None when the cap is reached."""
    row = tx.one(_CLAIM_SLOT, (id_key, operator_id, operator_id))
    return None if row is None else int(row[0])


@dataclass(frozen=True)
class CommonActivation:
    """What the common-case activation's writes did, and the guards' probes' answers."""

    answers: list[Any]
    inserted: tuple[int, Card] | None
    claimed: bool
    recorded: bool

    @property
    def done(self) -> bool:
        """Whether the card, its slot and its idempotency record were all written."""
        return self.inserted is not None and self.claimed and self.recorded

    @property
    def only_the_cap(self) -> bool:
        """Whether the cap alone stood in the way: the number was free and the request new."""
        return self.inserted is not None and not self.claimed and self.recorded


_RECORD_ACTIVATION = (
    "INSERT INTO requests (operator_id, request_id, operation, fingerprint, card_id, "
    "error_kind, error_reason, error_message, error_metadata, created_at) "
    "VALUES (?, ?, 'activate', ?, {card}, NULL, NULL, NULL, NULL, ?) ON CONFLICT DO NOTHING"
)


def activate_common(
    tx: Tx,
    card: NewCard,
    *,
    probes: Sequence[Probe],
    request_id: str,
    fingerprint: bytes,
) -> CommonActivation:
    """Writes a personal card, claims its holder's slot and records the request, assuming the
    common case (free number, a slot under the cap, a new request id); reads the probes too.

    On PostgreSQL one statement does it all (data-modifying CTEs: one round trip, one plan
    prepared once, where four statements took four); the probes read the snapshot before the
    writes, as when they ran first. SQLite, in process, runs the statements one by one. Writes
    that did happen when another did not are the caller's to roll back (``done`` is False).
    """
    insert = card.statement(tx)
    operator_id, key, now = card.operator_id, card.id_key, tx.timestamp(card.now)
    if tx.sqlite:
        answers = tx.probe_all(probes)
        inserted = card.inserted(tx.one(insert.sql, insert.params))
        if inserted is None:
            return CommonActivation(answers, None, claimed=False, recorded=False)
        claimed = claim_slot(tx, key, operator_id) is not None
        recorded = tx.execute(
            _RECORD_ACTIVATION.format(card="?"),
            (operator_id, request_id, fingerprint, inserted[0], now),
        )
        return CommonActivation(answers, inserted, claimed=claimed, recorded=recorded == 1)
    columns = "".join(f", ({p.sql})" for p in probes)
    row = tx.one(
        f"WITH card AS ({insert.sql}), slot AS ({_CLAIM_SLOT}), "  # noqa: S608
        f"request AS ({_RECORD_ACTIVATION.format(card='(SELECT id FROM card)')} RETURNING 1) "
        f"SELECT (SELECT id FROM card), EXISTS (SELECT 1 FROM slot), "
        f"EXISTS (SELECT 1 FROM request){columns}",
        (
            *insert.params, key, operator_id, operator_id,
            operator_id, request_id, fingerprint, now,
            *(param for p in probes for param in p.params),
        ),
    )  # fmt: skip
    assert row is not None
    inserted = card.inserted(None if row[0] is None else (row[0],))
    return CommonActivation(list(row[3:]), inserted, bool(row[1]), bool(row[2]))


def release_slot(tx: Tx, id_key: bytes, operator_id: str) -> None:
    """Gives back one slot."""
    tx.execute(
        "UPDATE holdings SET active = active - 1 WHERE id_key = ? AND operator_id = ?",
        (id_key, operator_id),
    )


def release_count(tx: Tx, row: CardRow) -> None:
    """Gives back what a live card counts under: its holder's slot or its enterprise's quota."""
    if row.holds_slot:
        assert row.id_key is not None
        release_slot(tx, row.id_key, row.card.operator)
    elif row.holds_enterprise_quota:
        assert row.card.industry is not None
        industry_repo.release_quota(tx, row.card.operator, row.card.industry.enterprise_id)


def change_holder(
    tx: Tx,
    card_id: int,
    *,
    old_key: bytes,
    new_key: bytes,
    document_type: DocumentType,
    document_masked: str,
    now: dt.datetime,
) -> bool:
    """Moves an ACTIVE card from ``old_key`` to a new holder; False if it changed meanwhile.

    The card is the new holder's from ``now`` (``holder_since``): the minimum interval between a
    document's cards counts from it; ``activated_at`` stays the sale's time, which the agent's
    sales signals count.
    """
    changed = tx.execute(
        "UPDATE cards SET id_key = ?, document_type = ?, document_masked = ?, holder_since = ? "
        "WHERE id = ? AND id_key = ? AND state = ?",
        (
            new_key, document_type.value, document_masked, tx.timestamp(now), card_id, old_key,
            CardState.ACTIVE.value,
        ),
    )  # fmt: skip
    return changed == 1


def lift_suspension(tx: Tx, card_id: int, suspension: str) -> bool:
    """Returns a card SUSPENDED for ``suspension`` to ACTIVE; False if it is not suspended so."""
    changed = tx.execute(
        "UPDATE cards SET state = ?, suspension = NULL "
        "WHERE id = ? AND state = ? AND suspension = ?",
        (CardState.ACTIVE.value, card_id, CardState.SUSPENDED.value, suspension),
    )
    return changed == 1


def live_card_conflict(tx: Tx, msisdn: str, iccid: str) -> str | None:
    """Returns "msisdn" or "iccid" if a live card already holds it, else None."""
    row = tx.one(
        "SELECT msisdn FROM cards WHERE (msisdn = ? OR iccid = ?) AND state <> ? LIMIT 1",
        (msisdn, iccid, _DEACTIVATED),
    )
    if row is None:
        return None
    return "msisdn" if row[0] == msisdn else "iccid"


def insert_card(
    tx: Tx,
    *,
    operator_id: str,
    msisdn: str,
    iccid: str,
    id_key: bytes,
    document_type: DocumentType,
    document_masked: str,
    card_type: CardType,
    channel: SalesChannel,
    now: dt.datetime,
    industry: IndustryBinding | None = None,
) -> tuple[int, Card] | None:
    """Inserts a live card; returns its id and the card, or None if the MSISDN or ICCID is taken.

    An online sale starts PENDING_DELIVERY (live, unusable until delivered); others ACTIVE.
    """
    new = NewCard(
        operator_id, msisdn, iccid, id_key, document_type, document_masked, card_type, channel,
        now, industry,
    )  # fmt: skip
    statement = new.statement(tx)
    return new.inserted(tx.one(statement.sql, statement.params))


@dataclass(frozen=True)
class NewCard:
    """A card to insert: its INSERT statement, and the card it makes."""

    operator_id: str
    msisdn: str
    iccid: str
    id_key: bytes
    document_type: DocumentType
    document_masked: str
    card_type: CardType
    channel: SalesChannel
    now: dt.datetime
    industry: IndustryBinding | None = None

    @property
    def state(self) -> CardState:
        """An online sale starts PENDING_DELIVERY (live, unusable until delivered); others
        ACTIVE."""
        return (
            CardState.PENDING_DELIVERY if isinstance(self.channel, OnlineSale) else CardState.ACTIVE
        )

    def statement(self, tx: Tx) -> Probe:
        """The INSERT (nothing on a taken MSISDN or ICCID), returning the new card's id."""
        agent, serial, import_id = _channel_columns(self.channel)
        binding = self.industry
        enterprise, scenario, imei = (
            (binding.enterprise_id, binding.scenario, binding.imei)
            if binding
            else (None, None, None)
        )
        return Probe(
            "INSERT INTO cards (operator_id, msisdn, iccid, id_key, document_type, "
            "document_masked, card_type, state, channel, agent_id, store_authorization_serial, "
            "activated_at, enterprise_id, scenario, bound_imei, import_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING id",
            (
                self.operator_id, self.msisdn, self.iccid, self.id_key, self.document_type.value,
                self.document_masked, self.card_type.value, self.state.value,
                _channel_kind(self.channel), agent, serial, tx.timestamp(self.now), enterprise,
                scenario, imei, import_id,
            ),
        )  # fmt: skip

    def inserted(self, row: tuple[Any, ...] | None) -> tuple[int, Card] | None:
        """The id and card the statement's row says were inserted; None if nothing was."""
        if row is None:
            return None
        card = Card(
            self.msisdn, self.iccid, self.operator_id, self.card_type, self.state,
            self.document_type, self.document_masked, self.channel, self.now, None,
            industry=self.industry,
        )  # fmt: skip
        return int(row[0]), card


def _channel_kind(channel: SalesChannel) -> str:
    """The ``cards.channel`` value of a sales channel."""
    if isinstance(channel, AgentSale):
        return "agent"
    if isinstance(channel, OnlineSale):
        return "online"
    return "legacy"


def _channel_columns(channel: SalesChannel) -> tuple[str | None, str | None, str | None]:
    """(agent_id, store_authorization_serial, import_id) of a sales channel."""
    if isinstance(channel, AgentSale):
        return channel.agent_id, None, None
    if isinstance(channel, OnlineSale):
        return None, channel.store_authorization_serial, None
    return None, None, channel.import_id


def deactivate_card(
    tx: Tx, card_id: int, now: dt.datetime, holder_key: bytes | None = None
) -> bool:
    """Marks a live card deactivated; returns False if it was not live any more.

    With ``holder_key``, also False if the card changed holder since it was read (a concurrent
    TransferCard): the caller must re-read it to release the right holder's slot.
    """
    if holder_key is None:
        changed = tx.execute(
            "UPDATE cards SET state = ?, deactivated_at = ? WHERE id = ? AND state <> ?",
            (_DEACTIVATED, tx.timestamp(now), card_id, _DEACTIVATED),
        )
    else:
        changed = tx.execute(
            "UPDATE cards SET state = ?, deactivated_at = ? WHERE id = ? AND state <> ? "
            "AND id_key = ?",
            (_DEACTIVATED, tx.timestamp(now), card_id, _DEACTIVATED, holder_key),
        )
    return changed == 1


def _card(tx: Tx, row: tuple[Any, ...]) -> CardRow:
    (card_id, operator_id, msisdn, iccid, id_key, doc_type, masked, card_type, state,
     channel_kind, agent_id, serial, activated, deactivated, verified, stage, suspension,
     enterprise, scenario, imei, import_id) = row  # fmt: skip
    channel: SalesChannel
    if channel_kind == "agent":
        channel = AgentSale(agent_id or "")
    elif channel_kind == "online":
        channel = OnlineSale(serial or "")
    else:
        channel = LegacyRecord(import_id or "")
    activated_at = tx.parse_timestamp(activated)
    assert activated_at is not None
    card = Card(
        msisdn=msisdn,
        iccid=iccid,
        operator=operator_id,
        card_type=CardType(card_type),
        state=CardState(state),
        document_type=None if doc_type is None else DocumentType(doc_type),
        document_masked=masked or "",
        channel=channel,
        activated_at=activated_at,
        deactivated_at=tx.parse_timestamp(deactivated),
        verified=bool(verified),
        service_stage=ServiceStage[stage],
        suspension=suspension,
        industry=None if enterprise is None else IndustryBinding(enterprise, scenario or "", imei),
    )
    key = None if id_key is None else bytes(id_key)
    if key is not None:
        audit.note_subject(key)
    return CardRow(int(card_id), key, card)


def card_by_id(tx: Tx, card_id: int) -> Card:
    """Loads a card by row id (it must exist)."""
    row = tx.one(f"SELECT {_CARD_COLUMNS} FROM cards WHERE id = ?", (card_id,))  # noqa: S608
    assert row is not None, "a recorded card id always exists"
    return _card(tx, row).card


def live_card_of_operator(tx: Tx, operator_id: str, msisdn: str) -> CardRow | None:
    """Finds the operator's live card with this MSISDN."""
    row = tx.one(
        f"SELECT {_CARD_COLUMNS} FROM cards "  # noqa: S608
        "WHERE operator_id = ? AND msisdn = ? AND state <> ?",
        (operator_id, msisdn, _DEACTIVATED),
    )
    return None if row is None else _card(tx, row)


def latest_card_of_operator(tx: Tx, operator_id: str, msisdn: str) -> Card | None:
    """Finds the operator's card with this MSISDN: the live one, else the latest deactivated."""
    row = tx.one(
        f"SELECT {_CARD_COLUMNS} FROM cards WHERE operator_id = ? AND msisdn = ? "  # noqa: S608
        "ORDER BY CASE WHEN state = ? THEN 1 ELSE 0 END, id DESC LIMIT 1",
        (operator_id, msisdn, _DEACTIVATED),
    )
    return None if row is None else _card(tx, row).card


def cards_of_holder(tx: Tx, id_key: bytes, operator_id: str) -> list[Card]:
    """Lists an operator's cards (live and past) for one document pseudonym, oldest first."""
    rows = tx.all(
        f"SELECT {_CARD_COLUMNS} FROM cards "  # noqa: S608
        "WHERE id_key = ? AND operator_id = ? ORDER BY id",
        (id_key, operator_id),
    )
    return [_card(tx, r).card for r in rows]


def card_row_by_id(tx: Tx, card_id: int) -> CardRow | None:
    """Loads a card with its internal keys by row id, or None."""
    row = tx.one(f"SELECT {_CARD_COLUMNS} FROM cards WHERE id = ?", (card_id,))  # noqa: S608
    return None if row is None else _card(tx, row)


def cards_of_document(tx: Tx, id_key: bytes) -> list[CardRow]:
    """Every card (live and past) registered under a document pseudonym, with any operator."""
    rows = tx.all(
        f"SELECT {_CARD_COLUMNS} FROM cards WHERE id_key = ? ORDER BY id",  # noqa: S608
        (id_key,),
    )
    return [_card(tx, r) for r in rows]


def find_request(tx: Tx, operator_id: str, request_id: str) -> StoredRequest | None:
    """Loads the recorded outcome of a request id, if any."""
    row = tx.one(
        "SELECT operation, fingerprint, card_id, error_kind, error_reason, error_message, "
        "error_metadata FROM requests WHERE operator_id = ? AND request_id = ?",
        (operator_id, request_id),
    )
    if row is None:
        return None
    operation, fingerprint, card_id, kind, reason, message, meta = row
    error = None if kind is None else _error(kind, reason, message, meta)
    return StoredRequest(operation, bytes(fingerprint), card_id, error)


def record_request(
    tx: Tx,
    *,
    operator_id: str,
    request_id: str,
    operation: str,
    fingerprint: bytes,
    now: dt.datetime,
    card_id: int | None = None,
    error: RealnameError | None = None,
) -> bool:
    """Records a request's outcome; returns False if the request id is already recorded."""
    # DO NOTHING rather than an error: the transaction stays usable on both engines.
    inserted = tx.execute(
        "INSERT INTO requests (operator_id, request_id, operation, fingerprint, card_id, "
        "error_kind, error_reason, error_message, error_metadata, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            operator_id, request_id, operation, fingerprint, card_id,
            *_error_columns(error), tx.timestamp(now),
        ),
    )  # fmt: skip
    return inserted == 1


def _error_columns(error: RealnameError | None) -> tuple[str | None, ...]:
    """(error_kind, error_reason, error_message, error_metadata) of a recorded outcome."""
    if error is None:
        return None, None, None, None
    meta: dict[str, Any] = {"metadata": error.metadata}
    if isinstance(error, QuotaExceeded):
        meta["quota"] = [[v.subject, v.description] for v in error.violations]
    return error.kind.value, error.reason, error.message, json.dumps(meta, sort_keys=True)


def _error(kind: str, reason: str, message: str, meta_json: str | None) -> RealnameError:
    meta = json.loads(meta_json or "{}")
    if "quota" in meta:
        return QuotaExceeded(
            message,
            reason=reason,
            violations=[QuotaViolation(s, d) for s, d in meta["quota"]],
            metadata=meta.get("metadata"),
        )
    return RealnameError(
        message, reason=reason, metadata=meta.get("metadata"), kind=ErrorKind(kind)
    )
