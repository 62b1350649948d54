"""C2SP tlog-checkpoint: the signed tree head of the transparency log, as a signed note.

Body: origin line, decimal tree size, base64 root hash, optional extension lines, each ending in
a newline. Parsing refuses anything but the one canonical spelling of a checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

from registry.merkle import HASH_SIZE, MAX_TREE_SIZE
from registry.note import (
    CosignatureSigner,
    Note,
    Signer,
    Verifier,
    VerifierSet,
    WitnessPolicy,
    open_note,
    sign_note,
)

_SIZE_RE: Final = re.compile(r"0|[1-9][0-9]*")
# Checkpoint lines may hold any text but ASCII controls (newline separates lines).
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f]")


class CheckpointError(Exception):
    """Base class of the checkpoint errors; signature problems raise ``registry.note`` errors."""


class MalformedCheckpointError(CheckpointError):
    """Raised when checkpoint text or fields are not exactly as tlog-checkpoint specifies."""


class OriginMismatchError(CheckpointError):
    """Raised when a checkpoint names another log than the one expected."""


class MissingLogSignatureError(CheckpointError):
    """Raised when a checkpoint is not signed by the log's own key."""


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, tree size, root hash and optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse fields that cannot be written as a well-formed checkpoint."""
        _check_line(self.origin, "origin")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise MalformedCheckpointError(f"tree size {self.size} out of range")
        if len(self.root_hash) != HASH_SIZE:
            raise MalformedCheckpointError(f"root hash is {len(self.root_hash)} bytes")
        for extension in self.extensions:
            _check_line(extension, "extension line")


@dataclass(frozen=True)
class SignedCheckpoint:
    """A verified checkpoint, the note it came in, and the witnesses that cosigned it."""

    checkpoint: Checkpoint
    note: Note
    witnesses: tuple[Verifier, ...] = ()


def format_checkpoint(checkpoint: Checkpoint) -> str:
    """Return the checkpoint's note text."""
    root = base64.b64encode(checkpoint.root_hash).decode("ascii")
    lines = [checkpoint.origin, str(checkpoint.size), root, *checkpoint.extensions]
    return "\n".join(lines) + "\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse checkpoint note text, refusing every non-canonical spelling."""
    if not text.endswith("\n"):
        raise MalformedCheckpointError("checkpoint must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise MalformedCheckpointError("checkpoint needs origin, size and root hash lines")
    origin, size_text, root_text, *extensions = lines
    if not _SIZE_RE.fullmatch(size_text):
        raise MalformedCheckpointError(f"tree size {size_text!r} is not a canonical decimal")
    try:
        root_hash = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise MalformedCheckpointError("root hash is not base64") from error
    if base64.b64encode(root_hash).decode("ascii") != root_text:
        raise MalformedCheckpointError("root hash is not canonical base64")
    return Checkpoint(origin, int(size_text), root_hash, tuple(extensions))


def sign_checkpoint(
    checkpoint: Checkpoint, log_signer: Signer, *cosigners: CosignatureSigner
) -> bytes:
    """Return the checkpoint as a note signed by the log and, optionally, by cosigners."""
    return sign_note(format_checkpoint(checkpoint), log_signer, *cosigners)


def cosign_checkpoint(signed: SignedCheckpoint, cosigner: CosignatureSigner) -> bytes:
    """Return the signed checkpoint with ``cosigner``'s cosignature added (or refreshed)."""
    return sign_note(signed.note, cosigner)


def open_checkpoint(
    message: bytes,
    *,
    origin: str,
    log_verifier: Verifier,
    witness_policy: WitnessPolicy | None = None,
) -> SignedCheckpoint:
    """Verify a signed checkpoint of log ``origin`` and parse it.

    The log's signature is required; with ``witness_policy`` its k-of-n cosignatures are too.
    Signatures by other keys are ignored. Raises ``registry.note`` errors for bad signatures.
    """
    witnesses = witness_policy.witnesses if witness_policy is not None else ()
    note = open_note(message, VerifierSet([log_verifier, *witnesses]))
    if not any(signature.verifier == log_verifier for signature in note.signatures):
        raise MissingLogSignatureError(f"checkpoint not signed by {log_verifier.name}")
    checkpoint = parse_checkpoint(note.text)
    if checkpoint.origin != origin:
        raise OriginMismatchError(f"checkpoint is for {checkpoint.origin!r}, not {origin!r}")
    cosigned_by = witness_policy.check(note) if witness_policy is not None else ()
    return SignedCheckpoint(checkpoint, note, cosigned_by)


def _check_line(line: str, what: str) -> None:
    if not line:
        raise MalformedCheckpointError(f"empty {what}")
    if _CONTROL_RE.search(line):
        raise MalformedCheckpointError(f"{what} contains control characters")
