"""SQL for citizen disputes, run in the caller's transaction (tables in ``disputes_schema``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from services.domain import audit
from services.domain.cards import Suspension
from services.storage import proofing_repo
from services.storage.rawsql import Tx

_OPEN = "OPEN"
_RESOLVED = "RESOLVED"
_COLUMNS = (
    "d.id, d.operator_id, d.card_id, d.reason, d.state, d.resolution, d.previous_state, "
    "d.previous_suspension, d.agent_id, d.note, d.opened_at, d.resolved_at, c.msisdn, c.id_key"
)


@dataclass(frozen=True)
class DisputeRow:
    """A dispute as stored, with its card's number."""

    id: int
    operator_id: str
    card_id: int
    reason: str
    state: str
    resolution: str | None
    previous_state: str
    previous_suspension: str | None
    agent_id: str | None
    note: str | None
    opened_at: dt.datetime
    resolved_at: dt.datetime | None
    msisdn: str


def _dispute(tx: Tx, row: tuple[Any, ...]) -> DisputeRow:
    opened = tx.parse_timestamp(row[10])
    assert opened is not None
    if row[13] is not None:  # a dispute shows its card's number: an access to the holder's data
        audit.note_subject(bytes(row[13]))
    return DisputeRow(
        int(row[0]), row[1], int(row[2]), row[3], row[4], row[5], row[6], row[7], row[8],
        row[9], opened, tx.parse_timestamp(row[11]), row[12],
    )  # fmt: skip


def open_dispute_of_card(tx: Tx, card_id: int) -> DisputeRow | None:
    """The card's open dispute, if any."""
    row = tx.one(
        f"SELECT {_COLUMNS} FROM disputes d JOIN cards c ON c.id = d.card_id "  # noqa: S608
        "WHERE d.card_id = ? AND d.state = ?",
        (card_id, _OPEN),
    )
    return None if row is None else _dispute(tx, row)


def open_disputes_of_cards(tx: Tx, card_ids: list[int]) -> dict[int, int]:
    """Open dispute ids by card id, for the given cards."""
    if not card_ids:
        return {}
    marks = ", ".join("?" for _ in card_ids)
    rows = tx.all(
        f"SELECT card_id, id FROM disputes WHERE state = ? AND card_id IN ({marks})",  # noqa: S608
        (_OPEN, *card_ids),
    )
    return {int(card): int(dispute) for card, dispute in rows}


def insert_dispute(
    tx: Tx,
    *,
    operator_id: str,
    card_id: int,
    reason: str,
    previous_state: str,
    previous_suspension: str | None,
    agent_id: str | None,
    now: dt.datetime,
) -> int | None:
    """Opens a dispute; returns its id, or None if the card already has an open one."""
    row = tx.one(
        "INSERT INTO disputes (operator_id, card_id, reason, state, previous_state, "
        "previous_suspension, agent_id, opened_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING RETURNING id",
        (
            operator_id, card_id, reason, _OPEN, previous_state, previous_suspension,
            agent_id, tx.timestamp(now),
        ),
    )  # fmt: skip
    return None if row is None else int(row[0])


def suspend_card(
    tx: Tx, card_id: int, from_state: str, from_suspension: str | None, suspension: str
) -> bool:
    """Suspends a card still in the state it was read in; False if it changed meanwhile."""
    sql = "UPDATE cards SET state = 'SUSPENDED', suspension = ? WHERE id = ? AND state = ? AND "
    if from_suspension is None:
        changed = tx.execute(sql + "suspension IS NULL", (suspension, card_id, from_state))
    else:
        changed = tx.execute(
            sql + "suspension = ?", (suspension, card_id, from_state, from_suspension)
        )
    return changed == 1


def restore_card(
    tx: Tx, card_id: int, suspension: str, state: str, previous_suspension: str | None
) -> bool:
    """Lifts a ``suspension`` back to the earlier state; False if not suspended for it.

    Never to ACTIVE while the card's document is blocked (``proofing_repo.card_state_sql``).
    """
    assignments, params = proofing_repo.card_state_sql(state, previous_suspension)
    changed = tx.execute(
        f"UPDATE cards SET {assignments} "  # noqa: S608
        "WHERE id = ? AND state = 'SUSPENDED' AND suspension = ?",
        (*params, card_id, suspension),
    )
    return changed == 1


def reverify_on_settlement(tx: Tx, id_key: bytes) -> int:
    """Makes the document's open disputes settle to REVERIFICATION, not ACTIVE; returns how many.

    Run when the document is blocked.
    """
    return tx.execute(
        "UPDATE disputes SET previous_state = 'SUSPENDED', previous_suspension = ? "
        "WHERE state = ? AND previous_state = 'ACTIVE' "
        "AND card_id IN (SELECT id FROM cards WHERE id_key = ?)",
        (Suspension.REVERIFICATION, _OPEN, id_key),
    )


def dispute_of_operator(tx: Tx, operator_id: str, dispute_id: int) -> DisputeRow | None:
    """One of the operator's disputes, or None."""
    row = tx.one(
        f"SELECT {_COLUMNS} FROM disputes d JOIN cards c ON c.id = d.card_id "  # noqa: S608
        "WHERE d.id = ? AND d.operator_id = ?",
        (dispute_id, operator_id),
    )
    return None if row is None else _dispute(tx, row)


def dispute_by_id(tx: Tx, dispute_id: int) -> DisputeRow:
    """A dispute by id (it must exist)."""
    row = tx.one(
        f"SELECT {_COLUMNS} FROM disputes d JOIN cards c ON c.id = d.card_id "  # noqa: S608
        "WHERE d.id = ?",
        (dispute_id,),
    )
    assert row is not None, "a dispute id read in this transaction exists"
    return _dispute(tx, row)


def disputes_of_operator(
    tx: Tx, operator_id: str, state: str | None, limit: int
) -> list[DisputeRow]:
    """The operator's disputes (optionally in one state), newest first."""
    where, params = "d.operator_id = ?", [operator_id]
    if state is not None:
        where, params = where + " AND d.state = ?", [*params, state]
    rows = tx.all(
        f"SELECT {_COLUMNS} FROM disputes d JOIN cards c ON c.id = d.card_id "  # noqa: S608
        f"WHERE {where} ORDER BY d.id DESC LIMIT ?",
        (*params, limit),
    )
    return [_dispute(tx, r) for r in rows]


def close_open_disputes_of_card(
    tx: Tx, card_id: int, resolution: str, note: str, now: dt.datetime
) -> int:
    """Closes the card's open dispute (at most one) as ``resolution``; how many it closed."""
    return tx.execute(
        "UPDATE disputes SET state = ?, resolution = ?, note = ?, resolved_at = ? "
        "WHERE card_id = ? AND state = ?",
        (_RESOLVED, resolution, note, tx.timestamp(now), card_id, _OPEN),
    )


def resolve_dispute(
    tx: Tx, dispute_id: int, resolution: str, note: str | None, now: dt.datetime
) -> bool:
    """Closes an open dispute; False if it was not open any more."""
    changed = tx.execute(
        "UPDATE disputes SET state = ?, resolution = ?, note = ?, resolved_at = ? "
        "WHERE id = ? AND state = ?",
        (_RESOLVED, resolution, note, tx.timestamp(now), dispute_id, _OPEN),
    )
    return changed == 1
