"""The audit trail: group-committed appends, anchoring into the log, verification and pruning.

Reads are recorded asynchronously (batched every few milliseconds); an RPC that wrote waits
until its audit records are committed, so no acknowledged change is missing from the trail.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field

from registry.clock import Clock, utc_now
from registry.log.entries import AuditDigest, decode_entry
from registry.log.storage import PENDING_INSERT_SQL, pending_row
from services.domain.audit import AuditContext, AuditRecord, chain_next
from services.domain.errors import Unavailable
from services.storage import audit_repo as repo
from services.storage.database import Database
from services.storage.rawsql import Tx

log = logging.getLogger(__name__)

ANCHOR_LABEL_PREFIX = "realname-audit:"
"""Labels of the audit-digest log entries: the prefix, then the anchored head id."""


@dataclass
class VerifyReport:
    """What ``verify`` checked and every problem it found."""

    checked: int = 0
    anchors_checked: int = 0
    head_id: int = 0
    base_id: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the trail is intact."""
        return not self.problems


class AuditTrail:
    """Appends audit records in chained batches and checks the chain."""

    def __init__(
        self,
        db: Database,
        clock: Clock = utc_now,
        *,
        flush_interval: float = 0.02,
        wait_timeout: float = 10.0,
    ) -> None:
        self._db = db
        self._clock = clock
        self._interval = flush_interval
        self._wait_timeout = wait_timeout
        lock = threading.Lock()
        # Calls wait on _cond for commits; the writer alone waits on _wake for work, so queueing
        # a record wakes one thread, not every call waiting for an earlier commit.
        self._cond = threading.Condition(lock)
        self._wake = threading.Condition(lock)
        self._queue: list[repo.PendingAudit] = []
        self._enqueued = 0
        self._committed = 0
        self._failures = 0
        self._wanted = 0  # the highest record number a waiting call needs committed
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- recording -------------------------------------------------------------------------

    def submit(
        self,
        principal: str,
        method: str,
        outcome: str,
        context: AuditContext,
        timeout: float | None = None,
    ) -> None:
        """Queues the records of one RPC; waits (at most ``timeout``) for their commit if it wrote.

        A failed append answers the waiting calls UNAVAILABLE at once rather than holding them
        through a database outage; their records stay queued and are written when it is back.
        """
        if not context.subjects and not context.overflow and not context.subscriber_data:
            return
        now = self._clock()
        items = [repo.PendingAudit(now, principal, method, outcome, s) for s in context.subjects]
        if context.overflow or not context.subjects:
            # A bulk call past the subject limit, or a subscriber-data call that named no
            # document (an empty listing, a refused request): one record without a subject.
            items.append(repo.PendingAudit(now, principal, method, outcome, None))
        with self._cond:
            self._queue.extend(items)
            self._enqueued += len(items)
            ticket = self._enqueued
            self._wake.notify()
            if self._thread is None:
                # Not started (tools, tests that never serve): write in the caller's thread.
                self._flush_locked()
                return
            if not context.wrote:
                return
            failures = self._failures
            limit = self._wait_timeout if timeout is None else min(timeout, self._wait_timeout)
            self._wanted = max(self._wanted, ticket)
            self._cond.wait_for(
                lambda: self._committed >= ticket or self._stopping or self._failures != failures,
                max(limit, 0.0),
            )
            if self._committed < ticket and not self._stopping:
                raise Unavailable(
                    "the audit trail could not record this change in time; retry with the same "
                    "request id",
                    reason="AUDIT_UNAVAILABLE",
                )

    def _flush_locked(self) -> None:
        batch, self._queue = self._queue, []
        if not batch:
            return
        try:
            self._db.run_tx(lambda tx: repo.append(tx, batch))
        except Exception:
            self._queue = batch + self._queue
            raise
        self._committed += len(batch)
        self._cond.notify_all()

    def flush(self) -> None:
        """Waits until everything queued so far is committed."""
        with self._cond:
            if self._thread is None:
                self._flush_locked()
                return
            ticket = self._enqueued
            if not self._cond.wait_for(lambda: self._committed >= ticket, self._wait_timeout):
                raise Unavailable("the audit trail is not writing", reason="AUDIT_UNAVAILABLE")

    def start(self) -> None:
        """Starts the background writer."""
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Writes what is queued and stops the writer."""
        with self._cond:
            thread, self._stopping = self._thread, True
            self._cond.notify_all()
            self._wake.notify_all()
        if thread is not None:
            thread.join(timeout=self._wait_timeout)
        with self._cond:
            self._thread = None
            if self._queue:
                self._flush_locked()

    def _run(self) -> None:
        delay = self._interval
        while True:
            with self._cond:
                self._wake.wait_for(lambda: bool(self._queue) or self._stopping, 1.0)
                if self._stopping and not self._queue:
                    return
                batch, self._queue = self._queue, []
            try:
                self._append(batch)
            except Exception as exc:  # keep the records; try again shortly
                log.warning("audit append failed", extra={"fields": {"error": type(exc).__name__}})
                with self._cond:
                    self._queue = batch + self._queue
                    self._failures += 1
                    self._cond.notify_all()
                    if self._stopping:
                        return
                self._sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = self._interval
            with self._cond:
                self._committed += len(batch)
                self._cond.notify_all()
                # Reads alone are gathered for an interval (fewer, larger transactions); a call
                # waiting to answer must not also wait out the interval: what queued during the
                # last append is the next group commit, started at once.
                self._wake.wait_for(
                    lambda: self._stopping or self._wanted > self._committed,
                    self._interval,
                )

    def _append(self, batch: list[repo.PendingAudit]) -> None:
        self._db.run_tx(lambda tx: repo.append(tx, batch))

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            self._wake.wait_for(lambda: self._stopping, seconds)

    # -- anchoring, verification, retention, queries ----------------------------------------

    def anchor(self) -> int | None:
        """Appends the current head to the transparency log as an audit digest, if it moved."""

        def work(tx: Tx) -> int | None:
            head = repo.state(tx)
            if head.head_id == 0 or repo.last_anchor(tx) >= head.head_id:
                return None
            entry = AuditDigest(
                time=self._clock(),
                label=f"{ANCHOR_LABEL_PREFIX}{head.head_id}",
                digest=head.head_chain,
            )
            params, appended = pending_row(entry)
            tx.execute(PENDING_INSERT_SQL, params)
            repo.add_anchor(tx, head.head_id, head.head_chain, appended.leaf_hash, self._clock())
            return head.head_id

        return self._db.run_tx(work)

    def verify(self) -> VerifyReport:
        """Recomputes the chain from its base and checks it against the head and the log."""
        report = VerifyReport()

        def work(tx: Tx) -> None:
            head = repo.state(tx)
            report.head_id, report.base_id = head.head_id, head.base_id
            chain, expected_id = head.base_chain, head.base_id + 1
            chains: dict[int, bytes] = {}
            for record, stored in repo.iterate(tx, head.base_id):
                if record.id != expected_id:
                    report.problems.append(
                        f"records {expected_id}..{record.id - 1} are missing (deleted)"
                    )
                    expected_id = record.id
                chain = chain_next(chain, record)
                if chain != stored:
                    report.problems.append(f"record {record.id} does not match the chain")
                    chain = stored  # report each break once, then follow the stored chain
                chains[record.id] = stored
                report.checked += 1
                expected_id += 1
            if expected_id - 1 != head.head_id:
                report.problems.append(
                    f"the chain ends at {expected_id - 1} but its head says {head.head_id}"
                )
            elif chain != head.head_chain:
                report.problems.append("the last record does not match the recorded head")
            for anchored_id, digest in _anchored_heads(tx):
                if anchored_id <= head.base_id:
                    continue  # pruned by retention
                report.anchors_checked += 1
                if anchored_id > head.head_id:
                    report.problems.append(
                        f"the log anchors head {anchored_id}, beyond the trail's end"
                    )
                elif chains.get(anchored_id) != digest:
                    report.problems.append(
                        f"record {anchored_id} differs from the head anchored in the log"
                    )

        self._db.run_tx(work, readonly=True)
        return report

    def prune(self, before: dt.datetime) -> int:
        """Deletes records older than ``before``; what remains still verifies from the new base."""

        def work(tx: Tx) -> int:
            head = repo.state(tx, lock=True)
            through = repo.last_id_before(tx, before)
            if through is None or through <= head.base_id:
                return 0
            chain = repo.chain_at(tx, through)
            assert chain is not None, "a record below the first kept one exists"
            return repo.prune_through(tx, through, chain)

        return self._db.run_tx(work)

    def query(
        self,
        *,
        subject: bytes | None = None,
        principal: str | None = None,
        since: dt.datetime | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Records of a document pseudonym and/or a principal, newest first."""
        return self._db.run_tx(
            lambda tx: repo.query(
                tx, subject=subject, principal=principal, since=since, limit=limit
            ),
            readonly=True,
        )


def _anchored_heads(tx: Tx) -> list[tuple[int, bytes]]:
    """The (head id, chain) pairs anchored in the log: sequenced and pending entries."""
    rows = tx.all(
        "SELECT entry FROM log_entries WHERE certificate_sha256 IS NULL "
        "UNION ALL SELECT entry FROM log_pending WHERE certificate_sha256 IS NULL"
    )
    heads = []
    for (data,) in rows:
        entry = decode_entry(bytes(data))
        if isinstance(entry, AuditDigest) and entry.label.startswith(ANCHOR_LABEL_PREFIX):
            heads.append((int(entry.label[len(ANCHOR_LABEL_PREFIX) :]), entry.digest))
    return heads
