"""The audit trail's record format and hash chain, and the per-RPC context that collects subjects.

Every RPC that reads or writes subscriber data leaves one record per pseudonymous document it
touched: who, which RPC, the outcome, when — and one without a subject when it noted none (each
service binding declares which of its RPCs touch subscriber data). Records are chained — each
record's ``chain`` is SHA-256 over the previous chain value and the record's canonical bytes —
so editing, inserting or deleting a record breaks every chain value after it. The head of the
chain is anchored into the transparency log at intervals, so rewriting the whole chain is caught
too.

Domain and storage code report subjects with ``note_subject`` (the pseudonymizer does it for
every document key it derives, the card repository for every card row it reads); the RPC layer
opens a context per call and hands the collected subjects to the trail at the end.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import re
import struct
from dataclasses import dataclass, field
from typing import Protocol

GENESIS = bytes(32)
"""The chain value before the first record."""

_DOMAIN = b"realname/audit/v1\n"
# One RPC listing thousands of documents (a bulk import) is recorded as one record without a
# subject rather than thousands: the trail stays queryable and bounded.
MAX_SUBJECTS_PER_CALL = 64


@dataclass(frozen=True)
class AuditRecord:
    """One audited access: ``subject`` is a document pseudonym (None for a bulk call)."""

    id: int
    at: dt.datetime
    principal: str
    method: str
    outcome: str
    subject: bytes | None

    def encode(self) -> bytes:
        """The record's canonical bytes: fixed-width integers and length-prefixed fields."""
        ms = int(self.at.timestamp() * 1000)
        parts = [struct.pack(">QQ", self.id, ms)]
        for text in (self.principal, self.method, self.outcome):
            raw = text.encode()
            parts.append(struct.pack(">H", len(raw)) + raw)
        subject = self.subject or b""
        parts.append(struct.pack(">B", len(subject)) + subject)
        return b"".join(parts)


def chain_next(previous: bytes, record: AuditRecord) -> bytes:
    """The chain value after ``record``, given the value before it."""
    return hashlib.sha256(_DOMAIN + previous + record.encode()).digest()


PRUNE_LABEL_PREFIX = "realname-audit-prune:"
"""Labels of the log entries that record a prune (the entry's digest is the new base's chain)."""

_PRUNE_LABEL = re.compile(r"(\d+)-(\d+):keep=(\d+)s:newest=(\d+)ms")


@dataclass(frozen=True)
class PruneEvent:
    """A prune as the transparency log records it: the range deleted, the new base, the policy.

    ``newest_at`` is the time of the last deleted record and ``retention`` the period the prune
    kept, so anyone reading the log can check that nothing younger than the retention went.
    """

    first_id: int
    through_id: int
    base_chain: bytes
    retention: dt.timedelta
    newest_at: dt.datetime

    def label(self) -> str:
        """The log entry's label: the range, the retention and the newest deleted record."""
        ms = int(self.newest_at.timestamp() * 1000)
        keep = int(self.retention.total_seconds())
        return f"{PRUNE_LABEL_PREFIX}{self.first_id}-{self.through_id}:keep={keep}s:newest={ms}ms"

    @classmethod
    def parse(cls, label: str, digest: bytes) -> PruneEvent | None:
        """The prune a log entry's label and digest record; None for any other label."""
        if not label.startswith(PRUNE_LABEL_PREFIX):
            return None
        found = _PRUNE_LABEL.fullmatch(label[len(PRUNE_LABEL_PREFIX) :])
        if found is None:
            return None
        first, through, keep, ms = (int(g) for g in found.groups())
        newest = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        return cls(first, through, digest, dt.timedelta(seconds=keep), newest)

    def younger_than_retention(self, pruned_at: dt.datetime) -> bool:
        """Whether the newest record this prune says it deleted was within its own retention."""
        return self.newest_at > pruned_at - self.retention


@dataclass
class AuditContext:
    """Subjects touched and whether anything was written, during one RPC.

    ``subscriber_data``: the RPC is declared to read or change subscriber data, so it is
    recorded (without a subject) even when it noted no document.
    """

    subjects: list[bytes] = field(default_factory=list)
    overflow: int = 0
    wrote: bool = False
    subscriber_data: bool = False

    def add(self, subject: bytes) -> None:
        """Notes a subject once."""
        if subject in self.subjects:
            return
        if len(self.subjects) >= MAX_SUBJECTS_PER_CALL:
            self.overflow += 1
            return
        self.subjects.append(subject)


_current: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar(
    "audit", default=None
)


def begin(*, subscriber_data: bool = False) -> AuditContext:
    """Opens a fresh context for the RPC running on this thread."""
    context = AuditContext(subscriber_data=subscriber_data)
    _current.set(context)
    return context


def end() -> None:
    """Closes the thread's context (worker threads are reused across RPCs)."""
    _current.set(None)


def note_subject(subject: bytes) -> None:
    """Records that the running RPC touched this document pseudonym (no-op outside an RPC)."""
    context = _current.get()
    if context is not None:
        context.add(subject)


def note_write() -> None:
    """Records that the running RPC committed a write (its audit record is then awaited)."""
    context = _current.get()
    if context is not None:
        context.wrote = True


class AuditSink(Protocol):
    """Where the RPC layer hands each call's audit context (the audit trail)."""

    def submit(
        self,
        principal: str,
        method: str,
        outcome: str,
        context: AuditContext,
        timeout: float | None = None,
    ) -> None:
        """Records the call; waits (at most ``timeout`` seconds) for the commit if it wrote."""
