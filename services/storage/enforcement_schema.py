"""Tables of the regulator's enforcement records against operators."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Table,
    text,
)

from services.storage.schema import BigId, metadata

ACTIVE_SUSPENSION_SQL = "kind = 'SUSPEND_ACTIVATION' AND lifted_at IS NULL"

enforcement_actions = Table(
    "enforcement_actions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("operator_id", String(32), ForeignKey("operators.id"), nullable=False),
    Column("kind", String(24), nullable=False),
    Column("amount_yuan", BigInteger),
    Column("reason", String(500), nullable=False),
    Column("recorded_by", String(96), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("lifted_at", DateTime(timezone=True)),
    Column("ca_revoked", SmallInteger, nullable=False, server_default=text("0")),
    CheckConstraint("kind IN ('WARNING', 'FINE', 'SUSPEND_ACTIVATION')", name="kind"),
    CheckConstraint(
        "(kind = 'FINE' AND amount_yuan BETWEEN 10000 AND 30000) "
        "OR (kind <> 'FINE' AND amount_yuan IS NULL)",
        name="fine_amount",
    ),
    Index("ix_enforcement_actions_operator", "operator_id", "id"),
    # ActivateCard reads this on every call: only the (few) live suspensions are indexed.
    Index(
        "ix_enforcement_actions_suspended",
        "operator_id",
        sqlite_where=text(ACTIVE_SUSPENSION_SQL),
        postgresql_where=text(ACTIVE_SUSPENSION_SQL),
    ),
)
