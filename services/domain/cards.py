"""Cards and the commands that change them: the data the verification service speaks in."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from registry.subscribers import DocumentType
from services.domain.attestation import ReaderAttestation
from services.domain.documents import Document


class CardType(Enum):
    """Personal or industry (IoT) card; values match the proto enum numbers."""

    PERSONAL = 1
    INDUSTRY = 2


class CardState(Enum):
    """Lifecycle state of a card."""

    ACTIVE = "ACTIVE"
    DEACTIVATED = "DEACTIVATED"
    PENDING_DELIVERY = "PENDING_DELIVERY"
    """Sold online, awaiting the courier's confirmed handover: holds a slot, cannot be used."""
    SUSPENDED = "SUSPENDED"
    """Live (slot and number held) but barred from all service until ``Card.suspension`` clears."""


class ServiceStage(Enum):
    """Where a live card stands in the legacy real-name deadline policy; values match the proto."""

    FULL = 1
    OUTGOING_BARRED = 2
    ALL_BARRED = 3


class Suspension:
    """Reasons a card is SUSPENDED (stored in ``cards.suspension``)."""

    DISPUTED = "DISPUTED"
    DEVICE_MISMATCH = "DEVICE_MISMATCH"
    REVERIFICATION = "REVERIFICATION"


@dataclass(frozen=True)
class AgentSale:
    """Sold at a physical agent."""

    agent_id: str


@dataclass(frozen=True)
class OnlineSale:
    """Sold online under a store authorization certificate."""

    store_authorization_serial: str


@dataclass(frozen=True)
class LegacyRecord:
    """Registered before the policy; brought in by a bulk legacy import."""

    import_id: str


SalesChannel = AgentSale | OnlineSale | LegacyRecord


@dataclass(frozen=True)
class IndustryBinding:
    """The enterprise and scenario an industry card is bound to, and its optional device."""

    enterprise_id: str
    scenario: str
    imei: str | None = None


@dataclass(frozen=True)
class Card:
    """A card as stored; carries only the masked document number.

    A legacy subscriber imported without a document has ``document_type`` None and an empty
    ``document_masked`` until it completes registration.
    """

    msisdn: str
    iccid: str
    operator: str
    card_type: CardType
    state: CardState
    document_type: DocumentType | None
    document_masked: str
    channel: SalesChannel
    activated_at: dt.datetime
    deactivated_at: dt.datetime | None
    verified: bool = True
    service_stage: ServiceStage = ServiceStage.FULL
    suspension: str | None = None
    industry: IndustryBinding | None = None


@dataclass(frozen=True)
class ActivateCard:
    """A validated request to activate a card for a document."""

    request_id: str
    document: Document
    msisdn: str
    iccid: str
    card_type: CardType
    channel: SalesChannel
    industry: IndustryBinding | None = None
    holder_name: str | None = None
    attestation: ReaderAttestation | None = None


@dataclass(frozen=True)
class DeactivateCard:
    """A validated request to deactivate a card."""

    request_id: str
    msisdn: str


@dataclass(frozen=True)
class Eligibility:
    """The answer to "can this document get another card from this operator?"."""

    eligible: bool
    active_cards: int
    limit: int
    reason: str
