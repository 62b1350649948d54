"""SQL for cards, holdings, operators and idempotency records, run in the caller's transaction."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, and_, func, insert, or_, select, text, update

from services.domain.cards import AgentSale, Card, CardState, CardType, OnlineSale, SalesChannel
from services.domain.documents import DocumentType
from services.domain.errors import (
    ErrorKind,
    QuotaExceeded,
    QuotaViolation,
    RealnameError,
)
from services.storage.schema import cards, holdings, number_segments, operators, requests


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


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def get_operator(conn: Connection, operator_id: str) -> OperatorRow | None:
    """Loads one operator, or None if unknown."""
    row = conn.execute(select(operators).where(operators.c.id == operator_id)).first()
    if row is None:
        return None
    return OperatorRow(row.id, row.name, row.kind, row.card_limit)


def segment_owner(conn: Connection, msisdn: str) -> str | None:
    """Returns the operator owning the longest number-segment prefix of ``msisdn``."""
    prefixes = [msisdn[:n] for n in range(3, 8)]
    row = conn.execute(
        select(number_segments.c.operator_id)
        .where(number_segments.c.prefix.in_(prefixes))
        .order_by(func.length(number_segments.c.prefix).desc())
        .limit(1)
    ).first()
    return None if row is None else str(row.operator_id)


def active_count(conn: Connection, id_key: bytes, operator_id: str) -> int:
    """Returns how many live cards a document holds with an operator."""
    value = conn.execute(
        select(holdings.c.active).where(
            holdings.c.id_key == id_key, holdings.c.operator_id == operator_id
        )
    ).scalar()
    return int(value or 0)


# One statement claims a slot: it creates the holding at 1 or raises it by one, but only while
# it is under the operator's limit. Row locks (PostgreSQL) or the write lock (SQLite) make the
# check and the increment atomic; under SERIALIZABLE a concurrent claim fails with 40001.
_CLAIM_SLOT = text(
    """
    INSERT INTO holdings (id_key, operator_id, active) VALUES (:id_key, :operator_id, 1)
    ON CONFLICT (id_key, operator_id) DO UPDATE SET active = holdings.active + 1
    WHERE holdings.active < (SELECT card_limit FROM operators WHERE id = :operator_id)
    RETURNING active
    """
)


def claim_slot(conn: Connection, id_key: bytes, operator_id: str) -> int | None:
    """Takes one slot under the cap; returns the new count, or None when the cap is reached."""
    value = conn.execute(_CLAIM_SLOT, {"id_key": id_key, "operator_id": operator_id}).scalar()
    return None if value is None else int(value)


def release_slot(conn: Connection, id_key: bytes, operator_id: str) -> None:
    """Gives back one slot."""
    conn.execute(
        update(holdings)
        .where(holdings.c.id_key == id_key, holdings.c.operator_id == operator_id)
        .values(active=holdings.c.active - 1)
    )


def live_card_conflict(conn: Connection, msisdn: str, iccid: str) -> str | None:
    """Returns "msisdn" or "iccid" if a live card already holds it, else None."""
    row = conn.execute(
        select(cards.c.msisdn, cards.c.iccid)
        .where(
            or_(cards.c.msisdn == msisdn, cards.c.iccid == iccid),
            cards.c.state != CardState.DEACTIVATED.value,
        )
        .limit(1)
    ).first()
    if row is None:
        return None
    return "msisdn" if row.msisdn == msisdn else "iccid"


def insert_card(
    conn: Connection,
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
) -> int:
    """Inserts a live card and returns its row id."""
    values: dict[str, Any] = {
        "operator_id": operator_id,
        "msisdn": msisdn,
        "iccid": iccid,
        "id_key": id_key,
        "document_type": document_type.value,
        "document_masked": document_masked,
        "card_type": card_type.value,
        "state": CardState.ACTIVE.value,
        "activated_at": now,
    }
    if isinstance(channel, AgentSale):
        values.update(channel="agent", agent_id=channel.agent_id)
    else:
        values.update(
            channel="online", store_authorization_serial=channel.store_authorization_serial
        )
    return int(conn.execute(insert(cards).values(**values).returning(cards.c.id)).scalar_one())


def deactivate_card(conn: Connection, card_id: int, now: dt.datetime) -> bool:
    """Marks a live card deactivated; returns False if it was not live any more."""
    result = conn.execute(
        update(cards)
        .where(cards.c.id == card_id, cards.c.state != CardState.DEACTIVATED.value)
        .values(state=CardState.DEACTIVATED.value, deactivated_at=now)
    )
    return result.rowcount == 1


def _card_from_row(row: Row[Any]) -> Card:
    channel: SalesChannel
    if row.channel == "agent":
        channel = AgentSale(row.agent_id or "")
    else:
        channel = OnlineSale(row.store_authorization_serial or "")
    activated = _utc(row.activated_at)
    assert activated is not None
    return Card(
        msisdn=row.msisdn,
        iccid=row.iccid,
        operator=row.operator_id,
        card_type=CardType(row.card_type),
        state=CardState(row.state),
        document_type=DocumentType(row.document_type),
        document_masked=row.document_masked,
        channel=channel,
        activated_at=activated,
        deactivated_at=_utc(row.deactivated_at),
    )


@dataclass(frozen=True)
class CardRow:
    """A card with the internal keys the domain needs to change it."""

    id: int
    id_key: bytes
    card: Card


def card_by_id(conn: Connection, card_id: int) -> Card:
    """Loads a card by row id (it must exist)."""
    return _card_from_row(conn.execute(select(cards).where(cards.c.id == card_id)).one())


def live_card_of_operator(conn: Connection, operator_id: str, msisdn: str) -> CardRow | None:
    """Finds the operator's live card with this MSISDN."""
    row = conn.execute(
        select(cards).where(
            cards.c.operator_id == operator_id,
            cards.c.msisdn == msisdn,
            cards.c.state != CardState.DEACTIVATED.value,
        )
    ).first()
    return None if row is None else CardRow(row.id, row.id_key, _card_from_row(row))


def latest_card_of_operator(conn: Connection, operator_id: str, msisdn: str) -> Card | None:
    """Finds the operator's card with this MSISDN: the live one, else the latest deactivated."""
    row = conn.execute(
        select(cards)
        .where(cards.c.operator_id == operator_id, cards.c.msisdn == msisdn)
        .order_by((cards.c.state == CardState.DEACTIVATED.value).asc(), cards.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else _card_from_row(row)


def cards_of_holder(conn: Connection, id_key: bytes, operator_id: str) -> list[Card]:
    """Lists an operator's cards (live and past) for one document pseudonym, oldest first."""
    rows = conn.execute(
        select(cards)
        .where(and_(cards.c.id_key == id_key, cards.c.operator_id == operator_id))
        .order_by(cards.c.id)
    ).all()
    return [_card_from_row(r) for r in rows]


def find_request(conn: Connection, operator_id: str, request_id: str) -> StoredRequest | None:
    """Loads the recorded outcome of a request id, if any."""
    row = conn.execute(
        select(requests).where(
            requests.c.operator_id == operator_id, requests.c.request_id == request_id
        )
    ).first()
    if row is None:
        return None
    return StoredRequest(row.operation, bytes(row.fingerprint), row.card_id, _error_from_row(row))


def record_request(
    conn: Connection,
    *,
    operator_id: str,
    request_id: str,
    operation: str,
    fingerprint: bytes,
    now: dt.datetime,
    card_id: int | None = None,
    error: RealnameError | None = None,
) -> None:
    """Records a request's outcome; a concurrent duplicate fails on the primary key."""
    values: dict[str, Any] = {
        "operator_id": operator_id,
        "request_id": request_id,
        "operation": operation,
        "fingerprint": fingerprint,
        "card_id": card_id,
        "created_at": now,
    }
    if error is not None:
        meta: dict[str, Any] = {"metadata": error.metadata}
        if isinstance(error, QuotaExceeded):
            meta["quota"] = [[v.subject, v.description] for v in error.violations]
        values.update(
            error_kind=error.kind.value,
            error_reason=error.reason,
            error_message=error.message,
            error_metadata=json.dumps(meta, sort_keys=True),
        )
    conn.execute(insert(requests).values(**values))


def _error_from_row(row: Row[Any]) -> RealnameError | None:
    if row.error_kind is None:
        return None
    meta = json.loads(row.error_metadata or "{}")
    if "quota" in meta:
        return QuotaExceeded(
            row.error_message,
            reason=row.error_reason,
            violations=[QuotaViolation(s, d) for s, d in meta["quota"]],
            metadata=meta.get("metadata"),
        )
    return RealnameError(
        row.error_message,
        reason=row.error_reason,
        metadata=meta.get("metadata"),
        kind=ErrorKind(row.error_kind),
    )
