"""Legacy imports count the documents they took over the cap (grandfathered pre-policy cards).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("legacy_imports") as batch:
        batch.add_column(
            sa.Column(
                "documents_over_cap", sa.BigInteger(), server_default=sa.text("0"), nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("legacy_imports") as batch:
        batch.drop_column("documents_over_cap")
