"""Database tables of the verification service (SQLAlchemy Core; Alembic migrates them)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)

from registry.schema import NAMING_CONVENTION

# Stable constraint names let error handling recognise which constraint fired on both engines.
metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

operators = Table(
    "operators",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("card_limit", Integer, nullable=False, server_default=text("5")),
    CheckConstraint("kind IN ('basic', 'virtual')", name="kind"),
    CheckConstraint("card_limit >= 1", name="card_limit_positive"),
)

number_segments = Table(
    "number_segments",
    metadata,
    Column("prefix", String(8), primary_key=True),
    Column("operator_id", String(32), ForeignKey("operators.id"), nullable=False),
)

# One row per (document pseudonym, operator): the live-card count the cap is enforced on.
holdings = Table(
    "holdings",
    metadata,
    Column("id_key", LargeBinary(32), nullable=False),
    Column("operator_id", String(32), ForeignKey("operators.id"), nullable=False),
    Column("active", Integer, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("id_key", "operator_id"),
    CheckConstraint("active >= 0", name="active_non_negative"),
)

# States in which a card occupies its MSISDN, its ICCID and a slot under the cap.
LIVE_STATE_SQL = "state <> 'DEACTIVATED'"

cards = Table(
    "cards",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("operator_id", String(32), ForeignKey("operators.id"), nullable=False),
    Column("msisdn", String(11), nullable=False),
    Column("iccid", String(20), nullable=False),
    # NULL only for a legacy subscriber imported without a document (until it registers).
    Column("id_key", LargeBinary(32)),
    Column("document_type", SmallInteger),
    Column("document_masked", String(32)),
    Column("card_type", SmallInteger, nullable=False),
    Column("state", String(24), nullable=False),
    Column("channel", String(8), nullable=False),
    Column("agent_id", String(64)),
    Column("store_authorization_serial", String(64)),
    Column("activated_at", DateTime(timezone=True), nullable=False),
    # Set by a transfer: the minimum interval counts from it for the new holder, while the
    # agent's sales keep counting from activated_at.
    Column("holder_since", DateTime(timezone=True)),
    Column("deactivated_at", DateTime(timezone=True)),
    # 0 only for legacy subscribers who have not completed real-name registration.
    Column("verified", SmallInteger, nullable=False, server_default=text("1")),
    # ServiceStage name: the legacy deadline policy's restriction on a live card.
    Column("service_stage", String(16), nullable=False, server_default=text("'FULL'")),
    # Why a SUSPENDED card is suspended (services.domain.cards.Suspension).
    Column("suspension", String(24)),
    # Industry cards: the enterprise (unified social credit code), scenario and bound device.
    Column("enterprise_id", String(18)),
    Column("scenario", String(32)),
    Column("bound_imei", String(16)),
    # The legacy import a subscriber came from (channel 'legacy').
    Column("import_id", String(64)),
    CheckConstraint("channel IN ('agent', 'online', 'legacy')", name="channel"),
    Index(
        "uq_cards_live_msisdn",
        "msisdn",
        unique=True,
        sqlite_where=text(LIVE_STATE_SQL),
        postgresql_where=text(LIVE_STATE_SQL),
    ),
    Index(
        "uq_cards_live_iccid",
        "iccid",
        unique=True,
        sqlite_where=text(LIVE_STATE_SQL),
        postgresql_where=text(LIVE_STATE_SQL),
    ),
    Index("ix_cards_holder", "id_key", "operator_id"),
    Index("ix_cards_operator_msisdn", "operator_id", "msisdn"),
    Index("ix_cards_state_activated_at", "state", "activated_at"),
    Index("ix_cards_enterprise", "enterprise_id"),
    Index("ix_cards_unverified", "operator_id", "verified", "service_stage"),
)

# Idempotency records: the outcome of every mutating request, keyed by the caller's request id.
requests = Table(
    "requests",
    metadata,
    Column("operator_id", String(32), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("operation", String(32), nullable=False),
    Column("fingerprint", LargeBinary(32), nullable=False),
    Column("card_id", BigId, ForeignKey("cards.id")),
    Column("error_kind", String(32)),
    Column("error_reason", String(64)),
    Column("error_message", Text),
    Column("error_metadata", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("operator_id", "request_id"),
)

# Courier deliveries of online-sold cards, keyed by the shipment token's digest (SHA-256 of its
# signed body). Created at the first check of a token; holds the mismatch count and lock, and
# once delivered the proof of delivery: the presented document's commitment under the token's
# salt (never the number) and the token itself.
shipments = Table(
    "shipments",
    metadata,
    Column("token_digest", LargeBinary(32), primary_key=True),
    Column("card_id", BigId, ForeignKey("cards.id"), nullable=False),
    Column("operator_id", String(32), nullable=False),
    Column("courier", String(32), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("waybill", String(40), nullable=False),
    Column("mismatches", Integer, nullable=False, server_default=text("0")),
    Column("locked", SmallInteger, nullable=False, server_default=text("0")),
    Column("delivered_at", DateTime(timezone=True)),
    Column("courier_staff_id", String(64)),
    Column("presented_commitment", LargeBinary(32)),
    Column("token", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_shipments_card_id", "card_id"),
)
