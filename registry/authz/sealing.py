"""AES-GCM sealing of personal data the registry must keep (an application's contact person).

The key id is stored beside the ciphertext, so keys can be rotated: a :class:`Sealer` holds the
key that seals and any older keys that still open. The record's id is bound as associated data,
so a sealed value copied onto another record does not open.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from registry.authz.errors import RegistryError

NONCE_BYTES: Final = 12
"""AES-GCM nonce length (random per sealing)."""


class SealingError(RegistryError):
    """Raised when a sealed value names an unknown key or fails authentication."""

    reason = "SEALED_DATA_UNREADABLE"


class Sealer:
    """Seals with the current key; opens with any key it knows, by key id."""

    def __init__(self, key_id: str, key: bytes, older: Mapping[str, bytes] | None = None) -> None:
        if len(key) != 32:
            raise ValueError("AES-256-GCM keys are 32 bytes")
        self.key_id = key_id
        self._keys = {**(older or {}), key_id: key}

    def __repr__(self) -> str:
        return f"Sealer(key_id={self.key_id!r}, <keys hidden>)"

    def seal(self, plaintext: bytes, context: bytes) -> tuple[str, bytes]:
        """Return ``(key id, nonce || ciphertext)`` of ``plaintext`` bound to ``context``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self._keys[self.key_id]).encrypt(nonce, plaintext, context)
        return self.key_id, nonce + sealed

    def open(self, key_id: str, sealed: bytes, context: bytes) -> bytes:
        """Return the plaintext of a value sealed by :meth:`seal` with the same context."""
        key = self._keys.get(key_id)
        if key is None:
            raise SealingError(f"no key {key_id!r} to open sealed data")
        try:
            return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context)
        except InvalidTag:
            raise SealingError("sealed data failed authentication") from None
