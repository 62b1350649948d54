"""The secret files a process reads: the pepper and the holder-name keys, outside the database.

Both are written once with mode 0600 by ``realname dev-init`` (or by the deployment) and only read
afterwards; their formats and rules are in :mod:`services.domain.pseudonym` and
:mod:`services.domain.holder_names`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from services.domain.holder_names import HolderNameKeyError, HolderNames
from services.domain.pseudonym import PEPPER_BYTES, PepperError, Pseudonymizer


def _create_secret_file(path: Path, content: str) -> bool:
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never overwrite a secret another process has just written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    return True


def create_pepper_file(path: Path) -> bool:
    """Writes a new random pepper (mode 0600) unless one exists; returns whether it wrote one."""
    return _create_secret_file(path, secrets.token_hex(PEPPER_BYTES) + "\n")


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


def create_holder_name_key_file(path: Path, key_id: str = "k1") -> bool:
    """Writes a new holder-name key file (mode 0600) unless one exists; returns whether it did."""
    return _create_secret_file(path, f"{key_id} {secrets.token_hex(32)}\n")


def load_holder_names(path: Path, pseudonymizer: Pseudonymizer) -> HolderNames:
    """Reads a holder-name key file (see :meth:`HolderNames.parse`)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise HolderNameKeyError(f"cannot read the holder-name key file {path}") from exc
    return HolderNames.parse(text, pseudonymizer, source=str(path))
