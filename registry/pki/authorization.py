"""Store authorization fields and their certificate extension (encode, decode, extract).

A :class:`StoreAuthorization` is what an operator vouches for: which shop on which marketplace,
owned by which legal entity (name and unified social credit code), may sell which card types in
which provinces, under which operator's authority. It travels in the non-critical extension
``id-realname-storeAuthorization`` (:data:`registry.pki.oids.STORE_AUTHORIZATION_EXTENSION`); its
ASN.1 and the reasons for the encoder are in :mod:`registry.pki._asn1`. Decoding is strict: any
value the encoder would not produce (wrong version, unsorted or repeated lists, a bad credit code,
both or neither of nationwide/provinces) is refused with :class:`MalformedExtensionError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, TypeVar

from cryptography import x509
from cryptography.hazmat import asn1

from registry.pki._asn1 import AuthorizationScopeAsn1, StoreAuthorizationAsn1
from registry.pki.errors import (
    InvalidAuthorizationError,
    InvalidCreditCodeError,
    InvalidOperatorError,
    MalformedExtensionError,
)
from registry.pki.oids import STORE_AUTHORIZATION_EXTENSION
from registry.pki.operators import validate_operator_id
from registry.pki.scope import CardType, Scope
from registry.pki.uscc import validate_credit_code

EXTENSION_VERSION: Final = 1
"""Version number written into, and the only one accepted from, the extension."""

MAX_LEGAL_NAME: Final = 64
"""Longest legal name, in characters (X.520 ub-organization-name, as it is also the subject O)."""

_MARKETPLACE = re.compile(r"[a-z0-9][a-z0-9.-]{0,23}")
_SHOP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,38}")


@dataclass(frozen=True, slots=True)
class StoreAuthorization:
    """The authorization fields bound into a store certificate.

    ``marketplace`` is 1-24 characters of ``a-z0-9.-``; ``shop_id`` 1-39 of ``A-Za-z0-9._-`` (so
    the subject CN ``marketplace:shop_id`` fits in 64); ``legal_name`` is 1-64 printable
    characters without surrounding blanks; ``credit_code`` is normalised to canonical form.
    """

    operator: str
    marketplace: str
    shop_id: str
    legal_name: str
    credit_code: str
    scope: Scope

    def __post_init__(self) -> None:
        validate_operator_id(self.operator)
        if not _MARKETPLACE.fullmatch(self.marketplace):
            raise InvalidAuthorizationError(
                "marketplace must be 1-24 characters of a-z, 0-9, '.', '-', starting alphanumeric"
            )
        if not _SHOP_ID.fullmatch(self.shop_id):
            raise InvalidAuthorizationError(
                "shop id must be 1-39 characters of A-Z, a-z, 0-9, '.', '_', '-', "
                "starting alphanumeric"
            )
        name = self.legal_name
        if not name or name != name.strip() or len(name) > MAX_LEGAL_NAME:
            raise InvalidAuthorizationError(
                f"legal name must be 1-{MAX_LEGAL_NAME} characters without surrounding blanks"
            )
        # isprintable() is False for control, format, private-use, unassigned and separator
        # characters other than the ASCII space: none of them belongs in a registered name.
        if not name.isprintable():
            raise InvalidAuthorizationError("legal name contains non-printable characters")
        if not isinstance(self.scope, Scope):
            raise InvalidAuthorizationError("scope must be a Scope")
        # Frozen dataclass: store the canonical credit code (trimmed, upper case) in place.
        object.__setattr__(self, "credit_code", validate_credit_code(self.credit_code))

    @property
    def common_name(self) -> str:
        """Subject CN of the store certificate: ``marketplace:shop_id``."""
        return f"{self.marketplace}:{self.shop_id}"


def encode_authorization(authorization: StoreAuthorization) -> bytes:
    """DER-encode the StoreAuthorization extension value (lists sorted, so the output is unique)."""
    scope = authorization.scope
    return asn1.encode_der(
        StoreAuthorizationAsn1(
            version=EXTENSION_VERSION,
            operator=asn1.PrintableString(authorization.operator),
            marketplace=authorization.marketplace,
            shop_id=authorization.shop_id,
            legal_name=authorization.legal_name,
            credit_code=asn1.PrintableString(authorization.credit_code),
            scope=AuthorizationScopeAsn1(
                card_types=sorted(card_type.code for card_type in scope.card_types),
                nationwide=asn1.Null() if scope.nationwide else None,
                provinces=(
                    None
                    if scope.nationwide
                    else [asn1.PrintableString(code) for code in sorted(scope.provinces)]
                ),
            ),
        )
    )


_Ordered = TypeVar("_Ordered", int, str)


def _strictly_ascending(values: list[_Ordered]) -> bool:
    return values == sorted(set(values))


def _decode_scope(raw: AuthorizationScopeAsn1) -> Scope:
    if not raw.card_types or not _strictly_ascending(raw.card_types):
        raise MalformedExtensionError("card types must be a non-empty ascending list")
    card_types = frozenset(CardType.from_code(code) for code in raw.card_types)
    if (raw.nationwide is None) == (raw.provinces is None):
        raise MalformedExtensionError("scope must hold exactly one of nationwide and provinces")
    if raw.provinces is None:
        return Scope(card_types=card_types, provinces=frozenset(), nationwide=True)
    provinces = [code.as_str() for code in raw.provinces]
    if not provinces or not _strictly_ascending(provinces):
        raise MalformedExtensionError("provinces must be a non-empty ascending list")
    return Scope(card_types=card_types, provinces=frozenset(provinces))


def decode_authorization(der: bytes) -> StoreAuthorization:
    """Decode a StoreAuthorization extension value, refusing anything not in canonical form."""
    try:
        raw = asn1.decode_der(StoreAuthorizationAsn1, der)
    except ValueError as exc:
        raise MalformedExtensionError(f"StoreAuthorization is not valid DER: {exc}") from exc
    if raw.version != EXTENSION_VERSION:
        raise MalformedExtensionError(f"unsupported StoreAuthorization version {raw.version}")
    credit_code = raw.credit_code.as_str()
    try:
        authorization = StoreAuthorization(
            operator=raw.operator.as_str(),
            marketplace=raw.marketplace,
            shop_id=raw.shop_id,
            legal_name=raw.legal_name,
            credit_code=credit_code,
            scope=_decode_scope(raw.scope),
        )
    except (InvalidAuthorizationError, InvalidCreditCodeError, InvalidOperatorError) as exc:
        raise MalformedExtensionError(f"StoreAuthorization has an invalid field: {exc}") from exc
    if authorization.credit_code != credit_code:
        raise MalformedExtensionError("credit code is not in canonical form")
    return authorization


def authorization_extension(authorization: StoreAuthorization) -> x509.UnrecognizedExtension:
    """Return the extension object to add (non-critical) to a store certificate."""
    return x509.UnrecognizedExtension(
        STORE_AUTHORIZATION_EXTENSION, encode_authorization(authorization)
    )


def authorization_of(certificate: x509.Certificate) -> StoreAuthorization:
    """Return the authorization carried by a store certificate, raising if absent or malformed."""
    try:
        extension = certificate.extensions.get_extension_for_oid(STORE_AUTHORIZATION_EXTENSION)
    except x509.ExtensionNotFound:
        raise MalformedExtensionError("certificate has no StoreAuthorization extension") from None
    if extension.critical:
        raise MalformedExtensionError("StoreAuthorization extension must not be critical")
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - cryptography API
        raise MalformedExtensionError("StoreAuthorization extension was parsed unexpectedly")
    return decode_authorization(value.value)
