"""SQL for courier deliveries: shipments, their cards, and the expiry of undelivered cards.

Hand-written SQL on the driver connection (see ``rawsql``), in the caller's transaction; the
tables are ``schema.shipments`` and ``schema.cards``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from services.domain import audit
from services.domain.cards import CardState, CardType
from services.storage import industry_repo, proofing_repo
from services.storage.rawsql import Tx

_PENDING = CardState.PENDING_DELIVERY.value
_ACTIVE = CardState.ACTIVE.value
_DEACTIVATED = CardState.DEACTIVATED.value


@dataclass(frozen=True, slots=True)
class ShipmentRow:
    """A shipment as stored, with its card's current state."""

    token_digest: bytes
    card_id: int
    operator_id: str
    courier: str
    order_id: str
    waybill: str
    mismatches: int
    locked: bool
    delivered_at: dt.datetime | None
    courier_staff_id: str | None
    card_state: CardState
    iccid: str
    msisdn: str


@dataclass(frozen=True, slots=True)
class ShipmentCard:
    """The live card a shipment token names."""

    id: int
    state: CardState
    msisdn: str


@dataclass(frozen=True, slots=True)
class PendingCard:
    """A card awaiting delivery, with what releasing its slot needs."""

    id: int
    id_key: bytes
    operator_id: str
    enterprise_id: str | None = None  # set for an industry card: it holds enterprise quota


def _note_holder(id_key: bytes | None) -> None:
    # A shipment is checked against its card's holder: an access to the holder's data.
    if id_key is not None:
        audit.note_subject(bytes(id_key))


def shipment(tx: Tx, token_digest: bytes) -> ShipmentRow | None:
    """Loads a shipment and its card's state by token digest."""
    row = tx.one(
        "SELECT s.token_digest, s.card_id, s.operator_id, s.courier, s.order_id, s.waybill, "
        "s.mismatches, s.locked, s.delivered_at, s.courier_staff_id, c.state, c.iccid, c.msisdn, "
        "c.id_key FROM shipments s JOIN cards c ON c.id = s.card_id WHERE s.token_digest = ?",
        (token_digest,),
    )
    if row is None:
        return None
    _note_holder(row[13])
    return ShipmentRow(
        token_digest=bytes(row[0]),
        card_id=int(row[1]),
        operator_id=str(row[2]),
        courier=str(row[3]),
        order_id=str(row[4]),
        waybill=str(row[5]),
        mismatches=int(row[6]),
        locked=bool(row[7]),
        delivered_at=tx.parse_timestamp(row[8]),
        courier_staff_id=row[9],
        card_state=CardState(row[10]),
        iccid=str(row[11]),
        msisdn=str(row[12]),
    )


def live_card_for_shipment(
    tx: Tx, operator_id: str, iccid: str, store_serial_hex: str
) -> ShipmentCard | None:
    """Finds the live online-sold card with this ICCID, operator and store authorization."""
    row = tx.one(
        "SELECT id, state, msisdn, id_key FROM cards WHERE iccid = ? AND operator_id = ? "
        "AND channel = 'online' AND store_authorization_serial = ? AND state <> ?",
        (iccid, operator_id, store_serial_hex, _DEACTIVATED),
    )
    if row is None:
        return None
    _note_holder(row[3])
    return ShipmentCard(int(row[0]), CardState(row[1]), str(row[2]))


def insert_shipment(
    tx: Tx,
    *,
    token_digest: bytes,
    card_id: int,
    operator_id: str,
    courier: str,
    order_id: str,
    waybill: str,
    now: dt.datetime,
) -> None:
    """Records a shipment at its first check (a concurrent first check wins harmlessly)."""
    tx.execute(
        "INSERT INTO shipments (token_digest, card_id, operator_id, courier, order_id, waybill, "
        "mismatches, locked, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?) "
        "ON CONFLICT DO NOTHING",
        (token_digest, card_id, operator_id, courier, order_id, waybill, tx.timestamp(now)),
    )


def count_mismatch(tx: Tx, token_digest: bytes, lock_after: int) -> bool:
    """Counts one failed recipient match; returns whether the shipment is now locked."""
    row = tx.one(
        "UPDATE shipments SET mismatches = mismatches + 1, "
        "locked = CASE WHEN mismatches + 1 >= ? THEN 1 ELSE locked END "
        "WHERE token_digest = ? RETURNING locked",
        (lock_after, token_digest),
    )
    return row is not None and bool(row[0])


def unlock(tx: Tx, token_digest: bytes) -> None:
    """Clears a shipment's mismatch count and lock."""
    tx.execute(
        "UPDATE shipments SET mismatches = 0, locked = 0 WHERE token_digest = ?", (token_digest,)
    )


def mark_delivered(
    tx: Tx,
    *,
    token_digest: bytes,
    delivered_at: dt.datetime,
    courier_staff_id: str,
    presented_commitment: bytes,
    token: bytes,
) -> bool:
    """Records the proof of delivery; returns False if the shipment was delivered already."""
    changed = tx.execute(
        "UPDATE shipments SET delivered_at = ?, courier_staff_id = ?, presented_commitment = ?, "
        "token = ? WHERE token_digest = ? AND delivered_at IS NULL",
        (tx.timestamp(delivered_at), courier_staff_id, presented_commitment, token, token_digest),
    )
    return changed == 1


def activate_pending_card(tx: Tx, card_id: int) -> bool:
    """Makes a PENDING_DELIVERY card ACTIVE; returns False if it was not pending.

    A card of a blocked document is suspended for REVERIFICATION instead
    (``proofing_repo.card_state_sql``).
    """
    assignments, params = proofing_repo.card_state_sql(_ACTIVE, None)
    changed = tx.execute(
        f"UPDATE cards SET {assignments} WHERE id = ? AND state = ?",  # noqa: S608
        (*params, card_id, _PENDING),
    )
    return changed == 1


def pending_cards_before(tx: Tx, cutoff: dt.datetime, limit: int) -> list[PendingCard]:
    """Cards still PENDING_DELIVERY that were sold before ``cutoff``, oldest first."""
    rows = tx.all(
        "SELECT id, id_key, operator_id, card_type, enterprise_id FROM cards "
        "WHERE state = ? AND activated_at < ? ORDER BY activated_at, id LIMIT ?",
        (_PENDING, tx.timestamp(cutoff), limit),
    )
    return [
        PendingCard(
            int(r[0]), bytes(r[1]), str(r[2]), r[4] if r[3] == CardType.INDUSTRY.value else None
        )
        for r in rows
    ]


def release_pending_card(tx: Tx, card: PendingCard, now: dt.datetime) -> bool:
    """Deactivates a still-pending card and frees its slot; False if it moved on meanwhile."""
    changed = tx.execute(
        "UPDATE cards SET state = ?, deactivated_at = ? WHERE id = ? AND state = ?",
        (_DEACTIVATED, tx.timestamp(now), card.id, _PENDING),
    )
    if changed != 1:
        return False
    if card.enterprise_id is not None:
        industry_repo.release_quota(tx, card.operator_id, card.enterprise_id)
        return True
    tx.execute(
        "UPDATE holdings SET active = active - 1 WHERE id_key = ? AND operator_id = ?",
        (card.id_key, card.operator_id),
    )
    return True


def certificate_logged(tx: Tx, certificate_sha256: bytes) -> bool:
    """Whether the log holds (sequenced or accepted for sequencing) an entry for a certificate."""
    row = tx.one(
        "SELECT 1 FROM log_entries WHERE certificate_sha256 = ? "
        "UNION ALL SELECT 1 FROM log_pending WHERE certificate_sha256 = ? LIMIT 1",
        (certificate_sha256, certificate_sha256),
    )
    return row is not None
