"""Pseudonyms for identity documents: HMAC-SHA-256 under a pepper kept outside the database."""

from __future__ import annotations

import hashlib
import hmac

from services.domain import audit
from services.domain.documents import Document

PEPPER_BYTES = 32
"""Length of a new pepper, in bytes."""


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
        key = hmac.digest(self._pepper, message, "sha256")  # one-shot: no HMAC object per call
        audit.note_subject(key)
        return key

    def derive_key(self, label: str) -> bytes:
        """Returns a 32-byte key for ``label`` (e.g. sealing registry contacts), from the pepper."""
        return hmac.new(self._pepper, f"key:v1:{label}".encode(), hashlib.sha256).digest()

    def fingerprint(self, *parts: str) -> bytes:
        """Returns a keyed digest of request content, so stored fingerprints reveal nothing."""
        message = "\x1f".join(("req:v1", *parts)).encode()
        return hmac.digest(self._pepper, message, "sha256")
