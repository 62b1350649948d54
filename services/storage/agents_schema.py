"""Tables of agents: the sales points operators register, and fraud signals against them."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from services.storage.schema import BigId, cards, metadata

# One row per (operator, agent): agent ids are the operator's own namespace. A parent, when
# named, is another agent of the same operator (virtual operators may not have sub-agents).
agents = Table(
    "agents",
    metadata,
    Column("operator_id", String(32), ForeignKey("operators.id"), nullable=False),
    Column("agent_id", String(64), nullable=False),
    Column("parent_id", String(64)),
    Column("name", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("suspension_reason", String(256)),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("suspended_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("operator_id", "agent_id"),
    ForeignKeyConstraint(
        ["operator_id", "parent_id"],
        ["agents.operator_id", "agents.agent_id"],
        name="fk_agents_parent_agents",
    ),
    CheckConstraint("kind IN ('SHOP', 'SALES_POINT', 'ONLINE_STORE')", name="kind"),
    CheckConstraint("status IN ('ACTIVE', 'SUSPENDED')", name="status"),
    Index("ix_agents_operator_parent", "operator_id", "parent_id"),
)

# Fraud signals. ``subject`` is the document's pseudonym (hex of its HMAC key) for per-document
# kinds, else ''; a clear document number is never stored. One row per (operator, agent, kind,
# subject, window_start): a burst inside one window bucket records one row, not thousands.
agent_signals = Table(
    "agent_signals",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("operator_id", String(32), ForeignKey("operators.id"), nullable=False),
    Column("agent_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("subject", String(64), nullable=False),
    Column("subject_masked", String(32)),
    Column("value", Integer, nullable=False),
    Column("threshold", Integer, nullable=False),
    Column("window_seconds", Integer, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("detail", Text),
    Column("at", DateTime(timezone=True), nullable=False),
    UniqueConstraint(
        "operator_id", "agent_id", "kind", "subject", "window_start", name="uq_agent_signals_window"
    ),
    Index("ix_agent_signals_operator_at", "operator_id", "at"),
)

# An agent's sales by time: the activation hook walks its latest entries.
ix_cards_agent_activated = Index(
    "ix_cards_agent_activated", cards.c.operator_id, cards.c.agent_id, cards.c.activated_at
)
