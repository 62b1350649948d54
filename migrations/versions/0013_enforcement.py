"""Regulator enforcement records: warnings, fines, activation suspensions.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
ACTIVE = sa.text("kind = 'SUSPEND_ACTIVATION' AND lifted_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "enforcement_actions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("amount_yuan", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("recorded_by", sa.String(96), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("lifted_at", TS, nullable=True),
        sa.Column("ca_revoked", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint(
            "kind IN ('WARNING', 'FINE', 'SUSPEND_ACTIVATION')", name="ck_enforcement_actions_kind"
        ),
        sa.CheckConstraint(
            "(kind = 'FINE' AND amount_yuan BETWEEN 10000 AND 30000) "
            "OR (kind <> 'FINE' AND amount_yuan IS NULL)",
            name="ck_enforcement_actions_fine_amount",
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name="fk_enforcement_actions_operator_id_operators"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_enforcement_actions"),
    )
    op.create_index("ix_enforcement_actions_operator", "enforcement_actions", ["operator_id", "id"])
    op.create_index(
        "ix_enforcement_actions_suspended", "enforcement_actions", ["operator_id"],
        sqlite_where=ACTIVE, postgresql_where=ACTIVE,
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_enforcement_actions_suspended", table_name="enforcement_actions")
    op.drop_index("ix_enforcement_actions_operator", table_name="enforcement_actions")
    op.drop_table("enforcement_actions")
