"""Offline delivery confirmations, queued in a local append-only file until they sync.

A courier without coverage confirms handovers on the device; each confirmation is appended to a
JSON-lines file and fsynced before :meth:`ConfirmationQueue.append` returns, so an acknowledged
confirmation survives a crash or power loss. When coverage returns,
:meth:`~ConfirmationQueue.pending` yields the confirmations not yet synced, in order; each is
sent through ``ConfirmDelivery`` (idempotent on the server, which keeps ``delivered_at``, the
offline time) and then marked synced with :meth:`~ConfirmationQueue.mark_synced`, which appends a
tombstone line. Marking twice, or syncing an entry again after a crash between the call and the
tombstone, is harmless because the server side is idempotent. Lines::

    {"v":1,"type":"confirmation","id":"<32 hex>","token":"<base64 token>",
     "token_digest":"<hex SHA-256 of the token body>","document_type":1,
     "presented_commitment":"<hex>","recipient_match":true,"offline_reason":"OK",
     "stale_bundle":false,"courier_staff_id":"...","delivered_at":"2025-06-01T10:00:00Z"}
    {"v":1,"type":"synced","id":"<32 hex>","synced_at":"2025-06-01T12:00:00Z"}

No document number is written. The presented document is kept as its commitment under the
token's salt and KDF parameters, which is all the server needs to re-check the match (equal to
the token's commitment iff the documents match) and is no more revealing than the token itself.

Crash tolerance: a line is written with one ``write`` and then fsynced; a crash can leave only the
last line torn (no newline). Readers ignore a torn last line (it was never acknowledged), and the
next append truncates it away first so it cannot glue onto a good line. Any other line that does
not parse raises :class:`~registry.delivery.errors.QueueCorruptError`: that is damage, not a
crash. Writers serialise with ``flock``; :meth:`~ConfirmationQueue.compact` rewrites the file
without synced entries through an atomic rename, and appenders re-open if they raced it.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from registry.delivery.commitment import COMMITMENT_SIZE, commit, document_type
from registry.delivery.errors import (
    DeliveryError,
    QueueCorruptError,
    QueueError,
    TokenDecodeError,
    UnsupportedVersionError,
)
from registry.delivery.token import (
    OBSOLETE_VERSIONS,
    SIGNATURE_SIZE,
    ShipmentToken,
    decode_token,
)
from registry.subscribers import DocumentType

QUEUE_VERSION: Final = 1
"""The line format version written and read."""

_TIME: Final = "%Y-%m-%dT%H:%M:%SZ"
_ID_RE: Final = re.compile(r"[0-9a-f]{32}")
_MAX_STAFF_ID: Final = 64
_READ_CHUNK: Final = 4096
_T = TypeVar("_T")


def _format_time(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        raise QueueError("queue times must be timezone-aware")
    return moment.astimezone(dt.UTC).strftime(_TIME)


def _parse_time(text: object) -> dt.datetime:
    if not isinstance(text, str):
        raise ValueError("time must be a string")
    return dt.datetime.strptime(text, _TIME).replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Confirmation:
    """One offline handover record; build it with :func:`new_confirmation`."""

    id: str
    token: bytes
    token_digest: bytes
    document_type: DocumentType
    presented_commitment: bytes
    recipient_match: bool
    offline_reason: str
    stale_bundle: bool
    courier_staff_id: str
    delivered_at: dt.datetime

    def __post_init__(self) -> None:
        """Refuse a record that could not be written and read back as the same record."""
        if not _ID_RE.fullmatch(self.id):
            raise QueueError("confirmation id must be 32 lower-case hex digits")
        if len(self.token_digest) != 32 or len(self.presented_commitment) != COMMITMENT_SIZE:
            raise QueueError("token digest and presented commitment must be 32 bytes")
        staff = self.courier_staff_id
        if not staff or len(staff) > _MAX_STAFF_ID or not staff.isprintable():
            raise QueueError(f"courier staff id must be 1-{_MAX_STAFF_ID} printable characters")
        object.__setattr__(self, "document_type", document_type(self.document_type))
        if self.delivered_at.tzinfo is None:
            raise QueueError("delivered_at must be timezone-aware")
        object.__setattr__(
            self, "delivered_at", self.delivered_at.astimezone(dt.UTC).replace(microsecond=0)
        )
        try:
            digest = decode_token(self.token).digest
        except UnsupportedVersionError:
            if not self.token or self.token[0] not in OBSOLETE_VERSIONS:
                raise QueueError("queued token has an unknown version") from None
            # Queued before an upgrade: keep it, so that sync sends it and reports the server's
            # refusal (with its reason) instead of the whole queue failing to read.
            digest = hashlib.sha256(self.token[:-SIGNATURE_SIZE]).digest()
        except TokenDecodeError as error:
            raise QueueError(f"queued token does not decode: {error}") from None
        if digest != self.token_digest:
            raise QueueError("token digest does not match the queued token")

    def to_line(self) -> bytes:
        """Return the record as one JSON line, newline included."""
        record = {
            "v": QUEUE_VERSION,
            "type": "confirmation",
            "id": self.id,
            "token": base64.b64encode(self.token).decode("ascii"),
            "token_digest": self.token_digest.hex(),
            "document_type": int(self.document_type),
            "presented_commitment": self.presented_commitment.hex(),
            "recipient_match": self.recipient_match,
            "offline_reason": self.offline_reason,
            "stale_bundle": self.stale_bundle,
            "courier_staff_id": self.courier_staff_id,
            "delivered_at": _format_time(self.delivered_at),
        }
        return _line(record)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Confirmation:
        """Rebuild a confirmation from its parsed JSON line (``ValueError`` if malformed)."""
        token = base64.b64decode(_typed(record, "token", str), validate=True)
        match, stale = record.get("recipient_match"), record.get("stale_bundle")
        if not isinstance(match, bool) or not isinstance(stale, bool):
            raise ValueError("recipient_match and stale_bundle must be booleans")
        return cls(
            id=_typed(record, "id", str),
            token=token,
            token_digest=bytes.fromhex(_typed(record, "token_digest", str)),
            document_type=DocumentType(_typed(record, "document_type", int)),
            presented_commitment=bytes.fromhex(_typed(record, "presented_commitment", str)),
            recipient_match=match,
            offline_reason=_typed(record, "offline_reason", str),
            stale_bundle=stale,
            courier_staff_id=_typed(record, "courier_staff_id", str),
            delivered_at=_parse_time(record.get("delivered_at")),
        )


def _typed(record: dict[str, Any], name: str, kind: type[_T]) -> _T:
    value = record.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} must be a {kind.__name__}")
    return value


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def new_confirmation(
    token: bytes | ShipmentToken,
    presented_doc_type: DocumentType | int,
    presented_number: str,
    *,
    courier_staff_id: str,
    delivered_at: dt.datetime,
    offline_reason: str,
    stale_bundle: bool = False,
) -> Confirmation:
    """Build a confirmation: commit the presented document as the token says, drop the number.

    ``offline_reason`` is the offline verdict's reason at the door, kept for the record.
    """
    decoded = token if isinstance(token, ShipmentToken) else decode_token(token)
    fields = decoded.fields
    presented = commit(presented_doc_type, presented_number, fields.salt, fields.kdf)
    return Confirmation(
        id=secrets.token_hex(16),
        token=decoded.encoded,
        token_digest=decoded.digest,
        document_type=document_type(presented_doc_type),
        presented_commitment=presented,
        recipient_match=hmac.compare_digest(presented, fields.commitment),
        offline_reason=offline_reason,
        stale_bundle=stale_bundle,
        courier_staff_id=courier_staff_id,
        delivered_at=delivered_at,
    )


@dataclass(frozen=True, slots=True)
class QueueContents:
    """What a queue file holds: confirmations in order, the synced ids, and a torn tail if any."""

    confirmations: tuple[Confirmation, ...]
    synced: frozenset[str]
    torn_tail: bool
    records: int

    def pending(self) -> tuple[Confirmation, ...]:
        """Confirmations without a tombstone, in file order, each id once."""
        seen: set[str] = set()
        out: list[Confirmation] = []
        for confirmation in self.confirmations:
            if confirmation.id not in self.synced and confirmation.id not in seen:
                seen.add(confirmation.id)
                out.append(confirmation)
        return tuple(out)


def _parse(data: bytes) -> QueueContents:
    lines = data.split(b"\n")
    # Everything after the last newline is a line whose write never completed.
    torn = lines.pop() != b""
    confirmations: list[Confirmation] = []
    synced: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or record.get("v") != QUEUE_VERSION:
                raise ValueError(f"not a version {QUEUE_VERSION} record")
            kind = record.get("type")
            if kind == "confirmation":
                confirmations.append(Confirmation.from_record(record))
            elif kind == "synced":
                identifier = _typed(record, "id", str)
                if not _ID_RE.fullmatch(identifier):
                    raise ValueError("malformed id")
                _parse_time(record.get("synced_at"))
                synced.add(identifier)
            else:
                raise ValueError(f"unknown record type {kind!r}")
        except (ValueError, DeliveryError) as error:
            raise QueueCorruptError(f"queue line {number} is corrupt: {error}") from None
    return QueueContents(tuple(confirmations), frozenset(synced), torn, len(lines))


def parse_queue(data: bytes) -> QueueContents:
    """Read a queue's lines from bytes (a synced copy, an upload) as the file is read."""
    return _parse(data)


class ConfirmationQueue:
    """An append-only JSON-lines queue of offline confirmations at ``path`` (created on need)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Use the queue file at ``path``; nothing is opened until the first call."""
        self._path = Path(path)

    @property
    def path(self) -> Path:
        """The queue file."""
        return self._path

    def append(self, confirmation: Confirmation) -> None:
        """Append a confirmation durably (fsynced before returning)."""
        self._append(confirmation.to_line())

    def mark_synced(self, confirmation_id: str, *, synced_at: dt.datetime | None = None) -> None:
        """Append the tombstone that marks ``confirmation_id`` synced (idempotent)."""
        if not _ID_RE.fullmatch(confirmation_id):
            raise QueueError("confirmation id must be 32 lower-case hex digits")
        moment = synced_at if synced_at is not None else dt.datetime.now(dt.UTC)
        record = {
            "v": QUEUE_VERSION,
            "type": "synced",
            "id": confirmation_id,
            "synced_at": _format_time(moment),
        }
        self._append(_line(record))

    def read(self) -> QueueContents:
        """Read the whole queue (an absent file is an empty queue)."""
        try:
            with self._path.open("rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
                data = handle.read()
        except FileNotFoundError:
            return QueueContents((), frozenset(), torn_tail=False, records=0)
        return _parse(data)

    def pending(self) -> Iterator[Confirmation]:
        """Yield the confirmations not yet synced, oldest first."""
        yield from self.read().pending()

    def compact(self) -> int:
        """Rewrite the file with only the pending confirmations; return the lines dropped."""
        fd = self._open_locked()
        try:
            with os.fdopen(os.dup(fd), "rb") as handle:
                contents = _parse(handle.read())
            keep = contents.pending()
            dropped = contents.records - len(keep)
            # mkstemp creates the file 0600, as the queue itself is.
            temporary_fd, temporary = tempfile.mkstemp(
                dir=self._path.parent, prefix=f".{self._path.name}."
            )
            try:
                with os.fdopen(temporary_fd, "wb") as out:
                    out.write(b"".join(confirmation.to_line() for confirmation in keep))
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, self._path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            _fsync_directory(self._path.parent)
            return dropped
        finally:
            # Closing releases the lock; appenders waiting on the old inode then see it replaced.
            os.close(fd)

    def _open_locked(self) -> int:
        """Open the file for appending with an exclusive lock, re-opening after a compaction."""
        while True:
            created = not self._path.exists()
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            if created:
                _fsync_directory(self._path.parent)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                current: int | None = os.stat(self._path).st_ino
            except FileNotFoundError:
                current = None  # removed after our open: open (and create) it again
            except BaseException:
                os.close(fd)
                raise
            if current == os.fstat(fd).st_ino:
                return fd
            # A compaction replaced the file while we waited for the lock: use the new one.
            os.close(fd)

    def _append(self, line: bytes) -> None:
        fd = self._open_locked()
        try:
            _drop_torn_tail(fd)
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)


def _drop_torn_tail(fd: int) -> None:
    """Truncate an unterminated last line (a write a crash interrupted) before appending."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - _READ_CHUNK)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            os.ftruncate(fd, start + newline + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def _fsync_directory(directory: Path) -> None:
    # A new or renamed file's directory entry is durable only once the directory is fsynced.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
