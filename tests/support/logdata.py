"""Transparency-log test data: entries with real certificates, keys, and an in-process fetcher."""

from __future__ import annotations

import datetime as dt
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine

from registry.log.entries import AuditDigest, Issuance, Revocation, StoreRef
from registry.log.errors import NoCheckpointError, TreeSizeError
from registry.log.reader import LogReader
from registry.note import CosignatureSigner, Ed25519Signer
from registry.tiles import EntryBundle, parse_path

ORIGIN = "realname.test/log"
T0 = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)


def log_signer(seed: int = 1, origin: str = ORIGIN) -> Ed25519Signer:
    """A deterministic log key."""
    return Ed25519Signer(origin, Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


def witness_signer(seed: int, name: str | None = None) -> CosignatureSigner:
    """A deterministic witness key with a fixed clock."""
    key = Ed25519PrivateKey.from_private_bytes(bytes([100 + seed]) * 32)
    return CosignatureSigner(name or f"witness.test/w{seed}", key, lambda: 1_790_000_000)


# Ed25519 signs deterministically, so the same test entry always has the same bytes (the log
# never checks certificate signatures; the registry's real ones are ECDSA).
_ISSUER_KEY = Ed25519PrivateKey.from_private_bytes(b"\x42" * 32)


def store_certificate(store: StoreRef, serial: int) -> bytes:
    """A certificate laid out like the registry's (CN marketplace:shop, serialNumber)."""
    key = _ISSUER_KEY
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{store.shop_id} Trading Co."),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, store.credit_code),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{store.marketplace}:{store.shop_id}"),
        ]
    )
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{store.operator} test CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(T0)
        .not_valid_after(T0 + dt.timedelta(days=365))
        .sign(key, None)
    )
    return certificate.public_bytes(Encoding.DER)


def store(number: int, operator: str = "cmcc", marketplace: str = "tmall") -> StoreRef:
    """The ``number``-th test store."""
    return StoreRef(operator, marketplace, f"shop-{number}", credit_code(number))


def credit_code(number: int) -> str:
    """An 18-character credit-code-shaped string (the log does not check the check digit)."""
    return f"91110000{number:09d}X"


def issuance(number: int, operator: str = "cmcc", serial: int | None = None) -> Issuance:
    """An issuance entry for store ``number`` with a real certificate."""
    ref = store(number, operator)
    serial = serial if serial is not None else 0x1000 + number
    return Issuance(T0 + dt.timedelta(seconds=number), ref, serial, store_certificate(ref, serial))


def revocation(number: int, operator: str = "cmcc", reason: int = 1) -> Revocation:
    """A revocation entry for store ``number``'s authorization."""
    when = T0 + dt.timedelta(days=1, seconds=number)
    return Revocation(when, store(number, operator), 0x1000 + number, reason)


def audit(number: int, label: str = "test") -> AuditDigest:
    """A small, cheap entry distinct for every ``number``."""
    digest = hashlib.sha256(f"{label}-{number}".encode()).digest()
    return AuditDigest(T0 + dt.timedelta(milliseconds=number), label, digest)


class DirectFetcher:
    """A ``Fetcher`` reading straight from the database through a ``LogReader``."""

    def __init__(self, engine: Engine, reader: LogReader | None = None) -> None:
        self._engine = engine
        self._reader = reader or LogReader()

    def fetch(self, path: str) -> bytes | None:
        with self._engine.connect() as conn:
            try:
                if path == "checkpoint":
                    return self._reader.latest_checkpoint(conn).signed_note()
                coordinates = parse_path(path)
                if isinstance(coordinates, EntryBundle):
                    return self._reader.entry_bundle(conn, coordinates)
                return self._reader.tile(conn, coordinates)
            except (TreeSizeError, NoCheckpointError):
                return None
