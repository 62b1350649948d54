"""Reference data: operators and the number segments they own (demo set for dev and tests)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, select

from services.storage.agents_schema import agents
from services.storage.schema import number_segments, operators

# (id, name, kind) of the demo operators: three basic operators and two virtual ones.
DEMO_OPERATORS = (
    ("cmcc", "China Mobile", "basic"),
    ("cucc", "China Unicom", "basic"),
    ("ctcc", "China Telecom", "basic"),
    ("vno1", "Demo Virtual Operator One", "virtual"),
    ("vno2", "Demo Virtual Operator Two", "virtual"),
)

# Segment prefixes by operator. Virtual operators hold 170x/171/162/165/167 sub-segments; the
# split between the two demo virtual operators is illustrative.
DEMO_SEGMENTS: dict[str, tuple[str, ...]] = {
    "cmcc": ("134", "135", "136", "137", "138", "139", "147", "150", "151", "152", "157",
             "158", "159", "178", "182", "183", "184", "187", "188", "198"),
    "cucc": ("130", "131", "132", "145", "155", "156", "166", "175", "176", "185", "186"),
    "ctcc": ("133", "149", "153", "173", "177", "180", "181", "189", "191", "199"),
    "vno1": ("1700", "1701", "1702", "162", "165"),
    "vno2": ("1703", "1705", "1706", "1704", "1707", "1708", "1709", "171", "167"),
}  # fmt: skip

# Demo agents of every demo operator, as (agent id, kind, parent): a franchise "agent-1" whose
# sales points shop-0 … shop-10 are its sub-agents (top-level agents of a virtual operator,
# which may not have sub-agents), and a shop "shop-0042" (the one docs/operators.md uses).
DEMO_AGENTS = (
    ("agent-1", "SHOP", None),
    ("shop-0042", "SHOP", None),
    *((f"shop-{n}", "SALES_POINT", "agent-1") for n in range(11)),
)


def seed_demo_reference_data(conn: Connection) -> int:
    """Inserts the demo operators and segments that are missing; returns rows added."""
    added = 0
    known_ops = set(conn.execute(select(operators.c.id)).scalars())
    for op_id, name, kind in DEMO_OPERATORS:
        if op_id not in known_ops:
            conn.execute(operators.insert().values(id=op_id, name=name, kind=kind))
            added += 1
    known_prefixes = set(conn.execute(select(number_segments.c.prefix)).scalars())
    for op_id, prefixes in DEMO_SEGMENTS.items():
        for prefix in prefixes:
            if prefix not in known_prefixes:
                conn.execute(number_segments.insert().values(prefix=prefix, operator_id=op_id))
                added += 1
    return added + _seed_demo_agents(conn)


def _seed_demo_agents(conn: Connection) -> int:
    known = {(r[0], r[1]) for r in conn.execute(select(agents.c.operator_id, agents.c.agent_id))}
    now = dt.datetime.now(dt.UTC)
    added = 0
    for op_id, _name, kind in DEMO_OPERATORS:
        for agent_id, agent_kind, parent in DEMO_AGENTS:
            if (op_id, agent_id) in known:
                continue
            conn.execute(
                agents.insert().values(
                    operator_id=op_id, agent_id=agent_id, name=f"Demo {agent_id}",
                    kind=agent_kind, parent_id=parent if kind == "basic" else None,
                    status="ACTIVE", registered_at=now,
                )
            )  # fmt: skip
            added += 1
    return added
