"""The trust hierarchy: the regulator root CA and one authorization CA per operator.

::

    regulator root CA        self-signed, 20 years, pathLen 1, keyCertSign + cRLSign
      └─ operator CA         one per operator (and per key generation), pathLen 0,
           │                 keyCertSign + cRLSign, OperatorAuthority extension
           └─ store cert     see :mod:`registry.pki.issuance`

An operator CA certificate carries the non-critical OperatorAuthority extension (see
:mod:`registry.pki._asn1`), which binds the CA key to an operator id under the root's signature; a
verifier compares it with the operator named inside each store authorization, so one operator's CA
cannot vouch for a store in another operator's name.

Key rotation issues a new operator CA certificate for a new key under the same subject name. The
new certificate has a new subjectKeyIdentifier; store certificates carry the issuing key's id in
their authorityKeyIdentifier, which is how a verifier picks the right generation, and those issued
under the old key stay valid until they expire. The old key is retained only to sign OCSP responses
for its own certificates (RFC 6960 requires the issuing key or a responder it certified); the
operator's CRL is signed by the current key and covers every generation (RFC 5280 5.2.1 allows a CA
to sign its CRL with a different key of the same name "due to changeover").

Name constraints are not used: the store subjects an operator certifies (any legal name, any
credit code) form no subtree that could be constrained, and the OperatorAuthority binding above is
the constraint that matters.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from registry.clock import as_utc
from registry.pki._asn1 import OperatorAuthorityAsn1
from registry.pki.errors import (
    IssuanceError,
    MalformedExtensionError,
    UnsupportedKeyError,
)
from registry.pki.identifiers import key_identifier, random_serial_number, subject_key_id
from registry.pki.keys import (
    Passphrase,
    generate_private_key,
    load_private_key,
    require_p256_public_key,
    save_private_key,
)
from registry.pki.oids import OPERATOR_AUTHORITY_EXTENSION
from registry.pki.operators import KNOWN_OPERATORS, OperatorKind, validate_operator_id
from registry.pki.urls import root_crl_url

ROOT_VALIDITY: Final = dt.timedelta(days=20 * 365 + 5)
"""Default lifetime of the regulator root (20 years, leap days included)."""

OPERATOR_CA_VALIDITY: Final = dt.timedelta(days=10 * 365 + 3)
"""Default lifetime of an operator CA certificate (10 years)."""

OPERATOR_NAMES: Final = {
    "cmcc": "China Mobile",
    "cucc": "China Unicom",
    "ctcc": "China Telecom",
    "vno1": "Virtual Operator 1",
    "vno2": "Virtual Operator 2",
}
"""Organisation names used in the subject of the demo operators' CA certificates."""

_SIGNATURE_HASH: Final = hashes.SHA256()


@dataclass(frozen=True, slots=True)
class OperatorAuthority:
    """Decoded OperatorAuthority extension: which operator a CA certificate belongs to."""

    operator: str
    kind: OperatorKind


def encode_operator_authority(value: OperatorAuthority) -> bytes:
    """DER-encode an OperatorAuthority extension value."""
    validate_operator_id(value.operator)
    return asn1.encode_der(
        OperatorAuthorityAsn1(
            version=1,
            operator=asn1.PrintableString(value.operator),
            kind=int(value.kind),
        )
    )


def decode_operator_authority(der: bytes) -> OperatorAuthority:
    """Decode an OperatorAuthority extension value, refusing anything malformed."""
    try:
        raw = asn1.decode_der(OperatorAuthorityAsn1, der)
    except ValueError as exc:
        raise MalformedExtensionError(f"OperatorAuthority is not valid DER: {exc}") from exc
    if raw.version != 1:
        raise MalformedExtensionError(f"unsupported OperatorAuthority version {raw.version}")
    try:
        kind = OperatorKind(raw.kind)
        operator = validate_operator_id(raw.operator.as_str())
    except ValueError as exc:
        raise MalformedExtensionError(f"OperatorAuthority has an invalid field: {exc}") from exc
    return OperatorAuthority(operator=operator, kind=kind)


def operator_authority_of(certificate: x509.Certificate) -> OperatorAuthority:
    """Return the OperatorAuthority of an operator CA certificate, raising if it has none."""
    try:
        extension = certificate.extensions.get_extension_for_oid(OPERATOR_AUTHORITY_EXTENSION)
    except x509.ExtensionNotFound:
        raise MalformedExtensionError("certificate has no OperatorAuthority extension") from None
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - cryptography API
        raise MalformedExtensionError("OperatorAuthority extension was parsed unexpectedly")
    return decode_operator_authority(value.value)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA certificate with its private key; the key never appears in ``repr``."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        public = require_p256_public_key(self.certificate.public_key())
        if _point(public) != _point(self.private_key.public_key()):
            raise UnsupportedKeyError("private key does not belong to the CA certificate")
        try:
            constraints = self.certificate.extensions.get_extension_for_class(
                x509.BasicConstraints
            ).value
        except x509.ExtensionNotFound:
            raise IssuanceError("certificate has no basicConstraints; not a CA") from None
        if not constraints.ca:
            raise IssuanceError("certificate is not a CA certificate")

    @property
    def subject(self) -> x509.Name:
        """Subject name of the CA certificate."""
        return self.certificate.subject

    @property
    def key_id(self) -> bytes:
        """subjectKeyIdentifier of the CA certificate (its key id)."""
        ski = subject_key_id(self.certificate)
        return ski if ski is not None else key_identifier(self.private_key.public_key())

    @property
    def operator(self) -> str | None:
        """Operator id of an operator CA, ``None`` for the root."""
        try:
            return operator_authority_of(self.certificate).operator
        except MalformedExtensionError:
            return None

    @property
    def not_before(self) -> dt.datetime:
        """Start of the CA certificate's validity (UTC)."""
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        """End of the CA certificate's validity (UTC)."""
        return self.certificate.not_valid_after_utc

    def certificate_pem(self) -> bytes:
        """Return the CA certificate as PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def save(
        self,
        certificate_path: str | os.PathLike[str],
        key_path: str | os.PathLike[str],
        passphrase: Passphrase | str | bytes,
    ) -> None:
        """Write the certificate as PEM and the key as encrypted PKCS#8."""
        save_private_key(key_path, self.private_key, passphrase)
        Path(certificate_path).write_bytes(self.certificate_pem())

    @classmethod
    def load(
        cls,
        certificate_path: str | os.PathLike[str],
        key_path: str | os.PathLike[str],
        passphrase: Passphrase | str | bytes,
    ) -> CertificateAuthority:
        """Read a CA written by :meth:`save`."""
        certificate = x509.load_pem_x509_certificate(Path(certificate_path).read_bytes())
        return cls(certificate=certificate, private_key=load_private_key(key_path, passphrase))


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def create_root_ca(
    *,
    common_name: str = "Real-Name Seller Authorization Root CA",
    organization: str = "Mobile Card Real-Name Regulator",
    key: ec.EllipticCurvePrivateKey | None = None,
    now: dt.datetime | None = None,
    validity: dt.timedelta = ROOT_VALIDITY,
) -> CertificateAuthority:
    """Create the self-signed regulator root CA (pathLen 1: operator CAs only below it)."""
    private_key = key if key is not None else generate_private_key()
    require_p256_public_key(private_key.public_key())
    start = as_utc(now)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(private_key.public_key()), critical=False
        )
        .sign(private_key, _SIGNATURE_HASH)
    )
    return CertificateAuthority(certificate=certificate, private_key=private_key)


def _operator_name(operator: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Store Authorization"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{operator} store authorization CA"),
        ]
    )


def _certify_operator(
    root: CertificateAuthority,
    *,
    subject: x509.Name,
    authority: OperatorAuthority,
    private_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime | None,
    validity: dt.timedelta,
    base_url: str | None,
) -> CertificateAuthority:
    require_p256_public_key(private_key.public_key())
    if root.operator is not None:
        raise IssuanceError("operator CAs are certified by the regulator root only")
    start = as_utc(now)
    end = start + validity
    if start < root.not_before or end > root.not_after:
        raise IssuanceError(
            f"operator CA validity {start:%Y-%m-%d}..{end:%Y-%m-%d} falls outside the root's "
            f"{root.not_before:%Y-%m-%d}..{root.not_after:%Y-%m-%d}"
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.subject)
        .public_key(private_key.public_key())
        .serial_number(random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(private_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier(
                key_identifier=root.key_id,
                authority_cert_issuer=None,
                authority_cert_serial_number=None,
            ),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(
                OPERATOR_AUTHORITY_EXTENSION, encode_operator_authority(authority)
            ),
            critical=False,
        )
    )
    if base_url is not None:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(root_crl_url(base_url))],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    certificate = builder.sign(root.private_key, _SIGNATURE_HASH)
    return CertificateAuthority(certificate=certificate, private_key=private_key)


def create_operator_ca(
    root: CertificateAuthority,
    operator: str,
    *,
    kind: OperatorKind | None = None,
    organization: str | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    now: dt.datetime | None = None,
    validity: dt.timedelta = OPERATOR_CA_VALIDITY,
    base_url: str | None = None,
) -> CertificateAuthority:
    """Create an operator's authorization CA certified by ``root`` (pathLen 0).

    ``kind`` defaults to the kind in :data:`~registry.pki.operators.KNOWN_OPERATORS`; an operator
    outside that list needs it explicitly. With ``base_url`` the certificate names the root CRL as
    its CRL distribution point.
    """
    validate_operator_id(operator)
    if kind is None:
        known = KNOWN_OPERATORS.get(operator)
        if known is None:
            raise IssuanceError(f"operator {operator!r} is not a known operator; pass its kind")
        kind = known
    name = _operator_name(operator, organization or OPERATOR_NAMES.get(operator, operator))
    return _certify_operator(
        root,
        subject=name,
        authority=OperatorAuthority(operator=operator, kind=kind),
        private_key=key if key is not None else generate_private_key(),
        now=now,
        validity=validity,
        base_url=base_url,
    )


def rotate_operator_ca(
    root: CertificateAuthority,
    current: CertificateAuthority | x509.Certificate,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    now: dt.datetime | None = None,
    validity: dt.timedelta = OPERATOR_CA_VALIDITY,
    base_url: str | None = None,
) -> CertificateAuthority:
    """Certify a new key for an existing operator CA: same subject and operator, new key id."""
    certificate = current.certificate if isinstance(current, CertificateAuthority) else current
    authority = operator_authority_of(certificate)
    private_key = key if key is not None else generate_private_key()
    old_point = _point(require_p256_public_key(certificate.public_key()))
    if _point(private_key.public_key()) == old_point:
        raise IssuanceError("rotation needs a new key; this one is already certified")
    return _certify_operator(
        root,
        subject=certificate.subject,
        authority=authority,
        private_key=private_key,
        now=now,
        validity=validity,
        base_url=base_url,
    )
