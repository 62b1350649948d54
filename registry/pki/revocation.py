"""Revocation records and CRLs (RFC 5280 section 5).

Two kinds of CRL, built by the same function:

* one per operator, signed by the operator's *current* CA key, listing revoked store certificates
  of every key generation of that operator (RFC 5280 5.2.1: a CA may sign its CRL with another of
  its keys "due to changeover"; the CRL's authorityKeyIdentifier names the key used);
* one from the regulator root, listing revoked operator CA certificates.

One CRL per operator keeps one URL per operator (``/crl/<operator>.crl``) and lets a retired key
stop signing CRLs. :class:`registry.pki.verify.Verifier` accepts it for every generation; OpenSSL
does too, but only with ``-extended_crl`` for certificates issued before a rotation (without it,
``-crl_check`` fails closed with "unable to get certificate CRL"). Callers who need plain OpenSSL
CRL checks across a rotation can instead have each generation sign its own CRL with
:func:`build_crl` and publish it under a per-key URL.

Each carries a CRL number and an authorityKeyIdentifier, and by default a ``nextUpdate`` one day
after ``thisUpdate``: publishers re-sign at every revocation and at least daily. Entries carry the
RFC 5280 reason code, except ``unspecified``, which 5.3.1 says to omit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from registry.clock import as_utc
from registry.pki.authority import CertificateAuthority
from registry.pki.errors import IssuanceError

CRL_LIFETIME: Final = dt.timedelta(days=1)
"""Default distance from a CRL's thisUpdate to its nextUpdate."""

REASON_CODES: Final[Mapping[int, x509.ReasonFlags]] = MappingProxyType(
    {
        0: x509.ReasonFlags.unspecified,
        1: x509.ReasonFlags.key_compromise,
        2: x509.ReasonFlags.ca_compromise,
        3: x509.ReasonFlags.affiliation_changed,
        4: x509.ReasonFlags.superseded,
        5: x509.ReasonFlags.cessation_of_operation,
        6: x509.ReasonFlags.certificate_hold,
        8: x509.ReasonFlags.remove_from_crl,
        9: x509.ReasonFlags.privilege_withdrawn,
        10: x509.ReasonFlags.aa_compromise,
    }
)
"""RFC 5280 CRLReason codes (7 is unassigned) mapped to cryptography's enum."""

_CODES_BY_REASON: Final = {reason: code for code, reason in REASON_CODES.items()}

# Compromise reasons make a certificate untrustworthy from before the recorded time too.
COMPROMISE_REASONS: Final = frozenset(
    {
        x509.ReasonFlags.key_compromise,
        x509.ReasonFlags.ca_compromise,
        x509.ReasonFlags.aa_compromise,
    }
)
"""Reasons whose revocation applies regardless of the revocation date."""


def reason_from_code(code: int) -> x509.ReasonFlags:
    """Return the reason for an RFC 5280 CRLReason code, raising for unassigned codes."""
    try:
        return REASON_CODES[code]
    except KeyError:
        raise IssuanceError(f"{code} is not an RFC 5280 CRLReason code") from None


def reason_code(reason: x509.ReasonFlags) -> int:
    """Return the RFC 5280 CRLReason code of ``reason``."""
    return _CODES_BY_REASON[reason]


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revoked certificate: serial number, when it was revoked, and why."""

    serial_number: int
    revoked_at: dt.datetime
    reason: x509.ReasonFlags = x509.ReasonFlags.unspecified

    def __post_init__(self) -> None:
        if self.serial_number <= 0:
            raise IssuanceError("serial numbers are positive")
        if self.reason is x509.ReasonFlags.remove_from_crl:
            raise IssuanceError("removeFromCRL belongs in delta CRLs, which are not produced")
        object.__setattr__(self, "revoked_at", as_utc(self.revoked_at).replace(microsecond=0))


def build_crl(
    issuer: CertificateAuthority,
    revocations: Iterable[Revocation],
    *,
    crl_number: int,
    this_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    """Build and sign a complete CRL for ``issuer`` listing ``revocations``.

    ``crl_number`` must grow with every CRL the issuer publishes; ``next_update`` defaults to one
    day after ``this_update`` (now).
    """
    if crl_number < 0:
        raise IssuanceError("CRL numbers are non-negative")
    start = as_utc(this_update)
    end = as_utc(next_update) if next_update is not None else start + CRL_LIFETIME
    if end <= start:
        raise IssuanceError("nextUpdate must come after thisUpdate")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(start)
        .next_update(end)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(
                key_identifier=issuer.key_id,
                authority_cert_issuer=None,
                authority_cert_serial_number=None,
            ),
            critical=False,
        )
    )
    seen: set[int] = set()
    for revocation in sorted(revocations, key=lambda entry: entry.serial_number):
        if revocation.serial_number in seen:
            raise IssuanceError(f"serial {revocation.serial_number:x} is listed twice")
        seen.add(revocation.serial_number)
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(revocation.serial_number)
            .revocation_date(revocation.revoked_at)
        )
        if revocation.reason is not x509.ReasonFlags.unspecified:
            entry = entry.add_extension(x509.CRLReason(revocation.reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(issuer.private_key, hashes.SHA256())
