"""Legacy subscribers: resumable imports, deadline policies, sweep runs and notices.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "legacy_imports",
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("import_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("total_rows", sa.BigInteger(), nullable=False),
        sa.Column("bad_rows", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_bad_ratio", sa.Float(), nullable=False),
        sa.Column("committed_rows", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("imported_rows", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed_rows", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name="fk_legacy_imports_operator_id_operators"
        ),
        sa.PrimaryKeyConstraint("operator_id", "import_id", name="pk_legacy_imports"),
        sa.CheckConstraint(
            "state IN ('VALIDATED', 'REFUSED', 'IMPORTING', 'COMPLETED')",
            name="ck_legacy_imports_state",
        ),
        sa.CheckConstraint(
            "committed_rows <= total_rows", name="ck_legacy_imports_committed_within_total"
        ),
    )
    op.create_table(
        "legacy_deadline_policies",
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("deadline", sa.Date(), nullable=False),
        sa.Column("grace_days", sa.Integer(), server_default=sa.text("30"), nullable=False),
        sa.Column("termination_days", sa.Integer(), server_default=sa.text("30"), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name="fk_legacy_deadline_policies_operator_id_operators",
        ),
        sa.PrimaryKeyConstraint("operator_id", name="pk_legacy_deadline_policies"),
        sa.CheckConstraint(
            "grace_days >= 1", name="ck_legacy_deadline_policies_grace_days_positive"
        ),
        sa.CheckConstraint(
            "termination_days >= 1", name="ck_legacy_deadline_policies_termination_days_positive"
        ),
    )
    op.create_table(
        "legacy_sweeps",
        sa.Column("sweep_date", sa.Date(), nullable=False),
        sa.Column("last_card_id", BigId, server_default=sa.text("0"), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("sweep_date", name="pk_legacy_sweeps"),
    )
    op.create_table(
        "legacy_notices",
        sa.Column("card_id", BigId, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("msisdn", sa.String(11), nullable=False),
        sa.Column("effective_on", sa.Date(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name="fk_legacy_notices_card_id_cards"),
        sa.PrimaryKeyConstraint("card_id", "stage", name="pk_legacy_notices"),
        sa.CheckConstraint(
            "stage IN ('OUTGOING_BARRED', 'ALL_BARRED', 'TERMINATED')",
            name="ck_legacy_notices_stage",
        ),
    )
    op.create_index(
        "ix_legacy_notices_operator_id_effective_on",
        "legacy_notices",
        ["operator_id", "effective_on"],
    )


def downgrade() -> None:
    op.drop_index("ix_legacy_notices_operator_id_effective_on", table_name="legacy_notices")
    op.drop_table("legacy_notices")
    op.drop_table("legacy_sweeps")
    op.drop_table("legacy_deadline_policies")
    op.drop_table("legacy_imports")
