"""Verification service: operators, number segments, holdings, cards, idempotency records.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LIVE = sa.text("state <> 'DEACTIVATED'")


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("card_limit", sa.Integer(), server_default=sa.text("5"), nullable=False),
        sa.CheckConstraint("kind IN ('basic', 'virtual')", name="ck_operators_kind"),
        sa.CheckConstraint("card_limit >= 1", name="ck_operators_card_limit_positive"),
        sa.PrimaryKeyConstraint("id", name="pk_operators"),
    )
    op.create_table(
        "number_segments",
        sa.Column("prefix", sa.String(8), nullable=False),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name="fk_number_segments_operator_id_operators"
        ),
        sa.PrimaryKeyConstraint("prefix", name="pk_number_segments"),
    )
    op.create_table(
        "holdings",
        sa.Column("id_key", sa.LargeBinary(32), nullable=False),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("active", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("active >= 0", name="ck_holdings_active_non_negative"),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name="fk_holdings_operator_id_operators"
        ),
        sa.PrimaryKeyConstraint("id_key", "operator_id", name="pk_holdings"),
    )
    op.create_table(
        "cards",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("msisdn", sa.String(11), nullable=False),
        sa.Column("iccid", sa.String(20), nullable=False),
        sa.Column("id_key", sa.LargeBinary(32), nullable=False),
        sa.Column("document_type", sa.SmallInteger(), nullable=False),
        sa.Column("document_masked", sa.String(32), nullable=False),
        sa.Column("card_type", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("store_authorization_serial", sa.String(64), nullable=True),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("channel IN ('agent', 'online')", name="ck_cards_channel"),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name="fk_cards_operator_id_operators"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_cards"),
    )
    op.create_index(
        "uq_cards_live_msisdn", "cards", ["msisdn"], unique=True,
        sqlite_where=LIVE, postgresql_where=LIVE,
    )  # fmt: skip
    op.create_index(
        "uq_cards_live_iccid", "cards", ["iccid"], unique=True,
        sqlite_where=LIVE, postgresql_where=LIVE,
    )  # fmt: skip
    op.create_index("ix_cards_holder", "cards", ["id_key", "operator_id"])
    op.create_index("ix_cards_operator_msisdn", "cards", ["operator_id", "msisdn"])
    op.create_table(
        "requests",
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(32), nullable=False),
        sa.Column("card_id", BigId, nullable=True),
        sa.Column("error_kind", sa.String(32), nullable=True),
        sa.Column("error_reason", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_metadata", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name="fk_requests_card_id_cards"),
        sa.PrimaryKeyConstraint("operator_id", "request_id", name="pk_requests"),
    )


def downgrade() -> None:
    op.drop_table("requests")
    op.drop_index("ix_cards_operator_msisdn", table_name="cards")
    op.drop_index("ix_cards_holder", table_name="cards")
    op.drop_index("uq_cards_live_iccid", table_name="cards")
    op.drop_index("uq_cards_live_msisdn", table_name="cards")
    op.drop_table("cards")
    op.drop_table("holdings")
    op.drop_table("number_segments")
    op.drop_table("operators")
