"""Seller-authorization registry: CA generations, applications, authorizations, CRLs, state.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "authz_cas",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("issuer", sa.String(16), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.LargeBinary(20), nullable=False),
        sa.Column("serial_hex", sa.String(40), nullable=False),
        sa.Column("encrypted_key", sa.Text(), nullable=True),
        sa.Column("not_before", TS, nullable=False),
        sa.Column("not_after", TS, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revocation_reason", sa.SmallInteger(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('current', 'retired')", name="ck_authz_cas_status"),
        sa.PrimaryKeyConstraint("id", name="pk_authz_cas"),
        sa.UniqueConstraint("issuer", "generation", name="uq_authz_cas_issuer_generation"),
    )
    op.create_index(
        "uq_authz_cas_current",
        "authz_cas",
        ["issuer"],
        unique=True,
        sqlite_where=sa.text("status = 'current'"),
        postgresql_where=sa.text("status = 'current'"),
    )
    op.create_table(
        "authz_applications",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("operator", sa.String(16), nullable=False),
        sa.Column("marketplace", sa.String(24), nullable=False),
        sa.Column("shop_id", sa.String(39), nullable=False),
        sa.Column("legal_name", sa.String(64), nullable=False),
        sa.Column("credit_code", sa.String(18), nullable=False),
        sa.Column("card_types", sa.String(32), nullable=False),
        sa.Column("provinces", sa.String(128), nullable=False),
        sa.Column("csr", sa.LargeBinary(), nullable=False),
        sa.Column("business_licence", sa.String(64), nullable=False),
        sa.Column("protection_certification", sa.String(200), nullable=True),
        sa.Column("protection_level", sa.SmallInteger(), nullable=True),
        sa.Column("contact_key_id", sa.String(32), nullable=False),
        sa.Column("contact_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("submitted_by", sa.String(64), nullable=False),
        sa.Column("submitted_at", TS, nullable=False),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("assessment", sa.Text(), nullable=True),
        sa.Column("reviewed_by", sa.String(64), nullable=True),
        sa.Column("reviewed_at", TS, nullable=True),
        sa.Column("serial_hex", sa.String(40), nullable=True),
        sa.CheckConstraint(
            "status IN ('submitted', 'approved', 'denied', 'issued')",
            name="ck_authz_applications_status",
        ),
        sa.CheckConstraint(
            "(protection_certification IS NULL) <> (protection_level IS NULL)",
            name="ck_authz_applications_protection",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_authz_applications"),
    )
    op.create_index(
        "ix_authz_applications_operator_status",
        "authz_applications",
        ["operator", "status", "id"],
    )
    op.create_table(
        "authz_authorizations",
        sa.Column("serial_hex", sa.String(40), nullable=False),
        sa.Column("operator", sa.String(16), nullable=False),
        sa.Column("ca_id", BigId, nullable=False),
        sa.Column("application_id", BigId, nullable=True),
        sa.Column("marketplace", sa.String(24), nullable=False),
        sa.Column("shop_id", sa.String(39), nullable=False),
        sa.Column("legal_name", sa.String(64), nullable=False),
        sa.Column("credit_code", sa.String(18), nullable=False),
        sa.Column("card_types", sa.String(32), nullable=False),
        sa.Column("provinces", sa.String(128), nullable=False),
        sa.Column("not_before", TS, nullable=False),
        sa.Column("not_after", TS, nullable=False),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revocation_reason", sa.SmallInteger(), nullable=True),
        sa.Column("revocation_comment", sa.Text(), nullable=True),
        sa.Column("renewed_from", sa.String(40), nullable=True),
        sa.Column("superseded_by", sa.String(40), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'revoked')", name="ck_authz_authorizations_status"
        ),
        sa.ForeignKeyConstraint(
            ["ca_id"], ["authz_cas.id"], name="fk_authz_authorizations_ca_id_authz_cas"
        ),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["authz_applications.id"],
            name="fk_authz_authorizations_application_id_authz_applications",
        ),
        sa.PrimaryKeyConstraint("serial_hex", name="pk_authz_authorizations"),
    )
    op.create_index(
        "uq_authz_authorizations_current_shop",
        "authz_authorizations",
        ["marketplace", "shop_id", "operator"],
        unique=True,
        sqlite_where=sa.text("is_current"),
        postgresql_where=sa.text("is_current"),
    )
    op.create_index(
        "ix_authz_authorizations_operator_status",
        "authz_authorizations",
        ["operator", "status"],
    )
    op.create_table(
        "authz_crls",
        sa.Column("issuer", sa.String(16), nullable=False),
        sa.Column("crl_number", sa.BigInteger(), nullable=False),
        sa.Column("this_update", TS, nullable=False),
        sa.Column("next_update", TS, nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("issuer", name="pk_authz_crls"),
    )
    state = op.create_table(
        "authz_state",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_authz_state_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_authz_state"),
    )
    op.bulk_insert(state, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("authz_state")
    op.drop_table("authz_crls")
    op.drop_index("ix_authz_authorizations_operator_status", table_name="authz_authorizations")
    op.drop_index("uq_authz_authorizations_current_shop", table_name="authz_authorizations")
    op.drop_table("authz_authorizations")
    op.drop_index("ix_authz_applications_operator_status", table_name="authz_applications")
    op.drop_table("authz_applications")
    op.drop_index("uq_authz_cas_current", table_name="authz_cas")
    op.drop_table("authz_cas")
