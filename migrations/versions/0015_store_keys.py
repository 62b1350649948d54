"""Store keys by their SubjectPublicKeyInfo digest, so a compromised key is never certified again.

Adds ``authz_authorizations.spki_sha256`` (SHA-256 of the certificate's DER SubjectPublicKeyInfo)
with an index, and fills it from each stored certificate.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op
from cryptography import x509
from cryptography.hazmat.primitives import serialization

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_BATCH = 1000


def _digest(certificate: bytes) -> bytes:
    spki = (
        x509.load_der_x509_certificate(certificate)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return hashlib.sha256(spki).digest()


def upgrade() -> None:
    op.add_column("authz_authorizations", sa.Column("spki_sha256", sa.LargeBinary(32)))
    op.create_index("ix_authz_authorizations_spki_sha256", "authz_authorizations", ["spki_sha256"])
    table = sa.table(
        "authz_authorizations",
        sa.column("serial_hex", sa.String),
        sa.column("certificate", sa.LargeBinary),
        sa.column("spki_sha256", sa.LargeBinary),
    )
    conn = op.get_bind()
    after = ""
    while True:
        rows = conn.execute(
            sa.select(table.c.serial_hex, table.c.certificate)
            .where(table.c.serial_hex > after)
            .order_by(table.c.serial_hex)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        for serial, certificate in rows:
            conn.execute(
                table.update()
                .where(table.c.serial_hex == serial)
                .values(spki_sha256=_digest(bytes(certificate)))
            )
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_authz_authorizations_spki_sha256", table_name="authz_authorizations")
    op.drop_column("authz_authorizations", "spki_sha256")
