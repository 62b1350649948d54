"""Recipient commitment: a salted hash of the recipient's document that hides its number.

The store that sells a card knows the buyer's document (it registered the card with it). It puts
into the shipment token, instead of the number::

    commitment = SHA-256( "realname/delivery/recipient-commitment/v1" || 0x00
                          || salt                 /* 16 random bytes, also in the token */
                          || uint8 document_type  /* realname.v1.DocumentType number */
                          || UTF-8(normalise_number(number)) )

Every part before the number has a fixed length, so the concatenation is unambiguous. The label
separates this hash from every other SHA-256 in the system (and the ``v1`` lets a later scheme
coexist). At the door the courier app recomputes it from the document the recipient shows and the
token's salt, and compares in constant time; the token never holds the number.

What this does not hide: the commitment and the salt travel together, so anyone holding the token
can test guesses. A resident ID number has little entropy once the region (on the parcel's
address) and an approximate birth date are known: a few million SHA-256 guesses find it. The
commitment keeps the number out of the QR code, the courier app and logs, and keeps a courier
from learning a number by scanning alone; it is no defence against a determined brute force by a
token holder. Treat token bytes as personal data.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

from registry.delivery.errors import InvalidDocumentError
from registry.subscribers import DocumentType, normalise_number

COMMITMENT_LABEL: Final = b"realname/delivery/recipient-commitment/v1\x00"
"""Domain-separation prefix of the committed message."""

SALT_SIZE: Final = 16
"""Length in bytes of the random salt."""

COMMITMENT_SIZE: Final = 32
"""Length in bytes of a commitment (SHA-256)."""

MAX_NUMBER_LENGTH: Final = 64
"""Longest normalised document number accepted, in characters (real ones are under 20)."""


def document_type(value: DocumentType | int) -> DocumentType:
    """Return ``value`` as a :class:`DocumentType`, raising ``InvalidDocumentError`` if unknown."""
    try:
        return DocumentType(value)
    except ValueError:
        raise InvalidDocumentError(f"unknown document type {value!r}") from None


def _normalised(number: str) -> bytes:
    normal = normalise_number(number)
    if not normal:
        raise InvalidDocumentError("document number is empty")
    if len(normal) > MAX_NUMBER_LENGTH:
        raise InvalidDocumentError(f"document number is longer than {MAX_NUMBER_LENGTH}")
    if not normal.isprintable():
        raise InvalidDocumentError("document number contains non-printable characters")
    return normal.encode("utf-8")


def validate_document(doc_type: DocumentType | int, number: str) -> DocumentType:
    """Return the document type once (type, number) is known to be committable; else raise."""
    kind = document_type(doc_type)
    _normalised(number)
    return kind


def new_salt() -> bytes:
    """Return a fresh random salt from the operating system's CSPRNG."""
    return secrets.token_bytes(SALT_SIZE)


def commit(doc_type: DocumentType | int, number: str, salt: bytes) -> bytes:
    """Return the commitment to document (``doc_type``, ``number``) under ``salt``."""
    kind = document_type(doc_type)
    if len(salt) != SALT_SIZE:
        raise InvalidDocumentError(f"salt must be {SALT_SIZE} bytes, got {len(salt)}")
    digest = hashlib.sha256(COMMITMENT_LABEL)
    digest.update(salt)
    digest.update(bytes((kind,)))
    digest.update(_normalised(number))
    return digest.digest()


def matches(commitment: bytes, salt: bytes, doc_type: DocumentType | int, presented: str) -> bool:
    """Return whether the presented document is the committed one (constant-time compare).

    Raises ``InvalidDocumentError`` for a presented document that is not one (unknown type, empty
    number): that is bad input, not a mismatch.
    """
    if len(commitment) != COMMITMENT_SIZE:
        raise InvalidDocumentError(f"commitment must be {COMMITMENT_SIZE} bytes")
    return hmac.compare_digest(commit(doc_type, presented, salt), commitment)
