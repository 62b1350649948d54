"""OCSP (RFC 6960): request parsing and signed responses for an operator's CA.

Responses are signed by the operator CA key that issued the certificate asked about, not by a
delegated responder: RFC 6960 4.2.2.2 accepts the issuing CA as signer with no extra certificate,
``openssl ocsp`` then needs only the CA certificate it already has, and there is no responder
certificate to issue, rotate and revoke. The cost is that each CA key generation stays online for
OCSP until the last certificate it issued has expired; :class:`OcspResponder` takes every
generation of one operator and picks the key whose hash the request's CertID carries.

Answers follow RFC 6960 2.2: ``good``, ``revoked`` (with time and reason) or ``unknown`` — the
latter also for a CertID naming an issuer this responder does not serve, and for a serial the
issuer never issued. A malformed request gets the unsigned ``malformedRequest`` status. A nonce in
the request (RFC 8954) is echoed in the response.

The HTTP endpoint (GET and POST at ``/ocsp/<operator>``) only has to decode the request bytes and
call ``OcspResponder(generations).answer(request_der, lookup)`` (or :func:`answer_ocsp`), with
``lookup(serial) -> CertificateStatus`` reading storage, and serve the bytes it returns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from registry.clock import as_utc
from registry.pki.authority import CertificateAuthority
from registry.pki.errors import IssuanceError, OcspRequestError

RESPONSE_LIFETIME: Final = dt.timedelta(hours=1)
"""Default distance from a response's thisUpdate to its nextUpdate (how long it may be cached)."""


@dataclass(frozen=True, slots=True)
class CertificateStatus:
    """What the registry knows about one serial number; returned by a :data:`StatusLookup`.

    ``issuer_key_id`` (the issuing CA's subjectKeyIdentifier), when known, lets the responder
    answer ``unknown`` for a CertID naming another key generation than the one that issued it.
    """

    status: ocsp.OCSPCertStatus
    revoked_at: dt.datetime | None = None
    reason: x509.ReasonFlags | None = None
    issuer_key_id: bytes | None = None

    def __post_init__(self) -> None:
        revoked = self.status is ocsp.OCSPCertStatus.REVOKED
        if revoked != (self.revoked_at is not None):
            raise IssuanceError("a revocation time is given exactly for revoked certificates")
        if not revoked and self.reason is not None:
            raise IssuanceError("only revoked certificates have a revocation reason")

    @classmethod
    def good(cls, issuer_key_id: bytes | None = None) -> CertificateStatus:
        """Status of an issued, unrevoked certificate."""
        return cls(ocsp.OCSPCertStatus.GOOD, issuer_key_id=issuer_key_id)

    @classmethod
    def revoked(
        cls,
        revoked_at: dt.datetime,
        reason: x509.ReasonFlags | None = None,
        issuer_key_id: bytes | None = None,
    ) -> CertificateStatus:
        """Status of a revoked certificate."""
        return cls(
            ocsp.OCSPCertStatus.REVOKED,
            revoked_at=as_utc(revoked_at),
            reason=reason,
            issuer_key_id=issuer_key_id,
        )

    @classmethod
    def unknown(cls) -> CertificateStatus:
        """Status of a serial number the CA never issued."""
        return cls(ocsp.OCSPCertStatus.UNKNOWN)


StatusLookup = Callable[[int], CertificateStatus]
"""Callback mapping a serial number to its status; the storage layer provides it."""


@dataclass(frozen=True, slots=True)
class OcspQuery:
    """The single CertID of a parsed OCSP request, plus its nonce."""

    serial_number: int
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    hash_algorithm: hashes.HashAlgorithm
    nonce: bytes | None


def parse_ocsp_request(der: bytes) -> OcspQuery:
    """Parse a DER OCSP request asking about exactly one certificate."""
    try:
        request = ocsp.load_der_ocsp_request(der)
        nonce: bytes | None
        try:
            nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            nonce = None
        return OcspQuery(
            serial_number=request.serial_number,
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            hash_algorithm=request.hash_algorithm,
            nonce=nonce,
        )
    except (ValueError, x509.UnsupportedGeneralNameType) as exc:
        raise OcspRequestError(f"not a single-certificate OCSP request: {exc}") from exc


def _issuer_hashes(
    authority: CertificateAuthority, algorithm: hashes.HashAlgorithm
) -> tuple[bytes, bytes]:
    # RFC 6960 4.1.1: hash of the issuer's DER subject and of its subjectPublicKey BIT STRING
    # contents, which for an EC key is the uncompressed point.
    name = hashes.Hash(algorithm)
    name.update(authority.subject.public_bytes())
    key = hashes.Hash(algorithm)
    key.update(
        authority.certificate.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )
    return name.finalize(), key.finalize()


def build_ocsp_response(
    signer: CertificateAuthority,
    query: OcspQuery,
    status: CertificateStatus,
    *,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = RESPONSE_LIFETIME,
) -> bytes:
    """Return a DER OCSP response for ``query`` with ``status``, signed by ``signer``."""
    produced = as_utc(now)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=query.issuer_name_hash,
            issuer_key_hash=query.issuer_key_hash,
            serial_number=query.serial_number,
            algorithm=query.hash_algorithm,
            cert_status=status.status,
            this_update=produced,
            next_update=produced + lifetime,
            revocation_time=status.revoked_at,
            revocation_reason=status.reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
    )
    if query.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
    response = builder.sign(signer.private_key, hashes.SHA256())
    return response.public_bytes(serialization.Encoding.DER)


def unsuccessful_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """Return an unsigned OCSP error response (malformedRequest, internalError, tryLater, ...)."""
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return response.public_bytes(serialization.Encoding.DER)


class OcspResponder:
    """Answers OCSP requests for one operator, across all of its CA key generations."""

    def __init__(
        self,
        authorities: Sequence[CertificateAuthority],
        *,
        lifetime: dt.timedelta = RESPONSE_LIFETIME,
    ) -> None:
        """Serve ``authorities`` (one operator's CA generations, current last)."""
        if not authorities:
            raise IssuanceError("an OCSP responder needs at least one CA")
        subjects = {authority.subject for authority in authorities}
        if len(subjects) != 1:
            raise IssuanceError("an OCSP responder serves the generations of a single CA name")
        self._authorities = tuple(authorities)
        self._lifetime = lifetime
        # CertID hashes of every generation, per hash algorithm, computed on first use.
        self._by_algorithm: dict[str, dict[tuple[bytes, bytes], CertificateAuthority]] = {}

    def _issuer_for(self, query: OcspQuery) -> CertificateAuthority | None:
        algorithm = query.hash_algorithm
        table = self._by_algorithm.get(algorithm.name)
        if table is None:
            table = {
                _issuer_hashes(authority, algorithm): authority for authority in self._authorities
            }
            self._by_algorithm[algorithm.name] = table
        return table.get((query.issuer_name_hash, query.issuer_key_hash))

    def respond(
        self, query: OcspQuery, lookup: StatusLookup, *, now: dt.datetime | None = None
    ) -> bytes:
        """Return the signed DER response to an already parsed request."""
        issuer = self._issuer_for(query)
        if issuer is None:
            # Not one of ours: RFC 6960 2.2 "unknown", signed by the current key.
            return build_ocsp_response(
                self._authorities[-1],
                query,
                CertificateStatus.unknown(),
                now=now,
                lifetime=self._lifetime,
            )
        status = lookup(query.serial_number)
        if status.issuer_key_id is not None and status.issuer_key_id != issuer.key_id:
            status = CertificateStatus.unknown()
        return build_ocsp_response(issuer, query, status, now=now, lifetime=self._lifetime)

    def answer(
        self, request_der: bytes, lookup: StatusLookup, *, now: dt.datetime | None = None
    ) -> bytes:
        """Return the DER response to DER request bytes, ``malformedRequest`` if unparseable."""
        try:
            query = parse_ocsp_request(request_der)
        except OcspRequestError:
            return unsuccessful_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        return self.respond(query, lookup, now=now)


def answer_ocsp(
    request_der: bytes,
    lookup: StatusLookup,
    *,
    authorities: Sequence[CertificateAuthority],
    now: dt.datetime | None = None,
) -> bytes:
    """Answer one DER OCSP request for the operator whose CA generations are ``authorities``."""
    return OcspResponder(authorities).answer(request_der, lookup, now=now)
