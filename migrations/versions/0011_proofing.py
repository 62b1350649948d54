"""Identity proofing: holder names, identity authority table, readers, nonces.

Cards gain the sealed holder name (ciphertext, key id, keyed hash); new tables hold each
operator's proofing policy, the reference identity authority's records, the regulator's
lost/stolen blocklist, readers, attestation nonces, checked attestations and fraud signals.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
_TABLES = (
    "proofing_signals",
    "proofing_attestations",
    "proofing_nonces",
    "proofing_readers",
    "proofing_blocks",
    "proofing_identity_records",
    "proofing_policies",
)


def upgrade() -> None:
    with op.batch_alter_table("cards") as batch:
        batch.add_column(sa.Column("holder_name_ct", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("holder_name_key_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("holder_name_hash", sa.LargeBinary(32), nullable=True))
    op.create_table(
        "proofing_policies",
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("attestation_required", sa.SmallInteger(), nullable=False),
        sa.Column("identity_check_required", sa.SmallInteger(), nullable=False),
        sa.Column("face_match_threshold_permille", sa.Integer(), nullable=False),
        sa.Column("freshness_seconds", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(
            "face_match_threshold_permille BETWEEN 0 AND 1000",
            name="ck_proofing_policies_face_match_threshold",
        ),
        sa.CheckConstraint(
            "freshness_seconds BETWEEN 10 AND 3600", name="ck_proofing_policies_freshness"
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name="fk_proofing_policies_operator_id_operators"
        ),
        sa.PrimaryKeyConstraint("operator_id", name="pk_proofing_policies"),
    )
    op.create_table(
        "proofing_identity_records",
        sa.Column("id_key", sa.LargeBinary(32), nullable=False),
        sa.Column("name_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("loaded_at", TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('VALID', 'LOST', 'STOLEN', 'CANCELLED')",
            name="ck_proofing_identity_records_status",
        ),
        sa.PrimaryKeyConstraint("id_key", name="pk_proofing_identity_records"),
    )
    op.create_table(
        "proofing_blocks",
        sa.Column("id_key", sa.LargeBinary(32), nullable=False),
        sa.Column("document_type", sa.SmallInteger(), nullable=False),
        sa.Column("document_masked", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("blocked_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id_key", name="pk_proofing_blocks"),
    )
    op.create_table(
        "proofing_readers",
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("key_algorithm", sa.String(16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("location_label", sa.String(128), nullable=False),
        sa.Column("registered_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revocation_reason", sa.String(200), nullable=True),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name="fk_proofing_readers_operator_id_operators"
        ),
        sa.PrimaryKeyConstraint("operator_id", "serial", name="pk_proofing_readers"),
    )
    op.create_index("ix_proofing_readers_agent", "proofing_readers", ["operator_id", "agent_id"])
    op.create_table(
        "proofing_nonces",
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("digest", name="pk_proofing_nonces"),
    )
    op.create_index("ix_proofing_nonces_expires_at", "proofing_nonces", ["expires_at"])
    op.create_table(
        "proofing_attestations",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("reader_serial", sa.String(64), nullable=False),
        sa.Column("id_key", sa.LargeBinary(32), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("face_score", sa.Integer(), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_proofing_attestations"),
    )
    op.create_index(
        "ix_proofing_attestations_reader",
        "proofing_attestations",
        ["operator_id", "reader_serial", "recorded_at"],
    )
    op.create_index(
        "ix_proofing_attestations_document", "proofing_attestations", ["id_key", "recorded_at"]
    )
    op.create_table(
        "proofing_signals",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("operator_id", sa.String(32), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("reader_serial", sa.String(64), nullable=False),
        sa.Column("detail", sa.String(200), nullable=False),
        sa.Column("observed_at", TS, nullable=False),
        sa.CheckConstraint(
            "kind IN ('READER_BURST', 'DISTANT_READERS', 'FACE_MATCH_FAILURES')",
            name="ck_proofing_signals_kind",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_proofing_signals"),
    )
    op.create_index("ix_proofing_signals_operator", "proofing_signals", ["operator_id", "id"])
    op.create_index(
        "ix_proofing_signals_reader",
        "proofing_signals",
        ["operator_id", "reader_serial", "kind", "observed_at"],
    )


def downgrade() -> None:
    for table in _TABLES:
        op.drop_table(table)
    with op.batch_alter_table("cards") as batch:
        batch.drop_column("holder_name_hash")
        batch.drop_column("holder_name_key_id")
        batch.drop_column("holder_name_ct")
