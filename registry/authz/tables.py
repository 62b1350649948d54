"""The seller-authorization registry's tables (on ``registry.schema.metadata``).

* ``authz_cas`` — the regulator root and every key generation of every operator CA: certificate,
  subject key id, and for operator CAs the private key as encrypted PKCS#8 (the root's key is a
  file, never in the database, so that it can live offline). At most one ``current`` generation
  per issuer; rotation retires the previous one, which stays for verification and OCSP.
* ``authz_applications`` — store applications: the CSR, the qualifications (the contact person is
  sealed with AES-GCM, key id beside the ciphertext) and the review.
* ``authz_authorizations`` — issued store certificates with their fields as columns, so that
  status questions are answered by indexed queries without parsing certificates. ``is_current``
  marks the newest authorization of a (marketplace, shop, operator): a partial unique index keeps
  it single and is the lookup index of VerifySeller and the sweep. ``spki_sha256`` names the
  store's public key, so issuance can refuse a key revoked for compromise or bound elsewhere.
* ``authz_crls`` — the latest signed CRL of each issuer (``root`` or an operator), with its
  number, so every process serves the same bytes and numbers only grow.
* ``authz_state`` — one row: ``generation`` grows in every transaction that changes a CRL, a
  CA or a shop's current authorization (issuance, renewal, revocation), so a process holding a
  verifier or shop certificates in memory can tell with one cheap read that it is stale.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from registry.schema import metadata

# SQLite makes only INTEGER PRIMARY KEY the rowid; PostgreSQL gets 64 bits.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

ROOT_ISSUER: Final = "root"
"""``issuer`` value of the regulator root (operator ids never take it: it is reserved)."""

CA_CURRENT: Final = "current"
"""Status of the generation of an issuer that signs new certificates and CRLs."""

CA_RETIRED: Final = "retired"
"""Status of an earlier generation, kept for verification and OCSP until its certificates end."""

APP_SUBMITTED: Final = "submitted"
"""Application waiting for review."""
APP_APPROVED: Final = "approved"
"""Application approved; an authorization may be issued."""
APP_DENIED: Final = "denied"
"""Application denied (final)."""
APP_ISSUED: Final = "issued"
"""Application whose authorization was issued (final)."""

AUTH_ACTIVE: Final = "active"
"""Authorization issued and not revoked (it may still have expired: compare ``not_after``)."""
AUTH_REVOKED: Final = "revoked"
"""Authorization revoked; it is on its operator's CRL while unexpired."""

authz_cas = Table(
    "authz_cas",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("issuer", String(16), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("certificate", LargeBinary, nullable=False),
    Column("key_id", LargeBinary(20), nullable=False),
    Column("serial_hex", String(40), nullable=False),
    Column("encrypted_key", Text, nullable=True),
    Column("not_before", DateTime(timezone=True), nullable=False),
    Column("not_after", DateTime(timezone=True), nullable=False),
    Column("status", String(8), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revocation_reason", SmallInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("issuer", "generation"),
    CheckConstraint("status IN ('current', 'retired')", name="status"),
    Index(
        "uq_authz_cas_current",
        "issuer",
        unique=True,
        sqlite_where=text("status = 'current'"),
        postgresql_where=text("status = 'current'"),
    ),
)

authz_applications = Table(
    "authz_applications",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("operator", String(16), nullable=False),
    Column("marketplace", String(24), nullable=False),
    Column("shop_id", String(39), nullable=False),
    Column("legal_name", String(64), nullable=False),
    Column("credit_code", String(18), nullable=False),
    Column("card_types", String(32), nullable=False),
    Column("provinces", String(128), nullable=False),
    Column("csr", LargeBinary, nullable=False),
    Column("business_licence", String(64), nullable=False),
    Column("protection_certification", String(200), nullable=True),
    Column("protection_level", SmallInteger, nullable=True),
    Column("contact_key_id", String(32), nullable=False),
    Column("contact_sealed", LargeBinary, nullable=False),
    Column("status", String(10), nullable=False),
    Column("submitted_by", String(64), nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("decision_reason", Text, nullable=True),
    Column("assessment", Text, nullable=True),
    Column("reviewed_by", String(64), nullable=True),
    Column("reviewed_at", DateTime(timezone=True), nullable=True),
    Column("serial_hex", String(40), nullable=True),
    CheckConstraint("status IN ('submitted', 'approved', 'denied', 'issued')", name="status"),
    CheckConstraint(
        "(protection_certification IS NULL) <> (protection_level IS NULL)", name="protection"
    ),
    Index("ix_authz_applications_operator_status", "operator", "status", "id"),
)

authz_authorizations = Table(
    "authz_authorizations",
    metadata,
    Column("serial_hex", String(40), primary_key=True),
    Column("operator", String(16), nullable=False),
    Column("ca_id", _BigId, ForeignKey("authz_cas.id"), nullable=False),
    Column("application_id", _BigId, ForeignKey("authz_applications.id"), nullable=True),
    Column("marketplace", String(24), nullable=False),
    Column("shop_id", String(39), nullable=False),
    Column("legal_name", String(64), nullable=False),
    Column("credit_code", String(18), nullable=False),
    Column("card_types", String(32), nullable=False),
    Column("provinces", String(128), nullable=False),
    Column("not_before", DateTime(timezone=True), nullable=False),
    Column("not_after", DateTime(timezone=True), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("certificate", LargeBinary, nullable=False),
    Column("status", String(8), nullable=False),
    Column("is_current", Boolean, nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revocation_reason", SmallInteger, nullable=True),
    Column("revocation_comment", Text, nullable=True),
    Column("renewed_from", String(40), nullable=True),
    Column("superseded_by", String(40), nullable=True),
    # SHA-256 of the certificate's DER SubjectPublicKeyInfo (migration 0015 filled older rows).
    Column("spki_sha256", LargeBinary(32), nullable=True),
    CheckConstraint("status IN ('active', 'revoked')", name="status"),
    Index(
        "uq_authz_authorizations_current_shop",
        "marketplace",
        "shop_id",
        "operator",
        unique=True,
        sqlite_where=text("is_current"),
        postgresql_where=text("is_current"),
    ),
    Index("ix_authz_authorizations_operator_status", "operator", "status"),
    # The public registry page's searches (migration 0005).
    Index("ix_authz_authorizations_credit_code", "credit_code", "serial_hex"),
    Index("ix_authz_authorizations_legal_name", "legal_name", "serial_hex"),
    # Issuance's key checks (migration 0015).
    Index("ix_authz_authorizations_spki_sha256", "spki_sha256"),
)

authz_crls = Table(
    "authz_crls",
    metadata,
    Column("issuer", String(16), primary_key=True),
    Column("crl_number", BigInteger, nullable=False),
    Column("this_update", DateTime(timezone=True), nullable=False),
    Column("next_update", DateTime(timezone=True), nullable=False),
    Column("der", LargeBinary, nullable=False),
)

authz_state = Table(
    "authz_state",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("generation", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

STATE_ID: Final = 1
"""Primary key of the single ``authz_state`` row."""
