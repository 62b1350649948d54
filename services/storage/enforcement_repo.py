"""SQL of enforcement records, run in the caller's transaction (``enforcement_schema``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from services.domain.records import ActionRow
from services.storage.rawsql import Probe, Tx

_COLUMNS = "id, operator_id, kind, amount_yuan, reason, recorded_at, lifted_at, ca_revoked"


def _action(tx: Tx, row: tuple[Any, ...]) -> ActionRow:
    recorded = tx.parse_timestamp(row[5])
    assert recorded is not None
    amount = None if row[3] is None else int(row[3])
    return ActionRow(
        int(row[0]), row[1], row[2], amount, row[4], recorded, tx.parse_timestamp(row[6]),
        bool(row[7]),
    )  # fmt: skip


def suspension_probe(operator_id: str) -> Probe:
    """1 while the operator's new-user activation is suspended, else None (partial index)."""
    return Probe(
        "SELECT 1 FROM enforcement_actions WHERE operator_id = ? "
        "AND kind = 'SUSPEND_ACTIVATION' AND lifted_at IS NULL LIMIT 1",
        (operator_id,),
    )


def activation_suspended(tx: Tx, operator_id: str) -> bool:
    """Whether the operator's new-user activation is suspended now."""
    return tx.probe(suspension_probe(operator_id)) is not None


def insert_action(
    tx: Tx,
    *,
    operator_id: str,
    kind: str,
    amount_yuan: int | None,
    reason: str,
    recorded_by: str,
    now: dt.datetime,
    ca_revoked: bool = False,
) -> ActionRow:
    """Records an action and returns it."""
    sql = (
        "INSERT INTO enforcement_actions (operator_id, kind, amount_yuan, reason, "  # noqa: S608
        f"recorded_by, recorded_at, ca_revoked) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}"
    )
    row = tx.one(
        sql,
        (operator_id, kind, amount_yuan, reason, recorded_by, tx.timestamp(now), int(ca_revoked)),
    )
    assert row is not None
    return _action(tx, row)


def action_by_id(tx: Tx, action_id: int) -> ActionRow | None:
    """One action, or None."""
    row = tx.one(
        f"SELECT {_COLUMNS} FROM enforcement_actions WHERE id = ?",  # noqa: S608
        (action_id,),
    )
    return None if row is None else _action(tx, row)


def lift(tx: Tx, action_id: int, now: dt.datetime) -> bool:
    """Lifts a live suspension; False if it was not one."""
    changed = tx.execute(
        "UPDATE enforcement_actions SET lifted_at = ? WHERE id = ? "
        "AND kind = 'SUSPEND_ACTIVATION' AND lifted_at IS NULL",
        (tx.timestamp(now), action_id),
    )
    return changed == 1


def actions(tx: Tx, operator_id: str | None, limit: int = 1000) -> list[ActionRow]:
    """Actions, newest first, optionally of one operator."""
    if operator_id is None:
        rows = tx.all(
            f"SELECT {_COLUMNS} FROM enforcement_actions ORDER BY id DESC LIMIT ?",  # noqa: S608
            (limit,),
        )
    else:
        rows = tx.all(
            f"SELECT {_COLUMNS} FROM enforcement_actions WHERE operator_id = ? "  # noqa: S608
            "ORDER BY id DESC LIMIT ?",
            (operator_id, limit),
        )
    return [_action(tx, r) for r in rows]
