"""Daily compliance snapshots (real-name rate per operator over time).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compliance_snapshots",
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("live_cards", sa.BigInteger(), nullable=False),
        sa.Column("verified_cards", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name="fk_compliance_snapshots_operator_id_operators"
        ),
        sa.PrimaryKeyConstraint("day", "operator_id", name="pk_compliance_snapshots"),
    )


def downgrade() -> None:
    op.drop_table("compliance_snapshots")
