"""The log's signing key: an Ed25519 C2SP signer key kept in a file in the data directory.

The key is named after the log's origin (the convention of C2SP logs: verifiers look a
checkpoint's signature up by the origin), so the verifier key ``<origin>+<hash>+<base64>``
tells a client both which log and which key to trust.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Final

from registry.log.errors import LogKeyError
from registry.note import (
    Ed25519Signer,
    MalformedKeyError,
    generate_signer_key,
    is_valid_key_name,
    parse_signer_key,
)

DEFAULT_ORIGIN: Final = "realname.example/log"
"""The origin line of checkpoints unless configured otherwise."""

KEY_FILE_NAME: Final = "log.key"
"""Name of the signer key file inside the log's key directory."""


def log_key_path(data_dir: Path) -> Path:
    """Return where the log key lives under a data directory: ``<data_dir>/log/log.key``."""
    return data_dir / "log" / KEY_FILE_NAME


def load_log_signer(path: Path, origin: str) -> Ed25519Signer:
    """Load the log's signer key from ``path`` and check that it is named ``origin``."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise LogKeyError(f"cannot read the log key {path}: {error}") from error
    try:
        signer = parse_signer_key(text)
    except MalformedKeyError as error:
        raise LogKeyError(f"{path} is not a C2SP signer key: {error}") from error
    if not isinstance(signer, Ed25519Signer):
        raise LogKeyError(f"{path} is a witness key, not a log key")
    if signer.name != origin:
        raise LogKeyError(
            f"{path} signs for origin {signer.name!r}, not {origin!r}: a log cannot change "
            "its origin under the same key"
        )
    return signer


def ensure_log_signer(path: Path, origin: str = DEFAULT_ORIGIN) -> Ed25519Signer:
    """Load the log key at ``path``, creating it (mode 0600) first if it does not exist.

    Creation is atomic: the key is written to a private temporary file and linked into place,
    so processes starting together agree on one key and none ever reads a half-written file.
    """
    if not is_valid_key_name(origin):
        raise LogKeyError(f"{origin!r} cannot name a log key (no spaces or '+')")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        skey, _vkey = generate_signer_key(origin)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as out:
                out.write(skey + "\n")
                out.flush()
                os.fsync(out.fileno())
            # If another process linked its key first, that key is the log's key.
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            temporary.unlink()
    return load_log_signer(path, origin)


def verifier_key(signer: Ed25519Signer) -> str:
    """Return the verifier key (``<origin>+<hash>+<base64>``) clients use to check checkpoints."""
    return signer.verifier().verifier_key
