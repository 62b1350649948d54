"""The development transport PKI: a service CA, a server certificate, a client per principal."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.domain.principal import Principal

DEV_PRINCIPALS = (
    "operator-cmcc",
    "operator-cucc",
    "operator-ctcc",
    "operator-vno1",
    "operator-vno2",
    "marketplace-demo",
    "courier-demo",
    "regulator",
    "citizen-portal",
)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(cn: str, org: str | None = None, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    if ou is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    return x509.Name(attrs)


def make_ca(common_name: str, *, days: int = 3650, now: dt.datetime | None = None) -> Issued:
    """A self-signed ECDSA P-256 CA for client and server transport certificates."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name, "realname transport")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def _leaf(
    ca: Issued,
    subject: x509.Name,
    *,
    server: bool,
    days: int,
    now: dt.datetime,
    sans: list[x509.GeneralName] | None = None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def make_server_cert(ca: Issued, *, days: int = 825, now: dt.datetime | None = None) -> Issued:
    """A server certificate for localhost, 127.0.0.1 and ::1."""
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    return _leaf(
        ca, _name("localhost", "realname"), server=True, days=days,
        now=now or dt.datetime.now(dt.UTC), sans=sans,
    )  # fmt: skip


def make_client_cert(
    ca: Issued, principal: str, *, days: int = 825, now: dt.datetime | None = None
) -> Issued:
    """A client certificate whose subject names the principal's role (OU) and organisation (O)."""
    p = Principal.parse(principal)
    subject = _name(principal, p.organisation, p.role.value)
    return _leaf(ca, subject, server=False, days=days, now=now or dt.datetime.now(dt.UTC))


def cert_pem(cert: x509.Certificate) -> bytes:
    """PEM bytes of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of a transport key (gRPC cannot read encrypted ones)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_issued(cert_path: Path, key_path: Path) -> Issued:
    """Loads a certificate and its unencrypted key."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Issued(cert, key)


def ensure_dev_pki(pki_dir: Path) -> list[Path]:
    """Creates whatever part of the dev PKI is missing (idempotent); returns the files written."""
    written: list[Path] = []
    ca_cert, ca_key = pki_dir / "ca.pem", pki_dir / "ca.key"
    if ca_cert.exists() and ca_key.exists():
        ca = load_issued(ca_cert, ca_key)
    else:
        ca = make_ca("realname dev transport CA")
        _write(ca_key, key_pem(ca.key), secret=True)
        _write(ca_cert, cert_pem(ca.cert))
        written += [ca_cert, ca_key]
    targets = [("server", None)] + [(f"clients/{p}", p) for p in DEV_PRINCIPALS]
    for stem, principal in targets:
        cert_path, key_path = pki_dir / f"{stem}.pem", pki_dir / f"{stem}.key"
        if cert_path.exists() and key_path.exists():
            continue
        issued = make_server_cert(ca) if principal is None else make_client_cert(ca, principal)
        _write(key_path, key_pem(issued.key), secret=True)
        _write(cert_path, cert_pem(issued.cert))
        written += [cert_path, key_path]
    return written
