"""Tables of the tamper-evident audit trail (services.domain.audit describes the chain)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
)

from services.storage.schema import metadata

# Ids are assigned by the appender under the chain lock, gap-free: a gap means a deletion.
audit_records = Table(
    "audit_records",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("principal", String(96), nullable=False),
    Column("method", String(160), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("subject", LargeBinary(32)),
    Column("chain", LargeBinary(32), nullable=False),
    Index("ix_audit_records_subject", "subject", "id"),
    Index("ix_audit_records_principal", "principal", "id"),
    Index("ix_audit_records_at", "at"),
)

# The single row that serialises appends: the head of the chain, and the base it starts from
# after pruning (the last pruned record's id and chain value).
audit_state = Table(
    "audit_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("head_id", BigInteger, nullable=False),
    Column("head_chain", LargeBinary(32), nullable=False),
    Column("base_id", BigInteger, nullable=False),
    Column("base_chain", LargeBinary(32), nullable=False),
    CheckConstraint("id = 1", name="singleton"),
)

# Heads anchored into the transparency log, with the leaf hash of the audit-digest entry.
audit_anchors = Table(
    "audit_anchors",
    metadata,
    Column("head_id", BigInteger, primary_key=True, autoincrement=False),
    Column("head_chain", LargeBinary(32), nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("anchored_at", DateTime(timezone=True), nullable=False),
)
