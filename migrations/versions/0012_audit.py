"""Tamper-evident audit trail: chained records, the chain head, anchors into the log.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("principal", sa.String(96), nullable=False),
        sa.Column("method", sa.String(160), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("subject", sa.LargeBinary(32), nullable=True),
        sa.Column("chain", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_records"),
    )
    op.create_index("ix_audit_records_subject", "audit_records", ["subject", "id"])
    op.create_index("ix_audit_records_principal", "audit_records", ["principal", "id"])
    op.create_index("ix_audit_records_at", "audit_records", ["at"])
    state = op.create_table(
        "audit_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("head_id", sa.BigInteger(), nullable=False),
        sa.Column("head_chain", sa.LargeBinary(32), nullable=False),
        sa.Column("base_id", sa.BigInteger(), nullable=False),
        sa.Column("base_chain", sa.LargeBinary(32), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_state_singleton"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_state"),
    )
    op.bulk_insert(
        state,
        [{"id": 1, "head_id": 0, "head_chain": bytes(32), "base_id": 0, "base_chain": bytes(32)}],
    )
    op.create_table(
        "audit_anchors",
        sa.Column("head_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("head_chain", sa.LargeBinary(32), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("anchored_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("head_id", name="pk_audit_anchors"),
    )


def downgrade() -> None:
    op.drop_table("audit_anchors")
    op.drop_table("audit_state")
    op.drop_index("ix_audit_records_at", table_name="audit_records")
    op.drop_index("ix_audit_records_principal", table_name="audit_records")
    op.drop_index("ix_audit_records_subject", table_name="audit_records")
    op.drop_table("audit_records")
