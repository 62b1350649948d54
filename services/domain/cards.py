"""Cards and the commands that change them: the data the verification service speaks in."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from services.domain.documents import Document, DocumentType


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


@dataclass(frozen=True)
class AgentSale:
    """Sold at a physical agent."""

    agent_id: str


@dataclass(frozen=True)
class OnlineSale:
    """Sold online under a store authorization certificate."""

    store_authorization_serial: str


SalesChannel = AgentSale | OnlineSale


@dataclass(frozen=True)
class Card:
    """A card as stored; carries only the masked document number."""

    msisdn: str
    iccid: str
    operator: str
    card_type: CardType
    state: CardState
    document_type: DocumentType
    document_masked: str
    channel: SalesChannel
    activated_at: dt.datetime
    deactivated_at: dt.datetime | None


@dataclass(frozen=True)
class ActivateCard:
    """A validated request to activate a card for a document."""

    request_id: str
    document: Document
    msisdn: str
    iccid: str
    card_type: CardType
    channel: SalesChannel


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
