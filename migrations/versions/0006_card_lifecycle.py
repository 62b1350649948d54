"""Card lifecycle columns: legacy subscribers, verification, deadline stage, suspension, industry.

Legacy subscribers may be imported without a document, so the document columns become nullable;
the channel check admits 'legacy'. SQLite cannot alter columns or constraints in place, so the
table is rebuilt in batch mode; its partial unique indexes are dropped and recreated around the
rebuild because batch reflection does not carry their WHERE clauses. (services.storage.migrate
runs SQLite migrations with foreign keys off and checks them at the end.)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

LIVE = sa.text("state <> 'DEACTIVATED'")
_PARTIAL = (("uq_cards_live_msisdn", "msisdn"), ("uq_cards_live_iccid", "iccid"))


def _drop_partial_indexes() -> None:
    for name, _column in _PARTIAL:
        op.drop_index(name, table_name="cards")


def _create_partial_indexes() -> None:
    for name, column in _PARTIAL:
        op.create_index(
            name, "cards", [column], unique=True, sqlite_where=LIVE, postgresql_where=LIVE
        )


def upgrade() -> None:
    _drop_partial_indexes()
    with op.batch_alter_table("cards") as batch:
        batch.alter_column("id_key", existing_type=sa.LargeBinary(32), nullable=True)
        batch.alter_column("document_type", existing_type=sa.SmallInteger(), nullable=True)
        batch.alter_column("document_masked", existing_type=sa.String(32), nullable=True)
        batch.drop_constraint("ck_cards_channel", type_="check")
        batch.create_check_constraint(
            "ck_cards_channel", "channel IN ('agent', 'online', 'legacy')"
        )
        batch.add_column(
            sa.Column("verified", sa.SmallInteger(), server_default=sa.text("1"), nullable=False)
        )
        batch.add_column(
            sa.Column(
                "service_stage", sa.String(16), server_default=sa.text("'FULL'"), nullable=False
            )
        )
        batch.add_column(sa.Column("suspension", sa.String(24), nullable=True))
        batch.add_column(sa.Column("enterprise_id", sa.String(18), nullable=True))
        batch.add_column(sa.Column("scenario", sa.String(32), nullable=True))
        batch.add_column(sa.Column("bound_imei", sa.String(16), nullable=True))
        batch.add_column(sa.Column("import_id", sa.String(64), nullable=True))
    _create_partial_indexes()
    op.create_index("ix_cards_enterprise", "cards", ["enterprise_id"])
    op.create_index("ix_cards_unverified", "cards", ["operator_id", "verified", "service_stage"])


def downgrade() -> None:
    op.drop_index("ix_cards_unverified", table_name="cards")
    op.drop_index("ix_cards_enterprise", table_name="cards")
    _drop_partial_indexes()
    with op.batch_alter_table("cards") as batch:
        for column in (
            "import_id", "bound_imei", "scenario", "enterprise_id", "suspension",
            "service_stage", "verified",
        ):  # fmt: skip
            batch.drop_column(column)
        batch.drop_constraint("ck_cards_channel", type_="check")
        batch.create_check_constraint("ck_cards_channel", "channel IN ('agent', 'online')")
        batch.alter_column("document_masked", existing_type=sa.String(32), nullable=False)
        batch.alter_column("document_type", existing_type=sa.SmallInteger(), nullable=False)
        batch.alter_column("id_key", existing_type=sa.LargeBinary(32), nullable=False)
    _create_partial_indexes()
