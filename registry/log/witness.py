"""Witnessing (C2SP tlog-cosignature): cosign a log's checkpoint only if it extends the last one.

Two halves. The witness side (``cosign_latest``) runs wherever the witness keeps its key and its
memory of the last checkpoint it cosigned; it refuses a checkpoint that is not a consistent
extension of that one. The log side (``accept_cosignatures``) stores cosignatures submitted to
the log, but only valid ones by witnesses the log was configured to accept and only for a
checkpoint the log really signed; the log then serves them with that checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection

from registry.checkpoint import (
    CheckpointError,
    cosign_checkpoint,
    open_checkpoint,
    parse_checkpoint,
)
from registry.log import storage
from registry.log.client import TileClient
from registry.log.errors import CosignatureRejectedError, InconsistencyError, LogError
from registry.log.storage import StoredCheckpoint
from registry.merkle import MerkleError, verify_consistency
from registry.note import (
    CosignatureSigner,
    CosignatureVerifier,
    NoteError,
    Verifier,
    VerifierSet,
    open_note,
)


class WitnessStateError(LogError):
    """Raised when a witness state file is unreadable or belongs to another log."""


@dataclass(frozen=True, slots=True)
class WitnessState:
    """The last checkpoint a witness cosigned for one log."""

    origin: str
    size: int
    root: bytes

    def save(self, path: Path) -> None:
        """Write the state atomically."""
        text = json.dumps(
            {
                "origin": self.origin,
                "size": self.size,
                "root": base64.b64encode(self.root).decode("ascii"),
            }
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> WitnessState | None:
        """Read the state at ``path``, or None if the witness has cosigned nothing yet."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                str(data["origin"]),
                int(data["size"]),
                base64.b64decode(data["root"], validate=True),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, binascii.Error) as error:
            raise WitnessStateError(f"malformed witness state {path}: {error}") from error


def cosign_latest(
    client: TileClient,
    *,
    origin: str,
    log_verifier: Verifier,
    cosigner: CosignatureSigner,
    state: WitnessState | None,
) -> tuple[bytes, WitnessState]:
    """Fetch the log's checkpoint, check it against ``state``, and return it cosigned.

    Raises ``InconsistencyError`` (and cosigns nothing) if the checkpoint's signature fails, or
    if it is smaller than, forks from, or cannot be proven to extend the last one cosigned.
    """
    if state is not None and state.origin != origin:
        raise WitnessStateError(f"witness state is for log {state.origin!r}, not {origin!r}")
    note = client.checkpoint()
    try:
        signed = open_checkpoint(note, origin=origin, log_verifier=log_verifier)
    except (NoteError, CheckpointError) as error:
        raise InconsistencyError(f"checkpoint rejected: {error}") from error
    checkpoint = signed.checkpoint
    if state is not None:
        if checkpoint.size < state.size:
            raise InconsistencyError(
                f"log shrank from {state.size} to {checkpoint.size} entries (rollback)"
            )
        if checkpoint.size == state.size and checkpoint.root_hash != state.root:
            raise InconsistencyError(f"two roots signed for tree size {state.size} (fork)")
        if state.size > 0 and checkpoint.size > state.size:
            proof = client.consistency_proof(state.size, checkpoint.size)
            try:
                verify_consistency(
                    state.size, checkpoint.size, proof, state.root, checkpoint.root_hash
                )
            except MerkleError as error:
                raise InconsistencyError(
                    f"tree {checkpoint.size} does not extend tree {state.size}: {error}"
                ) from error
    cosigned = cosign_checkpoint(signed, cosigner)
    return cosigned, WitnessState(origin, checkpoint.size, checkpoint.root_hash)


def accept_cosignatures(
    conn: Connection,
    note: bytes,
    *,
    origin: str,
    log_verifier: Verifier,
    witnesses: Sequence[CosignatureVerifier],
    now: dt.datetime,
) -> StoredCheckpoint:
    """Store the cosignatures that ``note`` carries by ``witnesses``; return the checkpoint.

    ``note`` is one of this log's checkpoints with the witnesses' cosignature lines added.
    Raises ``CosignatureRejectedError`` (reason in ``reason``) and stores nothing otherwise.
    """
    try:
        opened = open_note(note, VerifierSet([log_verifier, *witnesses]))
    except NoteError as error:
        raise CosignatureRejectedError(f"note rejected: {error}", reason="BAD_NOTE") from error
    if not any(signature.verifier == log_verifier for signature in opened.signatures):
        raise CosignatureRejectedError("note is not signed by this log", reason="NOT_LOG_SIGNED")
    try:
        checkpoint = parse_checkpoint(opened.text)
    except CheckpointError as error:
        raise CosignatureRejectedError(str(error), reason="BAD_NOTE") from error
    if checkpoint.origin != origin:
        raise CosignatureRejectedError("checkpoint names another log", reason="WRONG_ORIGIN")
    stored = storage.checkpoint_at(conn, checkpoint.size)
    if stored is None or not stored.note.startswith(opened.text.encode() + b"\n"):
        raise CosignatureRejectedError(
            f"this log signed no such checkpoint at size {checkpoint.size}",
            reason="UNKNOWN_CHECKPOINT",
        )
    trusted = set(witnesses)
    cosignatures = [
        signature
        for signature in opened.signatures
        if isinstance(signature.verifier, CosignatureVerifier) and signature.verifier in trusted
    ]
    if not cosignatures:
        raise CosignatureRejectedError(
            "no cosignature by a witness this log accepts", reason="UNKNOWN_WITNESS"
        )
    storage.store_cosignatures(conn, checkpoint.size, cosignatures, now)
    updated = storage.checkpoint_at(conn, checkpoint.size)
    if updated is None:
        raise LogError(f"checkpoint {checkpoint.size} vanished while storing cosignatures")
    return updated
