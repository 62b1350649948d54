"""Plain values the registry workflow reads and writes: applications, authorizations, CAs."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Final

from registry.pki.errors import InvalidAuthorizationError
from registry.pki.scope import NATIONWIDE, CardType, Scope

_SERIAL_HEX: Final = re.compile(r"(?:0x)?([0-9a-f]{1,40})")


def serial_hex(serial: int) -> str:
    """Canonical text form of a certificate serial: lowercase hex, no leading zeros."""
    return format(serial, "x")


def parse_serial(text: str) -> int | None:
    """Return the serial that ``text`` (hex, any case, optional 0x) names, or None if malformed."""
    match = _SERIAL_HEX.fullmatch(text.strip().lower())
    if match is None:
        return None
    value = int(match.group(1), 16)
    return value if value > 0 else None


def encode_card_types(scope: Scope) -> str:
    """Column form of a scope's card types: sorted names joined by commas."""
    return ",".join(sorted(scope.card_types))


def encode_provinces(scope: Scope) -> str:
    """Column form of a scope's provinces: ``all`` or sorted codes joined by commas."""
    return NATIONWIDE if scope.nationwide else ",".join(sorted(scope.provinces))


def decode_scope(card_types: str, provinces: str) -> Scope:
    """The scope stored as :func:`encode_card_types` and :func:`encode_provinces` columns."""
    types = [CardType(name) for name in card_types.split(",")]
    if provinces == NATIONWIDE:
        return Scope.of(types, NATIONWIDE)
    return Scope.of(types, provinces.split(","))


def scope_problem(card_types: list[str], provinces: list[str], nationwide: bool) -> str | None:
    """Why these scope inputs do not make a scope, or None when they do."""
    if nationwide and provinces:
        return "a nationwide scope lists no provinces"
    try:
        Scope.of(card_types, NATIONWIDE if nationwide else provinces)
    except InvalidAuthorizationError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class Contact:
    """The store's contact person for the operator's desk (sealed at rest, never in ``repr``)."""

    name: str = field(repr=False)
    phone: str = field(repr=False)
    email: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Qualifications:
    """What an operator judges a store on: licence, information protection, contact.

    Exactly one of ``protection_certification`` (an information-security certification held,
    e.g. ISO/IEC 27001 with its certificate number) and ``protection_level`` (the graded
    protection assessment level, 1-5, GB/T 22239-2019) is set.
    """

    business_licence: str
    protection_certification: str | None
    protection_level: int | None
    contact: Contact


@dataclass(frozen=True, slots=True)
class ApplicationRequest:
    """A store's application as submitted (validated by ``submit_application``)."""

    operator: str
    marketplace: str
    shop_id: str
    legal_name: str
    credit_code: str
    card_types: tuple[str, ...]
    provinces: tuple[str, ...]
    nationwide: bool
    csr: bytes
    qualifications: Qualifications


@dataclass(frozen=True, slots=True)
class ApplicationRecord:
    """A stored application with its review; ``qualifications.contact`` is opened on read."""

    id: int
    operator: str
    marketplace: str
    shop_id: str
    legal_name: str
    credit_code: str
    scope: Scope
    qualifications: Qualifications
    status: str
    submitted_by: str
    submitted_at: dt.datetime
    decision_reason: str | None
    assessment: str | None
    reviewed_by: str | None
    reviewed_at: dt.datetime | None
    serial_hex: str | None


@dataclass(frozen=True, slots=True)
class AuthorizationRecord:
    """A stored store authorization: the certificate and its fields as columns."""

    serial_hex: str
    operator: str
    ca_id: int
    application_id: int | None
    marketplace: str
    shop_id: str
    legal_name: str
    credit_code: str
    scope: Scope
    not_before: dt.datetime
    not_after: dt.datetime
    issued_at: dt.datetime
    certificate: bytes
    status: str
    is_current: bool
    revoked_at: dt.datetime | None
    revocation_reason: int | None
    revocation_comment: str | None
    renewed_from: str | None
    superseded_by: str | None

    def expired(self, now: dt.datetime) -> bool:
        """Whether the certificate's validity ended before ``now``."""
        return now > self.not_after


@dataclass(frozen=True, slots=True)
class CaRecord:
    """One key generation of the root or of an operator CA (without its private key)."""

    id: int
    issuer: str
    generation: int
    certificate: bytes
    key_id: bytes
    serial_hex: str
    not_before: dt.datetime
    not_after: dt.datetime
    status: str
    revoked_at: dt.datetime | None
    revocation_reason: int | None
