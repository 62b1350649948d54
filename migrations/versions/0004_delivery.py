"""Courier deliveries: the shipments table (token digest, mismatch lock, proof of delivery).

Cards sold online now start in state PENDING_DELIVERY, which the existing partial unique indexes
(``state <> 'DEACTIVATED'``) already treat as live; no index changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "shipments",
        sa.Column("token_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("card_id", BigId, nullable=False),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("courier", sa.String(32), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("waybill", sa.String(40), nullable=False),
        sa.Column("mismatches", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("locked", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("courier_staff_id", sa.String(64), nullable=True),
        sa.Column("presented_commitment", sa.LargeBinary(32), nullable=True),
        sa.Column("token", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name="fk_shipments_card_id_cards"),
        sa.PrimaryKeyConstraint("token_digest", name="pk_shipments"),
    )
    op.create_index("ix_shipments_card_id", "shipments", ["card_id"])
    # The expiry job scans pending cards by age.
    op.create_index("ix_cards_state_activated_at", "cards", ["state", "activated_at"])


def downgrade() -> None:
    op.drop_index("ix_cards_state_activated_at", table_name="cards")
    op.drop_index("ix_shipments_card_id", table_name="shipments")
    op.drop_table("shipments")
