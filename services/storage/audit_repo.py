"""SQL of the audit trail, run in the caller's transaction (tables in ``audit_schema``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from services.domain.audit import AuditRecord, chain_next
from services.storage.rawsql import Tx

_COLUMNS = "id, at, principal, method, outcome, subject, chain"
# Rows per INSERT statement when a batch is appended.
_INSERT_CHUNK = 200
# One statement appends a batch and moves the head: the records' INSERT rides in a CTE.
_APPEND_PG = (
    f"WITH appended AS (INSERT INTO audit_records ({_COLUMNS}) "  # noqa: S608
    "SELECT * FROM unnest(?::bigint[], ?::timestamptz[], ?::text[], ?::text[], ?::text[], "
    "?::bytea[], ?::bytea[])) "
    "UPDATE audit_state SET head_id = ?, head_chain = ? WHERE id = 1"
)


@dataclass(frozen=True)
class ChainState:
    """The head of the chain and the base it starts from (after pruning)."""

    head_id: int
    head_chain: bytes
    base_id: int
    base_chain: bytes


@dataclass(frozen=True)
class PendingAudit:
    """A record waiting for its place in the chain."""

    at: dt.datetime
    principal: str
    method: str
    outcome: str
    subject: bytes | None


def state(tx: Tx, *, lock: bool = False) -> ChainState:
    """Reads the chain state; ``lock`` takes the row lock appends serialise on (PostgreSQL)."""
    suffix = " FOR UPDATE" if lock and not tx.sqlite else ""
    row = tx.one(
        f"SELECT head_id, head_chain, base_id, base_chain FROM audit_state WHERE id = 1{suffix}"  # noqa: S608
    )
    assert row is not None, "migration 0012 creates the audit_state row"
    return ChainState(int(row[0]), bytes(row[1]), int(row[2]), bytes(row[3]))


def append(tx: Tx, pending: Sequence[PendingAudit]) -> int:
    """Chains and inserts records after the head; returns the new head id."""
    head = state(tx, lock=True)
    chain, next_id = head.head_chain, head.head_id + 1
    rows: list[tuple[Any, ...]] = []
    for item in pending:
        record = AuditRecord(
            next_id, item.at, item.principal, item.method, item.outcome, item.subject
        )
        chain = chain_next(chain, record)
        rows.append(
            (next_id, tx.timestamp(item.at), item.principal, item.method, item.outcome,
             item.subject, chain)
        )  # fmt: skip
        next_id += 1
    if not tx.sqlite:
        # Column arrays: one fixed statement whatever the batch size, which psycopg parses once
        # and PostgreSQL prepares once (a VALUES list of varying length is parsed every time).
        columns = [list(column) for column in zip(*rows, strict=True)] or [[]] * 7
        tx.execute(_APPEND_PG, [*columns, next_id - 1, chain])
        return next_id - 1
    if rows:
        for start in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[start : start + _INSERT_CHUNK]
            marks = ", ".join("(?, ?, ?, ?, ?, ?, ?)" for _ in chunk)
            tx.execute(
                f"INSERT INTO audit_records ({_COLUMNS}) VALUES {marks}",  # noqa: S608
                [value for row in chunk for value in row],
            )
    tx.execute(
        "UPDATE audit_state SET head_id = ?, head_chain = ? WHERE id = 1", (next_id - 1, chain)
    )
    return next_id - 1


def _record(tx: Tx, row: tuple[Any, ...]) -> tuple[AuditRecord, bytes]:
    at = tx.parse_timestamp(row[1])
    assert at is not None
    subject = None if row[5] is None else bytes(row[5])
    return AuditRecord(int(row[0]), at, row[2], row[3], row[4], subject), bytes(row[6])


def records_after(tx: Tx, after_id: int, limit: int) -> list[tuple[AuditRecord, bytes]]:
    """Records with id > ``after_id`` in id order, with their stored chain values."""
    rows = tx.all(
        f"SELECT {_COLUMNS} FROM audit_records WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608
        (after_id, limit),
    )
    return [_record(tx, r) for r in rows]


def iterate(tx: Tx, after_id: int, batch: int = 5000) -> Iterator[tuple[AuditRecord, bytes]]:
    """Every record after ``after_id`` in id order, read in batches."""
    while True:
        found = records_after(tx, after_id, batch)
        yield from found
        if len(found) < batch:
            return
        after_id = found[-1][0].id


def query(
    tx: Tx, *, subject: bytes | None, principal: str | None, since: dt.datetime | None, limit: int
) -> list[AuditRecord]:
    """Records of a subject and/or a principal, newest first."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    for clause, value in (
        ("subject = ?", subject),
        ("principal = ?", principal),
        ("at >= ?", None if since is None else tx.timestamp(since)),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    rows = tx.all(
        f"SELECT {_COLUMNS} FROM audit_records WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY id DESC LIMIT ?",
        (*params, limit),
    )
    return [_record(tx, r)[0] for r in rows]


def last_id_before(tx: Tx, cutoff: dt.datetime) -> int | None:
    """The highest id of the contiguous run of records older than ``cutoff`` from the base."""
    row = tx.one("SELECT MIN(id) FROM audit_records WHERE at >= ?", (tx.timestamp(cutoff),))
    first_kept = None if row is None or row[0] is None else int(row[0])
    if first_kept is None:
        row = tx.one("SELECT MAX(id) FROM audit_records")
        return None if row is None or row[0] is None else int(row[0])
    return first_kept - 1


def prune_through(tx: Tx, record_id: int, chain: bytes) -> int:
    """Deletes records up to ``record_id`` and makes it the chain's base; returns rows deleted."""
    deleted = tx.execute("DELETE FROM audit_records WHERE id <= ?", (record_id,))
    tx.execute(
        "UPDATE audit_state SET base_id = ?, base_chain = ? WHERE id = 1", (record_id, chain)
    )
    return deleted


def add_anchor(tx: Tx, head_id: int, head_chain: bytes, leaf: bytes, now: dt.datetime) -> bool:
    """Records that a head was anchored; False if that head already was."""
    return (
        tx.execute(
            "INSERT INTO audit_anchors (head_id, head_chain, leaf_hash, anchored_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (head_id, head_chain, leaf, tx.timestamp(now)),
        )
        == 1
    )


def last_anchor(tx: Tx) -> int:
    """The highest anchored head id (0 if none)."""
    row = tx.one("SELECT MAX(head_id) FROM audit_anchors")
    return 0 if row is None or row[0] is None else int(row[0])
