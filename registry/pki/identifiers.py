"""Key identifiers (RFC 5280) and certificate serial numbers."""

from __future__ import annotations

import hashlib
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def key_identifier(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """Return the RFC 5280 method-1 key identifier (SHA-1 of the public key bits)."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest


def spki_sha256(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """Return SHA-256 of the key's DER SubjectPublicKeyInfo: one key, one value, any certificate."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def random_serial_number() -> int:
    """Return a positive serial of at most 159 random bits, so its DER fits RFC 5280's 20 octets."""
    while True:
        serial = secrets.randbits(159)
        if serial:
            return serial


def subject_key_id(certificate: x509.Certificate) -> bytes | None:
    """Return a certificate's subjectKeyIdentifier, or ``None`` when it has none."""
    try:
        return certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    except x509.ExtensionNotFound:
        return None


def authority_key_id(
    certificate: x509.Certificate | x509.CertificateRevocationList,
) -> bytes | None:
    """Return the keyIdentifier of an authorityKeyIdentifier, or ``None`` when absent."""
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    return aki.key_identifier
