"""Turns raw request values into validated domain commands, reporting every bad field at once."""

from __future__ import annotations

import datetime as dt
import re

from registry.pki.errors import InvalidCreditCodeError
from registry.pki.uscc import validate_credit_code
from registry.subscribers import DocumentType, normalise_number
from services.domain.attestation import ReaderAttestation
from services.domain.cards import (
    ActivateCard,
    AgentSale,
    CardType,
    DeactivateCard,
    IndustryBinding,
    OnlineSale,
    SalesChannel,
)
from services.domain.documents import Document, document_problem
from services.domain.errors import Violations
from services.domain.holder_names import holder_name_problem
from services.domain.numbers import (
    iccid_problem,
    luhn_valid,
    msisdn_problem,
    request_id_problem,
)

_MAX_RAW_NUMBER = 64
_AGENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
_SERIAL_HEX = re.compile(r"[0-9a-f]{2,64}")
_SCENARIO = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_IMEI = re.compile(r"[0-9]{14,16}")


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


def check_card_type(
    violations: Violations, value: int, path: str = "card_type", *, industry: bool = False
) -> CardType | None:
    """Validates the card type; ``industry`` tells whether the request carries a binding."""
    if value == CardType.PERSONAL.value:
        if industry:
            violations.add("industry", "only CARD_TYPE_INDUSTRY cards carry an industry binding")
            return None
        return CardType.PERSONAL
    if value == CardType.INDUSTRY.value:
        if not industry:
            violations.add(
                path,
                "CARD_TYPE_INDUSTRY needs the industry binding (the enterprise's credit code "
                "and one of its declared scenarios)",
            )
            return None
        return CardType.INDUSTRY
    violations.add(path, "must be CARD_TYPE_PERSONAL or CARD_TYPE_INDUSTRY")
    return None


def check_credit_code(violations: Violations, code: str, path: str) -> str | None:
    """Validates a unified social credit code (GB 32100-2015); returns it in canonical form."""
    if not code:
        violations.add(path, "is required")
        return None
    try:
        return validate_credit_code(code[:64])
    except InvalidCreditCodeError as exc:
        violations.add(path, str(exc))
        return None


def check_scenario_name(violations: Violations, name: str, path: str) -> str | None:
    """Validates a scenario name: 1-32 characters of [a-z0-9-], not starting with '-'."""
    if not _SCENARIO.fullmatch(name):
        violations.add(path, "must be 1-32 characters of [a-z0-9-] (e.g. bus-card, meter)")
        return None
    return name


def imei_problem(imei: str) -> str | None:
    """Why an IMEI (14 digits, 15 with its Luhn check digit) or IMEISV (16) is bad, or None."""
    if not _IMEI.fullmatch(imei):
        return "must be an IMEI (14 or 15 digits) or an IMEISV (16 digits)"
    if len(imei) == 15 and not luhn_valid(imei):
        return "IMEI check digit does not match"
    return None


def check_imei(violations: Violations, imei: str, path: str = "imei") -> str | None:
    """Validates an optional IMEI; returns None when absent or bad."""
    if not imei:
        return None
    problem = imei_problem(imei)
    if problem is not None:
        violations.add(path, problem)
        return None
    return imei


def check_industry_binding(
    violations: Violations, enterprise_id: str, scenario: str, imei: str, path: str = "industry"
) -> IndustryBinding | None:
    """Validates an industry binding: credit code, scenario name and optional device IMEI."""
    bad = len(violations.items)
    code = check_credit_code(violations, enterprise_id, f"{path}.enterprise_id")
    name = check_scenario_name(violations, scenario, f"{path}.scenario")
    device = check_imei(violations, imei, f"{path}.imei")
    if len(violations.items) > bad or code is None or name is None:
        return None
    return IndustryBinding(code, name, device)


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
    industry: tuple[str, str, str] | None = None,
    holder_name: str = "",
    attestation: ReaderAttestation | None = None,
) -> ActivateCard:
    """Builds an ActivateCard command, or raises InvalidArgument listing every bad field.

    ``industry`` is the request's (enterprise_id, scenario, imei), or None when absent.
    """
    v = Violations()
    rid = check_request_id(v, request_id)
    doc = check_document(v, document_type, document_number, today)
    number = check_msisdn(v, msisdn)
    problem = iccid_problem(iccid)
    if problem is not None:
        v.add("iccid", problem)
    ctype = check_card_type(v, card_type, industry=industry is not None)
    channel = check_channel(v, agent_id, store_serial)
    binding = None
    if industry is not None and ctype is CardType.INDUSTRY:
        binding = check_industry_binding(v, *industry)
    name_problem = holder_name_problem(holder_name) if holder_name else None
    if name_problem is not None:
        v.add("holder_name", name_problem)
    v.raise_if_any()
    assert rid and doc and number and ctype and channel
    return ActivateCard(
        rid,
        doc,
        number,
        iccid,
        ctype,
        channel,
        industry=binding,
        holder_name=holder_name or None,
        attestation=attestation,
    )


def deactivate_command(*, request_id: str, msisdn: str) -> DeactivateCard:
    """Builds a DeactivateCard command, or raises InvalidArgument."""
    v = Violations()
    rid = check_request_id(v, request_id)
    number = check_msisdn(v, msisdn)
    v.raise_if_any()
    assert rid and number
    return DeactivateCard(rid, number)
