"""The transparency log as a serving process holds it: key, reader, sequencer, witnesses.

``App`` binds its gRPC service (``services.rpc.log``) and HTTP routes
(``services.http.log_routes``); ``realname serve`` runs its sequencer in the
background. The registry appends entries with ``registry.log.append_entry(conn, entry)`` inside
its own ``Database.write`` unit of work, and may call ``log.sequencer.integrate_now()`` (or
``runner.wake()``) when it needs the entry sequenced before it answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import Connection

from registry.clock import Clock, utc_now
from registry.log import storage, witness
from registry.log.errors import LogCorruptedError, LogKeyError
from registry.log.reader import LogReader
from registry.log.sequencer import DEFAULT_INTERVAL, Sequencer, SequencerRunner
from registry.log.signing import DEFAULT_ORIGIN, ensure_log_signer, log_key_path, verifier_key
from registry.log.storage import StoredCheckpoint
from registry.merkle import leaf_hash
from registry.note import (
    CosignatureVerifier,
    Ed25519Signer,
    Ed25519Verifier,
    MalformedKeyError,
    parse_verifier_key,
)
from services.storage.database import Database

WITNESSES_FILE: Final = "witnesses.txt"
"""File under ``<data_dir>/log/`` listing the witness verifier keys the log accepts."""


def witnesses_path(data_dir: Path) -> Path:
    """Return where the accepted witness keys are listed: ``<data_dir>/log/witnesses.txt``."""
    return data_dir / "log" / WITNESSES_FILE


def load_witnesses(path: Path) -> tuple[CosignatureVerifier, ...]:
    """Read witness verifier keys, one per line (``#`` starts a comment); none if no file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return ()
    except OSError as error:
        raise LogKeyError(f"cannot read witness keys {path}: {error}") from error
    witnesses = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            key = parse_verifier_key(text)
        except MalformedKeyError as error:
            raise LogKeyError(f"{path}:{number}: {error}") from error
        if not isinstance(key, CosignatureVerifier):
            raise LogKeyError(f"{path}:{number}: not a cosignature (type 0x04) witness key")
        witnesses.append(key)
    return tuple(witnesses)


INCLUDED: Final = "INCLUDED"
"""Certificate inclusion status: sequenced and under a signed checkpoint."""

PENDING: Final = "PENDING"
"""Certificate inclusion status: appended, not yet sequenced or not yet under a checkpoint."""

NOT_LOGGED: Final = "NOT_LOGGED"
"""Certificate inclusion status: no log entry carries the certificate."""


@dataclass(frozen=True, slots=True)
class CertificateInclusion:
    """Where a certificate's issuance (or renewal) entry stands in the log, with its proof."""

    status: str
    leaf_index: int = 0
    tree_size: int = 0
    hashes: tuple[bytes, ...] = ()
    entry: bytes = b""
    checkpoint: bytes = b""

    @property
    def leaf_hash(self) -> bytes:
        """SHA-256(0x00 || entry), or empty when the entry is not included."""
        return leaf_hash(self.entry) if self.entry else b""


def certificate_inclusion(
    conn: Connection, reader: LogReader, certificate_der: bytes
) -> CertificateInclusion:
    """Return the inclusion proof of the first entry logging ``certificate_der`` (one read)."""
    checkpoint = storage.latest_checkpoint(conn)
    index = storage.index_for_certificate(conn, certificate_der)
    if checkpoint is None or index is None or index >= checkpoint.size:
        logged = index is not None or storage.certificate_pending(conn, certificate_der)
        return CertificateInclusion(PENDING if logged else NOT_LOGGED)
    proof = reader.inclusion_proof(conn, index, checkpoint.size)
    rows = storage.read_entries(conn, index, index + 1)
    if len(rows) != 1:
        raise LogCorruptedError(f"log entry {index} is missing from storage")
    return CertificateInclusion(
        INCLUDED,
        leaf_index=index,
        tree_size=checkpoint.size,
        hashes=proof.hashes,
        entry=rows[0][1],
        checkpoint=checkpoint.signed_note(),
    )


@dataclass
class TransparencyLog:
    """One process's handle on the log stored in ``db``."""

    db: Database
    signer: Ed25519Signer
    reader: LogReader
    sequencer: Sequencer
    witnesses: tuple[CosignatureVerifier, ...] = ()
    clock: Clock = utc_now

    @classmethod
    def create(
        cls,
        db: Database,
        signer: Ed25519Signer,
        *,
        witnesses: Sequence[CosignatureVerifier] = (),
        clock: Clock = utc_now,
    ) -> TransparencyLog:
        """Wire a log over ``db`` signing with ``signer`` (whose name is the origin)."""
        sequencer = Sequencer(db.engine, signer, signer.name, transact=db.write, clock=clock)
        return cls(db, signer, LogReader(), sequencer, tuple(witnesses), clock)

    @classmethod
    def open(cls, db: Database, data_dir: Path, *, origin: str | None = None) -> TransparencyLog:
        """Open the log of a data directory, creating its key on first use."""
        signer = ensure_log_signer(log_key_path(data_dir), origin or DEFAULT_ORIGIN)
        return cls.create(db, signer, witnesses=load_witnesses(witnesses_path(data_dir)))

    @property
    def origin(self) -> str:
        """The log's origin line."""
        return self.signer.name

    @property
    def verifier(self) -> Ed25519Verifier:
        """The verifier of the log's checkpoint signatures."""
        return self.signer.verifier()

    @property
    def verifier_key(self) -> str:
        """The log's verifier key, ``<origin>+<hash>+<base64>``."""
        return verifier_key(self.signer)

    def certificate_inclusion(self, certificate_der: bytes) -> CertificateInclusion:
        """Return the inclusion proof of a certificate's entry, or say it is pending or absent."""
        return self.db.read(lambda conn: certificate_inclusion(conn, self.reader, certificate_der))

    def runner(self, interval: float = DEFAULT_INTERVAL) -> SequencerRunner:
        """A background sequencer loop for this log (start it; stop it at shutdown)."""
        return SequencerRunner(self.sequencer, interval)

    def accept_cosignatures(self, note: bytes) -> StoredCheckpoint:
        """Store the accepted witnesses' cosignatures that ``note`` carries (see ``witness``)."""
        return self.db.write(
            lambda conn: witness.accept_cosignatures(
                conn,
                note,
                origin=self.origin,
                log_verifier=self.verifier,
                witnesses=self.witnesses,
                now=self.clock(),
            )
        )
