"""A reader's location may be unknown (NULL), not (0, 0).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# The readers and the attestations that copy the reader's place.
_TABLES = ("proofing_readers", "proofing_attestations")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("latitude", existing_type=sa.Float(), nullable=True)
            batch.alter_column("longitude", existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    for table in _TABLES:
        # The older schema has no "unknown": such rows go back to the (0, 0) it used to store.
        op.execute(f"UPDATE {table} SET latitude = 0, longitude = 0 WHERE latitude IS NULL")  # noqa: S608
        with op.batch_alter_table(table) as batch:
            batch.alter_column("longitude", existing_type=sa.Float(), nullable=False)
            batch.alter_column("latitude", existing_type=sa.Float(), nullable=False)
