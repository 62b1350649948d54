"""Holder names: AES-GCM sealed at rest under a key kept outside the database, compared by hash.

A name is normalised (NFKC, whitespace collapsed, case-folded) before it is hashed, so the chip's
"ZHANG  San" and the counter's "zhang san" compare equal. The hash is HMAC-SHA-256 under a key
derived from the pepper, apart from the encryption keys, so rotating the encryption key leaves
every stored hash (and the identity authority's table) valid.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import unicodedata
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.domain.pseudonym import Pseudonymizer

MAX_NAME_CHARS = 100
PEPPER_KEY_ID = "pepper-v1"
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")
_NONCE_BYTES = 12


class HolderNameKeyError(Exception):
    """Raised when the holder-name key file is unreadable or malformed."""


def normalise_name(name: str) -> str:
    """The form names are hashed in: NFKC, runs of whitespace as one space, case-folded."""
    return " ".join(unicodedata.normalize("NFKC", name).split()).casefold()


def holder_name_problem(name: str) -> str | None:
    """Why a holder name is unacceptable, or None (the message never repeats the name)."""
    normal = normalise_name(name)
    if not normal:
        return "must not be empty"
    if len(normal) > MAX_NAME_CHARS:
        return f"must be at most {MAX_NAME_CHARS} characters"
    if any(unicodedata.category(c).startswith("C") for c in normal):
        return "must not contain control or format characters"
    if not any(c.isalpha() for c in normal):
        return "must contain letters"
    return None


@dataclass(frozen=True)
class SealedName:
    """A holder name as stored: ciphertext (nonce first), the key id, and the keyed hash."""

    ciphertext: bytes
    key_id: str
    name_hash: bytes


class HolderNames:
    """Seals, opens and hashes holder names; the last key is current, older ones still open."""

    def __init__(self, keys: dict[str, bytes], current: str, hash_key: bytes) -> None:
        if current not in keys:
            raise HolderNameKeyError(f"no key {current!r}")
        if any(len(k) != 32 for k in keys.values()):
            raise HolderNameKeyError("holder-name keys must be 32 bytes")
        self._keys = {kid: AESGCM(k) for kid, k in keys.items()}
        self._current = current
        self._hash_key = hash_key

    def __repr__(self) -> str:
        return f"HolderNames(current={self._current!r}, <keys hidden>)"

    @classmethod
    def from_pepper(cls, pseudonymizer: Pseudonymizer) -> HolderNames:
        """Keys derived from the pepper (when no key file is configured)."""
        return cls(
            {PEPPER_KEY_ID: pseudonymizer.derive_key("holder-name-seal:v1")},
            PEPPER_KEY_ID,
            hash_key(pseudonymizer),
        )

    @classmethod
    def parse(
        cls, text: str, pseudonymizer: Pseudonymizer, source: str = "the key file"
    ) -> HolderNames:
        """Keys from a key file's text: one ``<id> <64 hex digits>`` per line, the last current."""
        lines = [ln.split() for ln in text.splitlines() if ln.strip()]
        keys: dict[str, bytes] = {}
        for parts in lines:
            if len(parts) != 2 or not _KEY_ID.fullmatch(parts[0]):
                raise HolderNameKeyError(f"{source}: each line must be '<key id> <hex key>'")
            try:
                keys[parts[0]] = bytes.fromhex(parts[1])
            except ValueError as exc:
                raise HolderNameKeyError(f"{source}: key {parts[0]} is not hex") from exc
        if not keys:
            raise HolderNameKeyError(f"{source} holds no key")
        return cls(keys, lines[-1][0], hash_key(pseudonymizer))

    def name_hash(self, name: str) -> bytes:
        """The keyed hash of the normalised name."""
        return name_hash(self._hash_key, name)

    def seal(self, name: str, context: bytes) -> SealedName:
        """Encrypts the name under the current key, bound to ``context`` (e.g. the card)."""
        nonce = os.urandom(_NONCE_BYTES)
        ct = self._keys[self._current].encrypt(nonce, name.encode(), context)
        return SealedName(nonce + ct, self._current, self.name_hash(name))

    def open(self, sealed: bytes, key_id: str, context: bytes) -> str:
        """Decrypts a stored name (for the holder's own lookups and audits, never logs)."""
        key = self._keys.get(key_id)
        if key is None:
            raise HolderNameKeyError(f"unknown holder-name key id {key_id!r}")
        return key.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], context).decode()


def hash_key(pseudonymizer: Pseudonymizer) -> bytes:
    """The name-hash key: derived from the pepper, separately from any encryption key."""
    return pseudonymizer.derive_key("holder-name-hash:v1")


def name_hash(key: bytes, name: str) -> bytes:
    """HMAC-SHA-256 of the normalised name."""
    return hmac.new(key, normalise_name(name).encode(), hashlib.sha256).digest()


def card_context(card_id: int) -> bytes:
    """The AES-GCM associated data binding a sealed name to its card row."""
    return f"holder-name:v1:card:{card_id}".encode()
