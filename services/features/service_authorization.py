"""AuthorizeService: may this card use voice, SMS or data now? Asked per session by the network.

The common case is one indexed read (the card, joined to its scenario's APNs) in a read-only
transaction. Only a device-binding breach writes: the card is suspended (DEVICE_MISMATCH) by one
conditional update. Rules, in order: deactivated; not delivered; suspended (the suspension is
the reason); device binding (a bound card must present its IMEI, compared on the first 14
digits: TAC and serial, so an IMEISV matches its IMEI); the legacy deadline stage (ALL_BARRED
refuses everything, OUTGOING_BARRED refuses outgoing voice/SMS and all data); industry cards
carry data only, on their scenario's APNs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from registry.subscribers import mask_msisdn
from services.domain.cards import CardState, CardType, ServiceStage, Suspension
from services.domain.errors import NotFound
from services.features.industry import SCENARIO_NOT_DECLARED
from services.storage import industry_repo as repo
from services.storage.database import Database
from services.storage.industry_repo import SessionCard
from services.storage.rawsql import Tx

DEACTIVATED = "DEACTIVATED"
NOT_DELIVERED = "NOT_DELIVERED"
IMEI_REQUIRED = "IMEI_REQUIRED"
ALL_BARRED = "ALL_BARRED"
OUTGOING_BARRED = "OUTGOING_BARRED"
INDUSTRY_DATA_ONLY = "INDUSTRY_DATA_ONLY"
APN_NOT_ALLOWED = "APN_NOT_ALLOWED"

_DEVICE_DIGITS = 14


class ServiceType(Enum):
    """The service a session asks for; values match the proto enum numbers."""

    VOICE = 1
    SMS = 2
    DATA = 3


class Direction(Enum):
    """Which way a call or SMS goes; values match the proto enum numbers."""

    OUTGOING = 1
    INCOMING = 2


@dataclass(frozen=True)
class SessionQuery:
    """A validated AuthorizeService question: the card (by msisdn or iccid) and the session."""

    by: str  # "msisdn" or "iccid"
    value: str
    service: ServiceType
    direction: Direction
    imei: str | None
    apn: str | None


@dataclass(frozen=True)
class ServiceVerdict:
    """The answer: allowed, or the machine-readable reason it is not."""

    allowed: bool
    reason: str = ""
    detail: str = ""


ALLOWED = ServiceVerdict(True)


def _refuse(reason: str, detail: str) -> ServiceVerdict:
    return ServiceVerdict(False, reason, detail)


def _state_verdict(card: SessionCard) -> ServiceVerdict | None:
    if card.state is CardState.DEACTIVATED:
        return _refuse(DEACTIVATED, "the card is deactivated")
    if card.state is CardState.PENDING_DELIVERY:
        return _refuse(NOT_DELIVERED, "the card has not been handed over by the courier yet")
    if card.state is CardState.SUSPENDED:
        reason = card.suspension or CardState.SUSPENDED.value
        return _refuse(reason, f"the card is suspended ({reason})")
    return None


def _stage_verdict(card: SessionCard, query: SessionQuery) -> ServiceVerdict | None:
    if card.service_stage is ServiceStage.ALL_BARRED:
        return _refuse(ALL_BARRED, "real-name registration overdue: all service is barred")
    outgoing = query.service is ServiceType.DATA or query.direction is Direction.OUTGOING
    if card.service_stage is ServiceStage.OUTGOING_BARRED and outgoing:
        return _refuse(OUTGOING_BARRED, "real-name registration overdue: outgoing service barred")
    return None


def _industry_verdict(card: SessionCard, query: SessionQuery) -> ServiceVerdict | None:
    if card.card_type is not CardType.INDUSTRY:
        return None
    if query.service is not ServiceType.DATA:
        return _refuse(INDUSTRY_DATA_ONLY, "industry cards carry data only")
    if card.apns is None:
        return _refuse(SCENARIO_NOT_DECLARED, f"scenario {card.scenario!r} is no longer declared")
    if query.apn is None or query.apn not in card.apns:
        return _refuse(APN_NOT_ALLOWED, f"the APN is not one of scenario {card.scenario!r}'s")
    return None


class ServiceAuthorizer:
    """Answers network elements' per-session questions about the calling operator's cards."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def authorize(self, operator_id: str, query: SessionQuery) -> ServiceVerdict:
        """The verdict for one session; NOT_FOUND only for a card the operator never had."""

        def read(tx: Tx) -> SessionCard | None:
            return repo.session_card(tx, operator_id, query.by, query.value)

        card = self._db.run_tx(read, readonly=True)
        if card is None:
            shown = mask_msisdn(query.value) if query.by == "msisdn" else query.value
            raise NotFound(f"operator {operator_id} has no card {shown}", reason="CARD_NOT_FOUND")
        verdict = _state_verdict(card)
        if verdict is not None:
            return verdict
        if card.bound_imei is not None:
            if query.imei is None:
                return _refuse(IMEI_REQUIRED, "the card is bound to a device: send its IMEI")
            if query.imei[:_DEVICE_DIGITS] != card.bound_imei[:_DEVICE_DIGITS]:
                self._db.run_tx(
                    lambda tx: repo.suspend_for_device(tx, card.id, Suspension.DEVICE_MISMATCH)
                )
                return _refuse(
                    Suspension.DEVICE_MISMATCH,
                    "the card appeared in another device than the one it is bound to; "
                    "it is suspended",
                )
        return _stage_verdict(card, query) or _industry_verdict(card, query) or ALLOWED
