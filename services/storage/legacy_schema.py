"""Tables of the legacy-subscriber feature: imports, deadline policies, sweeps and notices."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    text,
)

from services.storage.schema import BigId, metadata

IMPORT_STATES = ("VALIDATED", "REFUSED", "IMPORTING", "COMPLETED")

# One row per (operator, file): the validation verdict and how far the commit has got. The
# committed count moves in the same transaction as each batch's cards, which is what makes an
# interrupted import resumable without a row imported twice.
legacy_imports = Table(
    "legacy_imports",
    metadata,
    Column("operator_id", String(32), ForeignKey("operators.id"), nullable=False),
    Column("import_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("total_rows", BigInteger, nullable=False),
    Column("bad_rows", BigInteger, nullable=False, server_default=text("0")),
    Column("max_bad_ratio", Float, nullable=False),
    Column("committed_rows", BigInteger, nullable=False, server_default=text("0")),
    Column("imported_rows", BigInteger, nullable=False, server_default=text("0")),
    Column("failed_rows", BigInteger, nullable=False, server_default=text("0")),
    # Documents the import took over the cap with grandfathered pre-policy cards.
    Column("documents_over_cap", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("operator_id", "import_id"),
    CheckConstraint("state IN ('VALIDATED', 'REFUSED', 'IMPORTING', 'COMPLETED')", name="state"),
    CheckConstraint("committed_rows <= total_rows", name="committed_within_total"),
)

# An operator's deadline for unverified legacy subscribers, and the stages that follow it.
legacy_deadline_policies = Table(
    "legacy_deadline_policies",
    metadata,
    Column("operator_id", String(32), ForeignKey("operators.id"), primary_key=True),
    Column("deadline", Date, nullable=False),
    Column("grace_days", Integer, nullable=False, server_default=text("30")),
    Column("termination_days", Integer, nullable=False, server_default=text("30")),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("grace_days >= 1", name="grace_days_positive"),
    CheckConstraint("termination_days >= 1", name="termination_days_positive"),
)

# Progress of the sweep for one date: a crashed run resumes after the last finished batch.
legacy_sweeps = Table(
    "legacy_sweeps",
    metadata,
    Column("sweep_date", Date, primary_key=True),
    Column("last_card_id", BigId, nullable=False, server_default=text("0")),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)

# SMS notices owed before a stage: one per (card, coming stage), so re-runs add none twice.
legacy_notices = Table(
    "legacy_notices",
    metadata,
    Column("card_id", BigId, ForeignKey("cards.id"), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("operator_id", String(32), nullable=False),
    Column("msisdn", String(11), nullable=False),
    Column("effective_on", Date, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("card_id", "stage"),
    CheckConstraint("stage IN ('OUTGOING_BARRED', 'ALL_BARRED', 'TERMINATED')", name="stage"),
    Index("ix_legacy_notices_operator_id_effective_on", "operator_id", "effective_on"),
)
