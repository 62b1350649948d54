"""Where the regulator root's key lives, and where the CA passphrase comes from.

Layout under a directory (``<data_dir>/registry/`` for ``realname``)::

    root.pem            the root certificate (public)
    root.key            the root private key, encrypted PKCS#8 (0600)
    dev-ca-passphrase   a random passphrase made by ``realname dev-init`` (0600), dev only

The passphrase protecting the root key and the operator CA keys is taken from the environment
variable :data:`PASSPHRASE_ENV` when set, else from the dev passphrase file when it exists. A
production deployment sets the variable and has no file; the root key can then be kept on the
regulator's machine only, since serving needs operator keys, not the root's.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from registry.authz.errors import KeysUnavailableError
from registry.pki.authority import CertificateAuthority
from registry.pki.keys import Passphrase

PASSPHRASE_ENV: Final = "REALNAME_CA_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
"""Environment variable holding the CA key passphrase."""

DEV_PASSPHRASE_FILE: Final = "dev-ca-passphrase"  # noqa: S105 - a file name
"""Name of the dev passphrase file made by ``realname dev-init``."""


@dataclass(frozen=True, slots=True)
class KeyDirectory:
    """The folder holding the root certificate, its encrypted key and the dev passphrase."""

    path: Path

    @property
    def root_certificate(self) -> Path:
        """Path of the root certificate (PEM)."""
        return self.path / "root.pem"

    @property
    def root_key(self) -> Path:
        """Path of the root private key (encrypted PKCS#8 PEM)."""
        return self.path / "root.key"

    @property
    def dev_passphrase(self) -> Path:
        """Path of the dev passphrase file."""
        return self.path / DEV_PASSPHRASE_FILE

    def passphrase(self) -> Passphrase | None:
        """The CA passphrase: the environment variable, else the dev file, else None."""
        value = os.environ.get(PASSPHRASE_ENV)
        if value:
            return Passphrase(value)
        try:
            text = self.dev_passphrase.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return Passphrase(text) if text else None

    def require_passphrase(self) -> Passphrase:
        """The CA passphrase, or :class:`KeysUnavailableError` saying where to put one."""
        passphrase = self.passphrase()
        if passphrase is None:
            raise KeysUnavailableError(
                f"set {PASSPHRASE_ENV} (or run `realname dev-init` for a dev passphrase file "
                f"in {self.path})"
            )
        return passphrase

    def ensure_dev_passphrase(self) -> bool:
        """Write a random dev passphrase file (0600) unless one exists; True if written."""
        if self.dev_passphrase.exists():
            return False
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dev_passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        return True

    def has_root(self) -> bool:
        """Whether a root certificate and key are stored here."""
        return self.root_certificate.exists() and self.root_key.exists()

    def load_root(self, passphrase: Passphrase | None = None) -> CertificateAuthority:
        """Open the root CA (certificate and decrypted key)."""
        if not self.has_root():
            raise KeysUnavailableError(
                f"no regulator root key in {self.path}; run `realname ca init-root`",
                reason="NO_ROOT_KEY",
            )
        return CertificateAuthority.load(
            self.root_certificate,
            self.root_key,
            passphrase if passphrase is not None else self.require_passphrase(),
        )

    def save_root(self, root: CertificateAuthority, passphrase: Passphrase) -> None:
        """Store the root certificate and its encrypted key here."""
        self.path.mkdir(parents=True, exist_ok=True)
        root.save(self.root_certificate, self.root_key, passphrase)
