"""ECDSA P-256 keys: generation, and encrypted PKCS#8 storage at rest.

Keys are written only as PKCS#8 encrypted with a passphrase (``BestAvailableEncryption``, which in
cryptography is PBES2 with scrypt or PBKDF2 and AES-256-CBC) and refused on load when they are not
encrypted, so a plaintext CA key on disk is an error rather than a habit. A passphrase lives in a
:class:`Passphrase`, whose ``repr`` and ``str`` never show it; error messages never quote key
bytes, and errors from the decoder are not chained, so a traceback cannot carry them either.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from registry.pki.errors import (
    KeyFormatError,
    MissingPassphraseError,
    UnsupportedKeyError,
    WrongPassphraseError,
)

CURVE_NAME: Final = "secp256r1"
"""The only curve this PKI accepts (NIST P-256)."""


class Passphrase:
    """A passphrase for keys at rest; it never appears in ``repr``, ``str`` or pickles."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str | bytes) -> None:
        value = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if not value:
            raise MissingPassphraseError("an empty passphrase cannot protect a key")
        self._secret = value

    @classmethod
    def from_env(cls, variable: str) -> Passphrase:
        """Read the passphrase from environment variable ``variable``."""
        value = os.environ.get(variable)
        if not value:
            raise MissingPassphraseError(f"environment variable {variable} is unset or empty")
        return cls(value)

    def reveal(self) -> bytes:
        """Return the passphrase bytes, for handing to a key encryption routine only."""
        return self._secret

    def __repr__(self) -> str:
        return "Passphrase(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Passphrase cannot be pickled")


def _as_passphrase(passphrase: Passphrase | str | bytes) -> Passphrase:
    return passphrase if isinstance(passphrase, Passphrase) else Passphrase(passphrase)


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """Generate a fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def require_p256_public_key(key: PublicKeyTypes) -> ec.EllipticCurvePublicKey:
    """Return ``key`` if it is an ECDSA P-256 public key, else raise ``UnsupportedKeyError``."""
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UnsupportedKeyError(
            f"only ECDSA P-256 keys are accepted, got {type(key).__name__.lstrip('_')}"
        )
    if key.curve.name != CURVE_NAME:
        raise UnsupportedKeyError(f"only ECDSA P-256 keys are accepted, got curve {key.curve.name}")
    return key


def encrypt_private_key(
    key: ec.EllipticCurvePrivateKey, passphrase: Passphrase | str | bytes
) -> bytes:
    """Serialise ``key`` as PEM PKCS#8 encrypted with ``passphrase``."""
    require_p256_public_key(key.public_key())
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.BestAvailableEncryption(
            _as_passphrase(passphrase).reveal()
        ),
    )


def decrypt_private_key(
    pem: bytes, passphrase: Passphrase | str | bytes
) -> ec.EllipticCurvePrivateKey:
    """Load an encrypted PEM PKCS#8 P-256 key; plaintext keys and other types are refused."""
    secret = _as_passphrase(passphrase).reveal()
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" not in pem:
        raise KeyFormatError("not an encrypted PKCS#8 PEM private key")
    try:
        key = serialization.load_pem_private_key(pem, password=secret)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # Deliberately not chained: the decoder's exception is about the secret bytes.
        raise WrongPassphraseError(
            "cannot decrypt the private key: wrong passphrase or corrupted key file"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UnsupportedKeyError("stored key is not an ECDSA key")
    require_p256_public_key(key.public_key())
    return key


def save_private_key(
    path: str | os.PathLike[str],
    key: ec.EllipticCurvePrivateKey,
    passphrase: Passphrase | str | bytes,
) -> None:
    """Write ``key`` encrypted to ``path`` atomically, readable by the owner only (0600)."""
    target = Path(path)
    data = encrypt_private_key(key, passphrase)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        # mkstemp creates the file 0600 already; the write then the rename keep readers from
        # ever seeing a half-written key.
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_private_key(
    path: str | os.PathLike[str], passphrase: Passphrase | str | bytes
) -> ec.EllipticCurvePrivateKey:
    """Read and decrypt the P-256 key stored at ``path``."""
    return decrypt_private_key(Path(path).read_bytes(), passphrase)
