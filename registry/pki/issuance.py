"""Issuing store authorization certificates from PKCS#10 requests.

The store generates its own P-256 key and sends a CSR; its self-signature is the proof that the
store holds the key (RFC 2986), so a CSR whose signature fails is refused with
:class:`CsrSignatureError`. The CSR's subject and extensions are ignored: everything the
certificate asserts comes from the reviewed :class:`StoreAuthorization`.

Store certificate profile::

    subject                C=CN, O=<legal name>, serialNumber=<credit code>,
                           CN=<marketplace>:<shop id>
    serial                 random, positive, at most 159 bits (RFC 5280 4.1.2.2)
    validity               1 year by default, never beyond the issuing CA's
    basicConstraints       critical, cA=FALSE
    keyUsage               critical, digitalSignature
    extKeyUsage            id-kp-realnameStoreAuthorization only: no serverAuth, no clientAuth,
                           so no TLS stack accepts the certificate for a connection
    subjectKeyIdentifier   method 1
    authorityKeyIdentifier keyIdentifier of the issuing operator CA key (picks the generation)
    cRLDistributionPoints  http://<base>/crl/<operator>.crl
    authorityInfoAccess    OCSP http://<base>/ocsp/<operator>
    storeAuthorization     non-critical, the authorization fields (registry.pki._asn1)
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from registry.clock import as_utc
from registry.pki.authority import CertificateAuthority, operator_authority_of
from registry.pki.authorization import StoreAuthorization, authorization_extension
from registry.pki.errors import (
    CsrError,
    CsrSignatureError,
    IssuanceError,
    MalformedExtensionError,
    OperatorMismatchError,
)
from registry.pki.identifiers import random_serial_number
from registry.pki.keys import require_p256_public_key
from registry.pki.oids import STORE_AUTHORIZATION_EKU
from registry.pki.urls import crl_url, ocsp_url

STORE_VALIDITY: Final = dt.timedelta(days=365)
"""Default lifetime of a store authorization certificate."""

_CSR_HASHES: Final = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PKCS#10 request given as PEM or DER."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise CsrError(f"not a PKCS#10 certificate request: {exc}") from exc


def check_csr(csr: x509.CertificateSigningRequest) -> ec.EllipticCurvePublicKey:
    """Return the CSR's P-256 key after checking its self-signature and signature hash."""
    return _checked_key(csr)


# Requests compare and hash by their DER, so a request seen before (a renewal reusing the
# application's CSR, a bulk issuance to one key) skips the signature check; failures raise and
# are never cached.
@functools.lru_cache(maxsize=256)
def _checked_key(csr: x509.CertificateSigningRequest) -> ec.EllipticCurvePublicKey:
    public_key = require_p256_public_key(csr.public_key())
    # The hash is checked before the signature so that a weak request gets a precise error:
    # cryptography does not verify SHA-1 signatures at all, which would read as a bad signature.
    try:
        algorithm = csr.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise CsrError(f"CSR signature algorithm is not supported: {exc}") from exc
    if not isinstance(algorithm, _CSR_HASHES):
        name = algorithm.name if algorithm is not None else "none"
        raise CsrError(f"CSR is signed with {name}; SHA-256 or stronger is required")
    if not csr.is_signature_valid:
        raise CsrSignatureError("CSR signature does not verify with its own public key")
    return public_key


def store_subject(authorization: StoreAuthorization) -> x509.Name:
    """Return the subject name a store certificate gets for ``authorization``."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, authorization.legal_name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, authorization.credit_code),
            x509.NameAttribute(NameOID.COMMON_NAME, authorization.common_name),
        ]
    )


def issue_store_certificate(
    ca: CertificateAuthority,
    csr: x509.CertificateSigningRequest | bytes,
    authorization: StoreAuthorization,
    *,
    base_url: str,
    now: dt.datetime | None = None,
    validity: dt.timedelta = STORE_VALIDITY,
    serial_number: int | None = None,
) -> x509.Certificate:
    """Issue a store authorization certificate under operator CA ``ca`` for the CSR's key.

    ``base_url`` (``http://host[:port]``) prefixes the CRL and OCSP URLs written into the
    certificate. ``serial_number`` is for tests and migrations; leave it ``None`` for a random one.
    """
    request = load_csr(csr) if isinstance(csr, bytes) else csr
    public_key = check_csr(request)
    try:
        ca_operator = operator_authority_of(ca.certificate).operator
    except MalformedExtensionError as exc:
        raise IssuanceError("issuer is not an operator authorization CA") from exc
    if authorization.operator != ca_operator:
        raise OperatorMismatchError(
            f"authorization names operator {authorization.operator!r} but the CA is "
            f"{ca_operator!r}'s"
        )
    start = as_utc(now)
    end = start + validity
    if validity <= dt.timedelta(0):
        raise IssuanceError("validity must be positive")
    if start < ca.not_before or end > ca.not_after:
        raise IssuanceError(
            f"validity {start:%Y-%m-%d}..{end:%Y-%m-%d} falls outside the operator CA's "
            f"{ca.not_before:%Y-%m-%d}..{ca.not_after:%Y-%m-%d}; rotate the CA first"
        )
    serial = serial_number if serial_number is not None else random_serial_number()
    if not 0 < serial < 1 << 159:
        raise IssuanceError("serial number must be positive and at most 159 bits")
    operator = authorization.operator
    return (
        x509.CertificateBuilder()
        .subject_name(store_subject(authorization))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([STORE_AUTHORIZATION_EKU]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(
                key_identifier=ca.key_id,
                authority_cert_issuer=None,
                authority_cert_serial_number=None,
            ),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url(base_url, operator))],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(ocsp_url(base_url, operator)),
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(authorization_extension(authorization), critical=False)
        .sign(ca.private_key, hashes.SHA256())
    )
