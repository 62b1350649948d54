"""Pseudonyms for identity documents: HMAC-SHA-256 under a pepper kept outside the database."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from services.domain import audit
from services.domain.documents import Document

PEPPER_BYTES = 32


class PepperError(Exception):
    """Raised when the pepper file is missing, unreadable or malformed."""


class Pseudonymizer:
    """Turns documents into stable keys that cannot be reversed without the pepper."""

    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < 16:
            raise PepperError("the pepper must be at least 16 bytes")
        self._pepper = pepper

    def __repr__(self) -> str:
        return "Pseudonymizer(<pepper hidden>)"

    def document_key(self, document: Document) -> bytes:
        """Returns the 32-byte key of a normalised document (type and number)."""
        message = f"doc:v1:{document.type.value}:{document.number}".encode()
        key = hmac.new(self._pepper, message, hashlib.sha256).digest()
        audit.note_subject(key)
        return key

    def derive_key(self, label: str) -> bytes:
        """Returns a 32-byte key for ``label`` (e.g. sealing registry contacts), from the pepper."""
        return hmac.new(self._pepper, f"key:v1:{label}".encode(), hashlib.sha256).digest()

    def fingerprint(self, *parts: str) -> bytes:
        """Returns a keyed digest of request content, so stored fingerprints reveal nothing."""
        message = "\x1f".join(("req:v1", *parts)).encode()
        return hmac.new(self._pepper, message, hashlib.sha256).digest()


def create_pepper_file(path: Path) -> bool:
    """Writes a new random pepper (mode 0600) unless one exists; returns whether it wrote one."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(PEPPER_BYTES) + "\n")
    return True


def load_pepper(path: Path) -> Pseudonymizer:
    """Loads the pepper file made by ``realname dev-init``; refuses a missing or bad one."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError as exc:
        raise PepperError(f"no pepper file at {path}; run `realname dev-init` first") from exc
    try:
        pepper = bytes.fromhex(text)
    except ValueError as exc:
        raise PepperError(f"the pepper file {path} is not hex") from exc
    return Pseudonymizer(pepper)
