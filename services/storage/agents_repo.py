"""SQL for agents and agent signals, run in the caller's transaction (tables of agents_schema)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from services.domain import audit
from services.storage.rawsql import Probe, Tx

_AGENT_COLUMNS = (
    "operator_id, agent_id, parent_id, name, kind, status, suspension_reason, registered_at, "
    "suspended_at"
)
_SIGNAL_COLUMNS = (
    "id, operator_id, agent_id, kind, subject, subject_masked, value, threshold, window_seconds, "
    "window_start, detail, at"
)


@dataclass(frozen=True)
class AgentRow:
    """An agent as stored."""

    operator_id: str
    agent_id: str
    parent_id: str | None
    name: str
    kind: str
    status: str
    suspension_reason: str | None
    registered_at: dt.datetime
    suspended_at: dt.datetime | None


@dataclass(frozen=True)
class SignalRow:
    """A fraud signal as stored (``subject`` is a document pseudonym or '')."""

    id: int
    operator_id: str
    agent_id: str
    kind: str
    subject: str
    subject_masked: str | None
    value: int
    threshold: int
    window_seconds: int
    window_start: dt.datetime
    detail: str | None
    at: dt.datetime


@dataclass(frozen=True)
class NewSignal:
    """A signal to record; deduplicated on (operator, agent, kind, subject, window_start)."""

    operator_id: str
    agent_id: str
    kind: str
    value: int
    threshold: int
    window_seconds: int
    window_start: dt.datetime
    subject: str = ""
    subject_masked: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class AgentPace:
    """When an agent made its (n+1)-th latest sales, and which of its window signals exist."""

    batch_nth: dt.datetime | None
    documents_nth: dt.datetime | None
    batch_recorded: bool
    documents_recorded: bool


@dataclass(frozen=True)
class DocumentStanding:
    """A document's activity with one operator."""

    agents: int
    active: int
    limit: int


def _agent(tx: Tx, row: tuple[Any, ...]) -> AgentRow:
    registered = tx.parse_timestamp(row[7])
    assert registered is not None
    return AgentRow(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], registered,
        tx.parse_timestamp(row[8]),
    )  # fmt: skip


def _signal(tx: Tx, row: tuple[Any, ...]) -> SignalRow:
    window_start, at = tx.parse_timestamp(row[9]), tx.parse_timestamp(row[11])
    assert window_start is not None and at is not None
    if row[4]:  # a per-document signal names the document (hex of its pseudonym)
        audit.note_subject(bytes.fromhex(row[4]))
    return SignalRow(
        int(row[0]), row[1], row[2], row[3], row[4], row[5], int(row[6]), int(row[7]),
        int(row[8]), window_start, row[10], at,
    )  # fmt: skip


def get_agent(tx: Tx, operator_id: str, agent_id: str) -> AgentRow | None:
    """One of the operator's agents, or None."""
    row = tx.one(
        f"SELECT {_AGENT_COLUMNS} FROM agents WHERE operator_id = ? AND agent_id = ?",  # noqa: S608
        (operator_id, agent_id),
    )
    return None if row is None else _agent(tx, row)


def insert_agent(
    tx: Tx,
    *,
    operator_id: str,
    agent_id: str,
    parent_id: str | None,
    name: str,
    kind: str,
    now: dt.datetime,
) -> bool:
    """Inserts an active agent; False if the operator already has one with this id."""
    changed = tx.execute(
        "INSERT INTO agents (operator_id, agent_id, parent_id, name, kind, status, registered_at) "
        "VALUES (?, ?, ?, ?, ?, 'ACTIVE', ?) ON CONFLICT DO NOTHING",
        (operator_id, agent_id, parent_id, name, kind, tx.timestamp(now)),
    )
    return changed == 1


def set_status(
    tx: Tx,
    operator_id: str,
    agent_id: str,
    *,
    status: str,
    reason: str | None,
    now: dt.datetime | None,
) -> bool:
    """Moves an agent to ``status`` if it is in the other one; False if nothing changed."""
    changed = tx.execute(
        "UPDATE agents SET status = ?, suspension_reason = ?, suspended_at = ? "
        "WHERE operator_id = ? AND agent_id = ? AND status <> ?",
        (status, reason, tx.timestamp(now), operator_id, agent_id, status),
    )
    return changed == 1


def list_agents(
    tx: Tx,
    operator_id: str,
    *,
    after: str,
    limit: int,
    status: str | None = None,
    parent_id: str | None = None,
) -> list[AgentRow]:
    """The operator's agents with ids after ``after``, in id order."""
    sql = f"SELECT {_AGENT_COLUMNS} FROM agents WHERE operator_id = ? AND agent_id > ?"  # noqa: S608
    params: list[Any] = [operator_id, after]
    if status is not None:
        sql += " AND status = ?"
        params.append(status)
    if parent_id is not None:
        sql += " AND parent_id = ?"
        params.append(parent_id)
    rows = tx.all(sql + " ORDER BY agent_id LIMIT ?", (*params, limit))
    return [_agent(tx, r) for r in rows]


# The nearest suspended agent in an agent's chain up to its top agent. Registration only names
# an existing parent and never changes it, so the chain has no cycle; the depth bound keeps a
# damaged row from looping the walk all the same.
_SUSPENDED_IN_CHAIN = (
    "WITH RECURSIVE chain(agent_id, parent_id, status, depth) AS ("
    "SELECT agent_id, parent_id, status, 0 FROM agents WHERE operator_id = ? AND agent_id = ? "
    "UNION ALL SELECT a.agent_id, a.parent_id, a.status, c.depth + 1 FROM chain c "
    "JOIN agents a ON a.operator_id = ? AND a.agent_id = c.parent_id WHERE c.depth < 64) "
    "SELECT COALESCE((SELECT agent_id FROM chain WHERE status = 'SUSPENDED' "
    "ORDER BY depth LIMIT 1), '') FROM chain WHERE depth = 0"
)


def suspension_probe(operator_id: str, agent_id: str) -> Probe:
    """None if the operator has not registered the agent; else the id of the nearest suspended
    agent among it and its ancestors, or '' if none is suspended."""
    return Probe(_SUSPENDED_IN_CHAIN, (operator_id, agent_id, operator_id))


def last_activation_probe(id_key: bytes, operator_id: str) -> Probe:
    """When the document last got a card with the operator (activated or transferred to it, any
    state), or None."""
    return Probe(
        "SELECT MAX(COALESCE(holder_since, activated_at)) FROM cards "
        "WHERE id_key = ? AND operator_id = ?",
        (id_key, operator_id),
    )


def last_activation(tx: Tx, id_key: bytes, operator_id: str) -> dt.datetime | None:
    """When the document last got a card with the operator (any state), or None."""
    return tx.parse_timestamp(tx.probe(last_activation_probe(id_key, operator_id)))


# The (n+1)-th latest sale of an agent lies inside a window exactly when the agent made more
# than n sales in it: a walk of at most n entries down ix_cards_agent_activated, stopping at the
# window's start, no aggregation. A signal already recorded for the current bucket needs no walk
# (CASE evaluates the subquery only when the existence probe says it is not recorded).
_NTH_SALE = (
    "SELECT activated_at FROM cards WHERE operator_id = ? AND agent_id = ? AND activated_at > ? "
    "ORDER BY activated_at DESC LIMIT 1 OFFSET ?"
)
_RECORDED = (
    "SELECT 1 FROM agent_signals WHERE operator_id = ? AND agent_id = ? AND kind = ? "
    "AND subject = '' AND window_start = ?"
)
_PACE = f"CASE WHEN EXISTS ({_RECORDED}) THEN NULL ELSE ({_NTH_SALE}) END"
# The document's distinct agents in its window, its live cards and the operator's cap. The
# operator is compared as an expression (operator_id || '') so that only ix_cards_holder can
# serve the count: without statistics (a table not analyzed yet) PostgreSQL took
# ix_cards_agent_activated for operator_id and activated_at and read all of the operator's
# recent cards, 0.9 ms a sale by 6,000 cards in the bench, against 0.06 ms by the holder.
_STANDING = (
    "(SELECT COUNT(DISTINCT agent_id) FROM cards "
    "WHERE id_key = ? AND operator_id || '' = ? AND activated_at > ?), "
    "(SELECT active FROM holdings WHERE id_key = ? AND operator_id = ?), "
    "(SELECT card_limit FROM operators WHERE id = ?)"
)
_ACTIVITY = f"SELECT {_PACE}, {_PACE}, EXISTS ({_RECORDED}), EXISTS ({_RECORDED}), {_STANDING}"


def sale_activity(
    tx: Tx,
    operator_id: str,
    agent_id: str,
    id_key: bytes,
    *,
    batch_n: int,
    documents_n: int,
    batch_signal: tuple[str, dt.datetime],
    documents_signal: tuple[str, dt.datetime],
    agents_since: dt.datetime,
    batch_since: dt.datetime,
    documents_since: dt.datetime,
) -> tuple[AgentPace, DocumentStanding]:
    """The agent's pace and the document's standing after a sale, in one statement.

    The pace is the agent's (batch_n+1)-th and (documents_n+1)-th latest sale times since
    ``batch_since`` and ``documents_since`` (None when there are not that many, or when the
    window signal is already recorded) and whether the window signals named by
    (kind, window_start) exist; the standing counts the agents that sold to the document since
    ``agents_since``.
    """
    batch_recorded = (operator_id, agent_id, batch_signal[0], tx.timestamp(batch_signal[1]))
    documents_recorded = (
        operator_id, agent_id, documents_signal[0], tx.timestamp(documents_signal[1])
    )  # fmt: skip
    # Planned every time: a plan prepared while the agent had few sales (a fresh database, a
    # new deployment) scanned every card of the operator and sorted them (ix_cards_unverified)
    # and stayed in use as the cards grew: 1.5 ms a sale after 6,000 sales in the bench, the
    # walk down ix_cards_agent_activated a planner picks for the real size 0.05 ms.
    row = tx.one(
        _ACTIVITY,
        (
            *batch_recorded, operator_id, agent_id, tx.timestamp(batch_since), batch_n,
            *documents_recorded, operator_id, agent_id, tx.timestamp(documents_since),
            documents_n, *batch_recorded, *documents_recorded,
            id_key, operator_id, tx.timestamp(agents_since), id_key, operator_id, operator_id,
        ),
        replan=True,
    )  # fmt: skip
    assert row is not None
    pace = AgentPace(
        tx.parse_timestamp(row[0]), tx.parse_timestamp(row[1]), bool(row[2]), bool(row[3])
    )
    return pace, DocumentStanding(int(row[4] or 0), int(row[5] or 0), int(row[6] or 0))


def distinct_documents(
    tx: Tx, operator_id: str, agent_id: str, since: dt.datetime, *, scan: int
) -> int:
    """Distinct documents among the agent's latest ``scan`` sales since a time."""
    row = tx.one(
        "SELECT COUNT(DISTINCT c.id_key) FROM cards c JOIN ("
        "SELECT id FROM cards WHERE operator_id = ? AND agent_id = ? AND activated_at > ? "
        "ORDER BY activated_at DESC LIMIT ?) recent ON recent.id = c.id",
        (operator_id, agent_id, tx.timestamp(since), scan),
    )
    assert row is not None
    return int(row[0])


def record_signals(tx: Tx, signals: list[NewSignal], now: dt.datetime) -> None:
    """Records signals in one statement; one already recorded for its window is left as is."""
    if not signals:
        return
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(signals))
    params: list[Any] = []
    for s in signals:
        params.extend(
            (
                s.operator_id, s.agent_id, s.kind, s.subject, s.subject_masked, s.value,
                s.threshold, s.window_seconds, tx.timestamp(s.window_start), s.detail,
                tx.timestamp(now),
            )
        )  # fmt: skip
    # DO NOTHING, not DO UPDATE: an update would lock the window's row for every activation of
    # a burst, serialising the agent's concurrent sales on it.
    tx.execute(
        "INSERT INTO agent_signals (operator_id, agent_id, kind, subject, subject_masked, value, "  # noqa: S608
        f"threshold, window_seconds, window_start, detail, at) VALUES {values} "
        "ON CONFLICT DO NOTHING",
        params,
    )


def list_signals(
    tx: Tx,
    operator_id: str | None,
    *,
    before_id: int | None,
    limit: int,
    agent_id: str | None = None,
    kind: str | None = None,
    since: dt.datetime | None = None,
) -> list[SignalRow]:
    """Signals, newest first (operator None: every operator's), with ids below ``before_id``."""
    sql = f"SELECT {_SIGNAL_COLUMNS} FROM agent_signals WHERE 1 = 1"  # noqa: S608
    params: list[Any] = []
    for column, value in (("operator_id", operator_id), ("agent_id", agent_id), ("kind", kind)):
        if value is not None:
            sql += f" AND {column} = ?"
            params.append(value)
    if since is not None:
        sql += " AND at >= ?"
        params.append(tx.timestamp(since))
    if before_id is not None:
        sql += " AND id < ?"
        params.append(before_id)
    rows = tx.all(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
    return [_signal(tx, r) for r in rows]


@dataclass(frozen=True)
class AgentSummary:
    """One agent's line in the agents report."""

    operator_id: str
    agent_id: str
    parent_id: str | None
    status: str  # ACTIVE, SUSPENDED, or UNREGISTERED for sales by an agent never registered
    activations: int
    documents: int
    signals: dict[str, int]
    last_signal_at: dt.datetime | None


def agent_summaries(tx: Tx, operator_id: str | None, since: dt.datetime) -> list[AgentSummary]:
    """Per agent: activations and distinct documents since a time, and its signals since then."""
    where, params = ("", []) if operator_id is None else (" AND operator_id = ?", [operator_id])
    registered = {
        (r[0], r[1]): (r[2], r[3])
        for r in tx.all(
            f"SELECT operator_id, agent_id, parent_id, status FROM agents WHERE 1 = 1{where}",  # noqa: S608
            params,
        )
    }
    sales = {
        (r[0], r[1]): (int(r[2]), int(r[3]))
        for r in tx.all(
            "SELECT operator_id, agent_id, COUNT(*), COUNT(DISTINCT id_key) FROM cards "  # noqa: S608
            f"WHERE agent_id IS NOT NULL AND activated_at > ?{where} "
            "GROUP BY operator_id, agent_id",
            [tx.timestamp(since), *params],
        )
    }
    signals: dict[tuple[str, str], dict[str, int]] = {}
    last: dict[tuple[str, str], dt.datetime] = {}
    for op, agent, kind, count, latest in tx.all(
        "SELECT operator_id, agent_id, kind, COUNT(*), MAX(at) FROM agent_signals "  # noqa: S608
        f"WHERE at >= ?{where} GROUP BY operator_id, agent_id, kind",
        [tx.timestamp(since), *params],
    ):
        signals.setdefault((op, agent), {})[kind] = int(count)
        at = tx.parse_timestamp(latest)
        if at is not None and ((op, agent) not in last or at > last[(op, agent)]):
            last[(op, agent)] = at
    out = []
    for key in sorted(set(registered) | set(sales) | set(signals)):
        parent, status = registered.get(key, (None, "UNREGISTERED"))
        activations, documents = sales.get(key, (0, 0))
        out.append(
            AgentSummary(
                key[0], key[1], parent, status, activations, documents,
                signals.get(key, {}), last.get(key),
            )
        )  # fmt: skip
    return out
