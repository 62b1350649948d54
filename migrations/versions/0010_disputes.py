"""Citizen disputes of cards (CitizenService.DisputeCard, DisputeService).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
OPEN = sa.text("state = 'OPEN'")


def upgrade() -> None:
    op.create_table(
        "disputes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("card_id", BigId, nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("resolution", sa.String(16), nullable=True),
        sa.Column("previous_state", sa.String(24), nullable=False),
        sa.Column("previous_suspension", sa.String(24), nullable=True),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("note", sa.String(200), nullable=True),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.CheckConstraint("reason IN ('NOT_MINE', 'NOT_NEEDED')", name="ck_disputes_reason"),
        sa.CheckConstraint("state IN ('OPEN', 'RESOLVED')", name="ck_disputes_state"),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name="fk_disputes_operator_id_operators"
        ),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name="fk_disputes_card_id_cards"),
        sa.PrimaryKeyConstraint("id", name="pk_disputes"),
    )
    op.create_index(
        "uq_disputes_open_card", "disputes", ["card_id"], unique=True,
        sqlite_where=OPEN, postgresql_where=OPEN,
    )  # fmt: skip
    op.create_index("ix_disputes_operator_state", "disputes", ["operator_id", "state", "id"])


def downgrade() -> None:
    op.drop_index("ix_disputes_operator_state", table_name="disputes")
    op.drop_index("uq_disputes_open_card", table_name="disputes")
    op.drop_table("disputes")
