"""Tables of identity proofing: policies, identity records, blocklist, readers, nonces, signals.

No clear name or document number is stored anywhere here: documents are pseudonyms (``id_key``,
the pepper's HMAC), names are keyed hashes; the sealed holder name lives on ``cards``.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
)

from services.storage.schema import BigId, cards, metadata

TS = DateTime(timezone=True)

# The holder's name on each card: AES-GCM ciphertext, the key id it was sealed under, and the
# keyed hash of the normalised name (for comparisons without decrypting).
for _column in (
    Column("holder_name_ct", LargeBinary),
    Column("holder_name_key_id", String(32)),
    Column("holder_name_hash", LargeBinary(32)),
):
    if _column.name not in cards.c:
        cards.append_column(_column)

# One row per operator that turned proofing on; no row means proofing is off for it.
proofing_policies = Table(
    "proofing_policies",
    metadata,
    Column("operator_id", String(32), ForeignKey("operators.id"), primary_key=True),
    Column("attestation_required", SmallInteger, nullable=False),
    Column("identity_check_required", SmallInteger, nullable=False),
    Column("face_match_threshold_permille", Integer, nullable=False),
    Column("freshness_seconds", Integer, nullable=False),
    Column("updated_at", TS, nullable=False),
    CheckConstraint(
        "face_match_threshold_permille BETWEEN 0 AND 1000", name="face_match_threshold"
    ),
    CheckConstraint("freshness_seconds BETWEEN 10 AND 3600", name="freshness"),
)

# The reference identity authority's records, loaded from signed import files.
proofing_identity_records = Table(
    "proofing_identity_records",
    metadata,
    Column("id_key", LargeBinary(32), primary_key=True),
    Column("name_hash", LargeBinary(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("valid_until", Date),
    Column("source", String(64), nullable=False),
    Column("loaded_at", TS, nullable=False),
    CheckConstraint("status IN ('VALID', 'LOST', 'STOLEN', 'CANCELLED')", name="status"),
)

# The regulator's lost/stolen blocklist.
proofing_blocks = Table(
    "proofing_blocks",
    metadata,
    Column("id_key", LargeBinary(32), primary_key=True),
    Column("document_type", SmallInteger, nullable=False),
    Column("document_masked", String(32), nullable=False),
    Column("reason", String(16), nullable=False),
    Column("reference", String(64), nullable=False),
    Column("blocked_at", TS, nullable=False),
)

# Certified ID-card readers, registered by an operator to one of its agents.
proofing_readers = Table(
    "proofing_readers",
    metadata,
    Column("operator_id", String(32), ForeignKey("operators.id"), nullable=False),
    Column("serial", String(64), nullable=False),
    Column("agent_id", String(64), nullable=False),
    Column("key_algorithm", String(16), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("key_fingerprint", String(64), nullable=False),
    Column("latitude", Float),  # NULL with longitude: registered without a location
    Column("longitude", Float),
    Column("location_label", String(128), nullable=False),
    Column("registered_at", TS, nullable=False),
    Column("revoked_at", TS),
    Column("revocation_reason", String(200)),
    PrimaryKeyConstraint("operator_id", "serial"),
    Index("ix_proofing_readers_agent", "operator_id", "agent_id"),
)

# Attestation nonces: stored as their SHA-256; used_at set once, by the attestation that uses it.
proofing_nonces = Table(
    "proofing_nonces",
    metadata,
    Column("digest", LargeBinary(32), primary_key=True),
    Column("operator_id", String(32), nullable=False),
    Column("issued_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("used_at", TS),
    Index("ix_proofing_nonces_expires_at", "expires_at"),
)

# Every attestation checked (accepted or not), for the fraud signals: the document only as its
# pseudonym, the reader's place copied so later moves of the reader do not rewrite history.
proofing_attestations = Table(
    "proofing_attestations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("operator_id", String(32), nullable=False),
    Column("agent_id", String(64), nullable=False),
    Column("reader_serial", String(64), nullable=False),
    Column("id_key", LargeBinary(32), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("face_score", Integer, nullable=False),
    Column("latitude", Float),  # NULL with longitude: registered without a location
    Column("longitude", Float),
    Column("recorded_at", TS, nullable=False),
    Index("ix_proofing_attestations_reader", "operator_id", "reader_serial", "recorded_at"),
    Index("ix_proofing_attestations_document", "id_key", "recorded_at"),
)

# Fraud signals raised from attestations; they name readers and agents, never people.
proofing_signals = Table(
    "proofing_signals",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(24), nullable=False),
    Column("operator_id", String(32), nullable=False),
    Column("agent_id", String(64), nullable=False),
    Column("reader_serial", String(64), nullable=False),
    Column("detail", String(200), nullable=False),
    Column("observed_at", TS, nullable=False),
    CheckConstraint(
        "kind IN ('READER_BURST', 'DISTANT_READERS', 'FACE_MATCH_FAILURES')", name="kind"
    ),
    Index("ix_proofing_signals_operator", "operator_id", "id"),
    Index("ix_proofing_signals_reader", "operator_id", "reader_serial", "kind", "observed_at"),
)
