"""ASN.1 schemas of the two realname certificate extensions, declared with ``cryptography``.

Why this encoder: cryptography (>= 47) ships ``cryptography.hazmat.asn1``, a declarative DER
encoder/decoder implemented in Rust (the same ``rust-asn1`` that parses certificates). Declaring the
structures here means no hand-written TLV code: strict DER is enforced on decode (minimal lengths
and integers, no explicitly encoded DEFAULTs, exact tags, valid UTF-8 and PrintableString, no
trailing bytes), and encode produces DER. The API is documented but still marked unstable by
cryptography, so it is confined to this private module; the public functions in
:mod:`registry.pki.authorization` and :mod:`registry.pki.authority` translate to and from plain
dataclasses and are what callers and tests use. ``x509.UnrecognizedExtension`` carries the bytes
in and out of certificates.

The modules::

    StoreAuthorization ::= SEQUENCE {                     -- extension 1.3.6.1.4.1.32473.1.1.1
        version      INTEGER,                             -- 1
        operator     PrintableString,                     -- operator id, e.g. "cmcc"
        marketplace  UTF8String,                          -- marketplace id, e.g. "taobao"
        shopId       UTF8String,                          -- the shop's id on that marketplace
        legalName    UTF8String,                          -- registered name of the store's owner
        creditCode   PrintableString (SIZE (18)),         -- GB 32100-2015 code, check verified
        scope        AuthorizationScope }

    AuthorizationScope ::= SEQUENCE {
        cardTypes    SEQUENCE SIZE (1..MAX) OF INTEGER { personal(1), industry(2) },
        nationwide   [0] IMPLICIT NULL OPTIONAL,
        provinces    [1] IMPLICIT SEQUENCE SIZE (1..MAX) OF PrintableString (SIZE (2)) OPTIONAL }
        -- exactly one of nationwide and provinces is present; both lists ascending, no repeats

    OperatorAuthority ::= SEQUENCE {                      -- extension 1.3.6.1.4.1.32473.1.1.3
        version      INTEGER,                             -- 1
        operator     PrintableString,                     -- operator id
        kind         INTEGER { basic(1), virtual(2) } }

Validity and serial number are those of the certificate itself. Profile rules the schema cannot
express (version, value ranges, ordering, the nationwide/provinces exclusivity) are enforced by the
decoders that use these classes, which refuse anything the encoders would not have produced.
"""

from __future__ import annotations

from typing import Annotated

from cryptography.hazmat import asn1


@asn1.sequence
class AuthorizationScopeAsn1:
    """DER shape of ``AuthorizationScope``."""

    card_types: list[int]
    nationwide: Annotated[asn1.Null | None, asn1.Implicit(0)]
    provinces: Annotated[list[asn1.PrintableString] | None, asn1.Implicit(1)]


@asn1.sequence
class StoreAuthorizationAsn1:
    """DER shape of ``StoreAuthorization``."""

    version: int
    operator: asn1.PrintableString
    marketplace: str
    shop_id: str
    legal_name: str
    credit_code: asn1.PrintableString
    scope: AuthorizationScopeAsn1


@asn1.sequence
class OperatorAuthorityAsn1:
    """DER shape of ``OperatorAuthority``."""

    version: int
    operator: asn1.PrintableString
    kind: int
