"""Tables of industry cards: enterprises, their declared scenarios and their quota counter."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)

from services.storage.schema import cards, metadata

# One row per (operator, enterprise). ``active`` is the live industry-card count the quota is
# enforced on, changed like ``holdings.active`` by one conditional statement per activation.
enterprises = Table(
    "enterprises",
    metadata,
    Column("operator_id", String(32), ForeignKey("operators.id"), nullable=False),
    Column("credit_code", String(18), nullable=False),
    Column("name", String(128), nullable=False),
    # The responsible person's document: pseudonym key and masked number, never the number.
    Column("responsible_key", LargeBinary(32), nullable=False),
    Column("responsible_type", SmallInteger, nullable=False),
    Column("responsible_masked", String(32), nullable=False),
    Column("card_quota", Integer, nullable=False),
    Column("active", Integer, nullable=False, server_default=text("0")),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("operator_id", "credit_code"),
    CheckConstraint("card_quota >= 1", name="card_quota_positive"),
    CheckConstraint("active >= 0", name="active_non_negative"),
)

# Declared scenarios; ``apns`` is a JSON array of lower-case APN network identifiers.
enterprise_scenarios = Table(
    "enterprise_scenarios",
    metadata,
    Column("operator_id", String(32), nullable=False),
    Column("credit_code", String(18), nullable=False),
    Column("scenario", String(32), nullable=False),
    Column("apns", Text, nullable=False),
    PrimaryKeyConstraint("operator_id", "credit_code", "scenario"),
    ForeignKeyConstraint(
        ["operator_id", "credit_code"], ["enterprises.operator_id", "enterprises.credit_code"]
    ),
)

# AuthorizeService finds a card by ICCID among the operator's cards, deactivated ones included.
ix_cards_operator_iccid = Index("ix_cards_operator_iccid", cards.c.operator_id, cards.c.iccid)
