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
from services.domain.audit import GENESIS, AuditContext, AuditRecord, PruneEvent, chain_next
from services.domain.errors import Unavailable
from services.storage import audit_repo as repo
from services.storage.database import Database
from services.storage.rawsql import Tx

log = logging.getLogger(__name__)

ANCHOR_LABEL_PREFIX = "realname-audit:"
"""Labels of the audit-digest log entries: the prefix, then the anchored head id."""

# How long a record can wait in the writer's queue before its append commits: a record chained
# after an anchored head is taken to be at most this much older than the anchor.
_QUEUE_SLACK = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class UnanchoredTail:
    """Records after the last anchored head: removing them leaves nothing for verify to see."""

    first_id: int
    last_id: int
    first_at: dt.datetime
    last_at: dt.datetime

    @property
    def records(self) -> int:
        """How many records the tail holds."""
        return self.last_id - self.first_id + 1


@dataclass
class VerifyReport:
    """What ``verify`` checked and every problem it found."""

    checked: int = 0
    anchors_checked: int = 0
    head_id: int = 0
    base_id: int = 0
    prunes_checked: int = 0
    unsequenced: int = 0
    anchored_id: int = 0
    anchored_at: dt.datetime | None = None
    tail: UnanchoredTail | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

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
            idle = not self._queue
            self._queue.extend(items)
            self._enqueued += len(items)
            ticket = self._enqueued
            if idle or context.wrote:
                # Only an idle writer or a waiting call needs the writer now; waking it for
                # every read (it re-sleeps while gathering) cost a thread switch per call.
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

    def verify(
        self,
        retention: dt.timedelta | None = None,
        anchor_window: dt.timedelta | None = None,
    ) -> VerifyReport:
        """Recomputes the chain from its base and checks it against the head and the log.

        Only entries the log has sequenced count (a pending one is not public yet). The base
        must be the one the last logged prune recorded, and no logged prune may have deleted
        records younger than its retention, or than ``retention`` (the policy) when given.
        The records after the last anchor are reported as the unanchored tail (nothing can
        show they were truncated); with ``anchor_window``, a tail older than the window is
        warned about: anchoring has stopped and the tail keeps growing.
        """
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
            logged = _logged_audit_entries(tx)
            report.unsequenced = logged.unsequenced
            for anchored_id, digest, _ in logged.anchors:
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
            _check_prunes(report, head, logged, retention)
            _find_tail(tx, report, head, logged)
            if anchor_window is not None:
                _warn_stale_tail(report, self._clock(), anchor_window)

        self._db.run_tx(work, readonly=True)
        return report

    def prune(self, retention: dt.timedelta) -> int:
        """Deletes records older than ``retention`` and logs the prune; the rest still verifies.

        The prune's log entry (range, new base, retention) is appended in the same transaction
        as the delete, so a base no logged prune explains is a deletion ``verify`` reports.
        """
        now = self._clock()

        def work(tx: Tx) -> int:
            head = repo.state(tx, lock=True)
            through = repo.last_id_before(tx, now - retention)
            if through is None or through <= head.base_id:
                return 0
            found = repo.records_after(tx, through - 1, 1)
            assert found and found[0][0].id == through, "a record below the first kept one exists"
            ((newest, chain),) = found
            event = PruneEvent(head.base_id + 1, through, chain, retention, newest.at)
            params, _ = pending_row(AuditDigest(time=now, label=event.label(), digest=chain))
            tx.execute(PENDING_INSERT_SQL, params)
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


@dataclass
class _LoggedAudit:
    """The audit trail's entries in the log: anchors and prunes, each with its entry time."""

    anchors: list[tuple[int, bytes, dt.datetime]] = field(default_factory=list)
    prunes: list[tuple[PruneEvent, dt.datetime]] = field(default_factory=list)
    pending_prunes: list[PruneEvent] = field(default_factory=list)
    unsequenced: int = 0


def _logged_audit_entries(tx: Tx) -> _LoggedAudit:
    """Reads the audit entries of the log: sequenced ones count, pending ones are only noted."""
    found = _LoggedAudit()
    rows = tx.all(
        "SELECT entry, 1 FROM log_entries WHERE certificate_sha256 IS NULL "
        "UNION ALL SELECT entry, 0 FROM log_pending WHERE certificate_sha256 IS NULL"
    )
    for data, sequenced in rows:
        entry = decode_entry(bytes(data))
        if not isinstance(entry, AuditDigest):
            continue
        prune = PruneEvent.parse(entry.label, entry.digest)
        anchor = entry.label.startswith(ANCHOR_LABEL_PREFIX)
        if not sequenced:
            found.unsequenced += int(anchor or prune is not None)
            if prune is not None:
                found.pending_prunes.append(prune)
        elif prune is not None:
            found.prunes.append((prune, entry.time))
        elif anchor:
            head_id = int(entry.label[len(ANCHOR_LABEL_PREFIX) :])
            found.anchors.append((head_id, entry.digest, entry.time))
    found.prunes.sort(key=lambda item: item[0].through_id)
    return found


def _find_tail(tx: Tx, report: VerifyReport, head: repo.ChainState, logged: _LoggedAudit) -> None:
    """Notes the last anchor within the trail and the records after it."""
    for anchored_id, _, anchored_at in logged.anchors:
        if report.anchored_id < anchored_id <= head.head_id:
            report.anchored_id, report.anchored_at = anchored_id, anchored_at
    after = max(report.anchored_id, head.base_id)
    if head.head_id <= after:
        return
    first = repo.records_after(tx, after, 1)
    last = repo.records_after(tx, head.head_id - 1, 1)
    if first and last:  # else the chain is broken and verify has said so
        report.tail = UnanchoredTail(first[0][0].id, last[0][0].id, first[0][0].at, last[0][0].at)


def _warn_stale_tail(report: VerifyReport, now: dt.datetime, window: dt.timedelta) -> None:
    """Warns when the tail is older than the window: anchoring stopped, so the tail grows."""
    tail = report.tail
    if tail is not None and now - tail.first_at > window + _QUEUE_SLACK:
        report.warnings.append(
            f"records since {tail.first_at.isoformat(timespec='seconds')} are unanchored, "
            f"longer than the anchor window of {window.total_seconds():g} s: "
            "is `realname serve` anchoring?"
        )


def _check_prunes(
    report: VerifyReport,
    head: repo.ChainState,
    logged: _LoggedAudit,
    retention: dt.timedelta | None,
) -> None:
    """Checks the trail's base against the logged prunes, and each prune against its policy."""
    last = logged.prunes[-1][0] if logged.prunes else None
    if head.base_id == 0 and head.base_chain != GENESIS:
        report.problems.append("the chain's base was changed though nothing was pruned")
    elif head.base_id > 0 and (last is None or last.through_id != head.base_id):
        pending = any(p.through_id == head.base_id for p in logged.pending_prunes)
        report.problems.append(
            f"records 1..{head.base_id} are gone and no logged prune explains base "
            f"{head.base_id}"
            + (" (its prune entry is not sequenced yet: run `realname log integrate`)"
               if pending else "")
        )  # fmt: skip
    elif last is not None and last.base_chain != head.base_chain:
        report.problems.append(f"base {head.base_id} differs from the chain its prune logged")
    if last is not None and last.through_id > head.base_id:
        report.problems.append(
            f"the log records a prune through {last.through_id}, past the base {head.base_id}"
        )
    next_first = 1
    for event, at in logged.prunes:
        report.prunes_checked += 1
        if event.first_id != next_first:
            report.problems.append(
                f"records {next_first}..{event.first_id - 1} left the trail with no logged prune"
            )
        next_first = event.through_id + 1
        if event.younger_than_retention(at):
            report.problems.append(
                f"the prune through {event.through_id} deleted records younger than its retention"
            )
        if retention is not None and event.retention < retention:
            report.problems.append(
                f"the prune through {event.through_id} kept {_days(event.retention)}, less "
                f"than the retention of {_days(retention)}"
            )
        # A record chained after an anchored head was appended after that anchor: if the
        # anchor is younger than the retention, so is every record the prune deleted past it.
        for anchored_id, _, anchored_at in logged.anchors:
            if anchored_id < event.through_id and anchored_at - _QUEUE_SLACK > at - event.retention:
                report.problems.append(
                    f"the prune through {event.through_id} deleted record {anchored_id + 1}, "
                    f"appended after the anchor of {anchored_at.isoformat(timespec='seconds')}, "
                    "younger than the retention"
                )
                break


def _days(period: dt.timedelta) -> str:
    return f"{period.total_seconds() / 86400:g} days"
