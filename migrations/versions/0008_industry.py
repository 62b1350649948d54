"""Industry cards: enterprises, scenarios and their quotas.

Each enterprise is registered per operator with its quota counter (``active``) on its own row;
scenarios list the APNs their cards may use. AuthorizeService looks cards up by ICCID within an
operator, hence the index on cards.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "enterprises",
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("credit_code", sa.String(18), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("responsible_key", sa.LargeBinary(32), nullable=False),
        sa.Column("responsible_type", sa.SmallInteger(), nullable=False),
        sa.Column("responsible_masked", sa.String(32), nullable=False),
        sa.Column("card_quota", sa.Integer(), nullable=False),
        sa.Column("active", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("registered_at", TS, nullable=False),
        sa.CheckConstraint("card_quota >= 1", name="ck_enterprises_card_quota_positive"),
        sa.CheckConstraint("active >= 0", name="ck_enterprises_active_non_negative"),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name="fk_enterprises_operator_id_operators"
        ),
        sa.PrimaryKeyConstraint("operator_id", "credit_code", name="pk_enterprises"),
    )
    op.create_table(
        "enterprise_scenarios",
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("credit_code", sa.String(18), nullable=False),
        sa.Column("scenario", sa.String(32), nullable=False),
        sa.Column("apns", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id", "credit_code"],
            ["enterprises.operator_id", "enterprises.credit_code"],
            name="fk_enterprise_scenarios_operator_id_enterprises",
        ),
        sa.PrimaryKeyConstraint(
            "operator_id", "credit_code", "scenario", name="pk_enterprise_scenarios"
        ),
    )
    op.create_index("ix_cards_operator_iccid", "cards", ["operator_id", "iccid"])


def downgrade() -> None:
    op.drop_index("ix_cards_operator_iccid", table_name="cards")
    op.drop_table("enterprise_scenarios")
    op.drop_table("enterprises")
