"""Agents: per-operator agent registry, suspension and fraud signals.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("parent_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("suspension_reason", sa.String(256), nullable=True),
        sa.Column("registered_at", TS, nullable=False),
        sa.Column("suspended_at", TS, nullable=True),
        sa.CheckConstraint(
            "kind IN ('SHOP', 'SALES_POINT', 'ONLINE_STORE')", name="ck_agents_kind"
        ),
        sa.CheckConstraint("status IN ('ACTIVE', 'SUSPENDED')", name="ck_agents_status"),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name="fk_agents_operator_id_operators"
        ),
        sa.ForeignKeyConstraint(
            ["operator_id", "parent_id"],
            ["agents.operator_id", "agents.agent_id"],
            name="fk_agents_parent_agents",
        ),
        sa.PrimaryKeyConstraint("operator_id", "agent_id", name="pk_agents"),
    )
    op.create_index("ix_agents_operator_parent", "agents", ["operator_id", "parent_id"])
    op.create_table(
        "agent_signals",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("subject_masked", sa.String(32), nullable=True),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name="fk_agent_signals_operator_id_operators"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_agent_signals"),
        sa.UniqueConstraint(
            "operator_id", "agent_id", "kind", "subject", "window_start",
            name="uq_agent_signals_window",
        ),
    )  # fmt: skip
    op.create_index("ix_agent_signals_operator_at", "agent_signals", ["operator_id", "at"])
    op.create_index(
        "ix_cards_agent_activated", "cards", ["operator_id", "agent_id", "activated_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_cards_agent_activated", table_name="cards")
    op.drop_index("ix_agent_signals_operator_at", table_name="agent_signals")
    op.drop_table("agent_signals")
    op.drop_index("ix_agents_operator_parent", table_name="agents")
    op.drop_table("agents")
