"""Tables of citizen disputes: a holder disowns a card, its operator resolves the dispute."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, DateTime, ForeignKey, Index, String, Table, text

from services.storage.schema import BigId, metadata

OPEN_SQL = "state = 'OPEN'"

# One row per dispute. The disputing document is kept only as its pseudonym key; while a dispute
# is open its card is SUSPENDED, and previous_state/previous_suspension say what to restore.
disputes = Table(
    "disputes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("operator_id", String(32), ForeignKey("operators.id"), nullable=False),
    Column("card_id", BigId, ForeignKey("cards.id"), nullable=False),
    Column("reason", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("resolution", String(16)),
    Column("previous_state", String(24), nullable=False),
    Column("previous_suspension", String(24)),
    Column("agent_id", String(64)),
    Column("note", String(200)),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    CheckConstraint("reason IN ('NOT_MINE', 'NOT_NEEDED')", name="reason"),
    CheckConstraint("state IN ('OPEN', 'RESOLVED')", name="state"),
    # A card has at most one open dispute: concurrent disputes of one card collapse into one.
    Index(
        "uq_disputes_open_card",
        "card_id",
        unique=True,
        sqlite_where=text(OPEN_SQL),
        postgresql_where=text(OPEN_SQL),
    ),
    Index("ix_disputes_operator_state", "operator_id", "state", "id"),
)
