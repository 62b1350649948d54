"""Daily snapshots of the real-name rate per operator, for the regulator's charts over time."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, PrimaryKeyConstraint, String, Table

from services.storage.schema import metadata

compliance_snapshots = Table(
    "compliance_snapshots",
    metadata,
    Column("day", String(10), nullable=False),
    Column("operator_id", String(32), ForeignKey("operators.id"), nullable=False),
    Column("live_cards", BigInteger, nullable=False),
    Column("verified_cards", BigInteger, nullable=False),
    PrimaryKeyConstraint("day", "operator_id"),
)
