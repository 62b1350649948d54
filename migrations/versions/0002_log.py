"""Transparency log: pending and sequenced entries, tiles, tree state, checkpoints, cosignatures.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "log_pending",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("entry", sa.LargeBinary(), nullable=False),
        sa.Column("certificate_sha256", sa.LargeBinary(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_log_pending"),
    )
    op.create_table(
        "log_entries",
        sa.Column("idx", BigId, autoincrement=False, nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("certificate_sha256", sa.LargeBinary(32), nullable=True),
        sa.Column("entry", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("idx", name="pk_log_entries"),
    )
    op.create_index("ix_log_entries_leaf_hash", "log_entries", ["leaf_hash"])
    op.create_index("ix_log_entries_certificate_sha256", "log_entries", ["certificate_sha256"])
    op.create_table(
        "log_tiles",
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("hashes", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name="pk_log_tiles"),
    )
    log_state = op.create_table(
        "log_state",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("edge", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_log_state_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_log_state"),
    )
    op.create_table(
        "log_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", name="pk_log_checkpoints"),
    )
    op.create_table(
        "log_cosignatures",
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("key_hash", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["size"], ["log_checkpoints.size"], name="fk_log_cosignatures_size_log_checkpoints"
        ),
        sa.PrimaryKeyConstraint("size", "name", "key_hash", name="pk_log_cosignatures"),
    )
    # The empty tree: size 0, root SHA-256(""), no compact range hashes.
    op.bulk_insert(
        log_state, [{"id": 1, "size": 0, "root": hashlib.sha256(b"").digest(), "edge": b""}]
    )


def downgrade() -> None:
    op.drop_table("log_cosignatures")
    op.drop_table("log_checkpoints")
    op.drop_table("log_state")
    op.drop_table("log_tiles")
    op.drop_index("ix_log_entries_certificate_sha256", table_name="log_entries")
    op.drop_index("ix_log_entries_leaf_hash", table_name="log_entries")
    op.drop_table("log_entries")
    op.drop_table("log_pending")
