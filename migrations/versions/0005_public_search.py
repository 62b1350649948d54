"""Indexes for the public registry page: authorizations by credit code and by store name.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_authz_authorizations_credit_code",
        "authz_authorizations",
        ["credit_code", "serial_hex"],
    )
    op.create_index(
        "ix_authz_authorizations_legal_name",
        "authz_authorizations",
        ["legal_name", "serial_hex"],
    )


def downgrade() -> None:
    op.drop_index("ix_authz_authorizations_legal_name", table_name="authz_authorizations")
    op.drop_index("ix_authz_authorizations_credit_code", table_name="authz_authorizations")
