"""Turns raw request values into validated domain commands, reporting every bad field at once."""

from __future__ import annotations

import datetime as dt
import re

from services.domain.cards import (
    ActivateCard,
    AgentSale,
    CardType,
    DeactivateCard,
    OnlineSale,
    SalesChannel,
)
from services.domain.documents import Document, DocumentType, document_problem, normalise_number
from services.domain.errors import Violations
from services.domain.numbers import iccid_problem, msisdn_problem, request_id_problem

_MAX_RAW_NUMBER = 64
_AGENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
_SERIAL_HEX = re.compile(r"[0-9a-f]{2,64}")


def check_document(
    violations: Violations, type_value: int, number: str, today: dt.date, path: str = "document"
) -> Document | None:
    """Validates a document's type and number; records problems and returns None if bad."""
    try:
        doc_type = DocumentType(type_value)
    except ValueError:
        violations.add(f"{path}.type", "must be a known document type")
        return None
    if len(number) > _MAX_RAW_NUMBER:
        violations.add(f"{path}.number", "is too long")
        return None
    normalised = normalise_number(number)
    if not normalised:
        violations.add(f"{path}.number", "is required")
        return None
    problem = document_problem(doc_type, normalised, today)
    if problem is not None:
        violations.add(f"{path}.number", problem)
        return None
    return Document(doc_type, normalised)


def check_card_type(violations: Violations, value: int, path: str = "card_type") -> CardType | None:
    """Validates the card type of a personal-document request."""
    if value == CardType.PERSONAL.value:
        return CardType.PERSONAL
    if value == CardType.INDUSTRY.value:
        violations.add(
            path,
            "industry cards are bound to an enterprise and its scenario, not a personal "
            "document; they are not activated through this call",
        )
        return None
    violations.add(path, "must be CARD_TYPE_PERSONAL")
    return None


def check_msisdn(violations: Violations, msisdn: str, path: str = "msisdn") -> str | None:
    """Validates an MSISDN's format."""
    problem = msisdn_problem(msisdn)
    if problem is not None:
        violations.add(path, problem)
        return None
    return msisdn


def check_request_id(violations: Violations, request_id: str) -> str | None:
    """Validates an idempotency key."""
    problem = request_id_problem(request_id)
    if problem is not None:
        violations.add("request_id", problem)
        return None
    return request_id


def check_channel(
    violations: Violations, agent_id: str | None, store_serial: str | None
) -> SalesChannel | None:
    """Validates the sales channel: exactly one of an agent id or a store authorization serial."""
    if agent_id is not None:
        if not _AGENT_ID.fullmatch(agent_id):
            violations.add("channel.agent.agent_id", "must be 1-64 characters of [A-Za-z0-9._:-]")
            return None
        return AgentSale(agent_id)
    if store_serial is not None:
        serial = store_serial.lower().removeprefix("0x")
        if not _SERIAL_HEX.fullmatch(serial):
            violations.add(
                "channel.online.store_authorization_serial", "must be 2-64 hexadecimal digits"
            )
            return None
        return OnlineSale(serial)
    violations.add("channel", "must name an agent or an online store authorization")
    return None


def activate_command(
    *,
    request_id: str,
    document_type: int,
    document_number: str,
    msisdn: str,
    iccid: str,
    card_type: int,
    agent_id: str | None,
    store_serial: str | None,
    today: dt.date,
) -> ActivateCard:
    """Builds an ActivateCard command, or raises InvalidArgument listing every bad field."""
    v = Violations()
    rid = check_request_id(v, request_id)
    doc = check_document(v, document_type, document_number, today)
    number = check_msisdn(v, msisdn)
    problem = iccid_problem(iccid)
    if problem is not None:
        v.add("iccid", problem)
    ctype = check_card_type(v, card_type)
    channel = check_channel(v, agent_id, store_serial)
    v.raise_if_any()
    assert rid and doc and number and ctype and channel
    return ActivateCard(rid, doc, number, iccid, ctype, channel)


def deactivate_command(*, request_id: str, msisdn: str) -> DeactivateCard:
    """Builds a DeactivateCard command, or raises InvalidArgument."""
    v = Violations()
    rid = check_request_id(v, request_id)
    number = check_msisdn(v, msisdn)
    v.raise_if_any()
    assert rid and number
    return DeactivateCard(rid, number)
