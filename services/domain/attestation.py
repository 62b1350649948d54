"""Reader attestations: the canonical bytes a certified ID-card reader signs, and their checks.

The payload is seven UTF-8 lines, each ending in a newline, in this order and nothing else::

    realname-reader-attestation/v1
    reader=<reader serial>
    nonce=<nonce from GetAttestationNonce, base64url>
    time=<seconds since the Unix epoch, UTC>
    subject=<hex SHA-256 of the document and name read from the chip, see subject_digest>
    liveness=<pass|fail>
    face-score=<face-match score in thousandths, 0-1000>

The signature is Ed25519 over the payload, or ECDSA P-256 with SHA-256 (DER). The subject digest
is salted with the nonce, so the attestation cannot be matched with another one of the same
person, and the service keeps only the document's pseudonym, never the digest.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.domain.documents import Document
from services.domain.holder_names import normalise_name

VERSION = "realname-reader-attestation/v1"
MAX_PAYLOAD_BYTES = 1024
MAX_SIGNATURE_BYTES = 128
_FIELDS = ("reader", "nonce", "time", "subject", "liveness", "face-score")
_SERIAL = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
_NONCE = re.compile(r"[A-Za-z0-9_\-]{16,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_INT = re.compile(r"0|[1-9][0-9]{0,11}")

ReaderPublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
ReaderPrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


class AttestationFormatError(Exception):
    """Raised when attestation bytes or a reader key are not in the defined form."""


@dataclass(frozen=True)
class ReaderAttestation:
    """An attestation as carried by ActivateCard: the payload bytes and the reader's signature."""

    payload: bytes
    signature: bytes


@dataclass(frozen=True)
class AttestationClaims:
    """What a reader states in an attestation."""

    reader_serial: str
    nonce: str
    time: dt.datetime
    subject: bytes
    liveness: bool
    face_score: int

    def encode(self) -> bytes:
        """The canonical payload bytes."""
        values = (
            self.reader_serial,
            self.nonce,
            str(int(self.time.timestamp())),
            self.subject.hex(),
            "pass" if self.liveness else "fail",
            str(self.face_score),
        )
        lines = [VERSION, *(f"{k}={v}" for k, v in zip(_FIELDS, values, strict=True))]
        return "".join(line + "\n" for line in lines).encode()


def subject_digest(nonce: str, document: Document, name: str) -> bytes:
    """SHA-256 over the nonce, the document type and number, and the normalised name."""
    parts = (VERSION, nonce, str(document.type.value), document.number, normalise_name(name))
    return hashlib.sha256("\x00".join(parts).encode()).digest()


def parse_claims(payload: bytes) -> AttestationClaims:
    """Parses canonical payload bytes; anything else is an AttestationFormatError."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise AttestationFormatError("the payload is too long")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise AttestationFormatError("the payload is not UTF-8") from None
    if not text.endswith("\n"):
        raise AttestationFormatError("the payload must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) != 1 + len(_FIELDS) or lines[0] != VERSION:
        raise AttestationFormatError(f"the payload must be {VERSION} and {len(_FIELDS)} fields")
    values: dict[str, str] = {}
    for key, line in zip(_FIELDS, lines[1:], strict=True):
        name, sep, value = line.partition("=")
        if name != key or not sep:
            raise AttestationFormatError(f"expected field {key!r}")
        values[key] = value
    checks = {
        "reader": _SERIAL,
        "nonce": _NONCE,
        "time": _INT,
        "subject": _HEX64,
        "face-score": _INT,
    }
    for key, pattern in checks.items():
        if not pattern.fullmatch(values[key]):
            raise AttestationFormatError(f"field {key!r} is malformed")
    if values["liveness"] not in ("pass", "fail"):
        raise AttestationFormatError("field 'liveness' must be pass or fail")
    score = int(values["face-score"])
    if score > 1000:
        raise AttestationFormatError("field 'face-score' must be 0-1000")
    return AttestationClaims(
        reader_serial=values["reader"],
        nonce=values["nonce"],
        time=dt.datetime.fromtimestamp(int(values["time"]), dt.UTC),
        subject=bytes.fromhex(values["subject"]),
        liveness=values["liveness"] == "pass",
        face_score=score,
    )


def load_public_key(pem: str | bytes) -> tuple[ReaderPublicKey, str]:
    """A reader's public key and its algorithm name (``ed25519`` or ``ecdsa-p256``)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise AttestationFormatError("not a PEM public key") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ecdsa-p256"
    raise AttestationFormatError("reader keys must be Ed25519 or ECDSA P-256")


def public_key_der(key: ReaderPublicKey) -> bytes:
    """The key's SubjectPublicKeyInfo, DER (what is stored and fingerprinted)."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key_der(der: bytes) -> ReaderPublicKey:
    """A stored reader key back from its DER SubjectPublicKeyInfo."""
    key = serialization.load_der_public_key(der)
    assert isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey)
    return key


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER SubjectPublicKeyInfo, lowercase hex."""
    return hashlib.sha256(der).hexdigest()


def signature_valid(key: ReaderPublicKey, payload: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the reader's over ``payload``."""
    if len(signature) > MAX_SIGNATURE_BYTES:
        return False
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, payload)
        else:
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def sign(key: ReaderPrivateKey, payload: bytes) -> bytes:
    """Signs a payload as a reader would (the simulator, tests and benches)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(payload)
    return key.sign(payload, ec.ECDSA(hashes.SHA256()))


def new_nonce(raw: bytes) -> str:
    """The text form of a nonce: base64url without padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def nonce_digest(nonce: str) -> bytes:
    """What the service stores of a nonce."""
    return hashlib.sha256(nonce.encode()).digest()
