"""The legacy deadline sweep: staged suspension of unverified legacy cards, and SMS notices.

For each operator with a deadline policy, on day D an unverified live card is due at stage
FULL before the deadline, OUTGOING_BARRED from the deadline, ALL_BARRED from deadline + grace,
and terminated (DEACTIVATED) from deadline + grace + termination. No stage reaches a card before
the card's own notice of it has taken effect: the sweep owes a card the notice of its next stage
once that stage starts within ``NOTICE_DAYS`` of D (and the notice of the stage before has taken
effect), effective on the stage's date but never less than ``NOTICE_DAYS`` after D, so a late
first sweep sends the notice and starts the clock. Each card is set to the most severe stage due
on D whose notice has taken effect (so an extended deadline gives service back, but a terminated
card stays terminated). The sweep walks the cards by id in batches, each batch its own
transaction together with the sweep's progress, so a crashed run resumes after its last batch,
and a second run at the same date finds nothing to change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from registry.clock import Clock, utc_now
from services.domain.records import PolicyRecord
from services.storage import legacy_repo
from services.storage.database import Database
from services.storage.rawsql import Tx

NOTICE_DAYS = 7
DEFAULT_BATCH = 10_000
FULL, OUTGOING_BARRED, ALL_BARRED, TERMINATED = (
    "FULL", "OUTGOING_BARRED", "ALL_BARRED", "TERMINATED",
)  # fmt: skip


STAGES = (FULL, OUTGOING_BARRED, ALL_BARRED, TERMINATED)  # in order of severity


def stage_starts(policy: PolicyRecord) -> list[tuple[str, dt.date]]:
    """Each stage after FULL with the date the operator's calendar starts it, in order."""
    barred_all = policy.deadline + dt.timedelta(days=policy.grace_days)
    terminated = barred_all + dt.timedelta(days=policy.termination_days)
    return [(OUTGOING_BARRED, policy.deadline), (ALL_BARRED, barred_all), (TERMINATED, terminated)]


def stage_on(policy: PolicyRecord, day: dt.date) -> str:
    """The stage the calendar puts an unverified card of this operator at on ``day`` (a card
    reaches it only once its notice of it has taken effect)."""
    stage = FULL
    for later, starts in stage_starts(policy):
        if day >= starts:
            stage = later
    return stage


@dataclass(frozen=True)
class Notice:
    """One SMS notice owed: the card's number, operator, coming stage and its date."""

    msisdn: str
    operator_id: str
    stage: str
    effective_on: dt.date


@dataclass
class SweepReport:
    """What a sweep changed (or, dry, would change)."""

    day: dt.date
    changed: dict[str, int] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)
    batches: int = 0
    scanned_ids: int = 0
    resumed_from: int = 0

    @property
    def total_changed(self) -> int:
        """Cards whose stage or state changed."""
        return sum(self.changed.values())


class _DryRun(Exception):
    """Rolls back a dry-run batch, carrying what it would have done."""

    def __init__(self, changed: dict[str, int], notices: list[Notice]) -> None:
        super().__init__("dry run")
        self.changed = changed
        self.notices = notices


Progress = Callable[[int, int], None]


class Sweeper:
    """Applies every operator's deadline policy as of one date."""

    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self._db = db
        self._clock = clock

    def run(
        self,
        day: dt.date,
        *,
        dry_run: bool = False,
        batch_size: int = DEFAULT_BATCH,
        progress: Progress | None = None,
    ) -> SweepReport:
        """Sweeps all cards for ``day``, resuming an interrupted sweep of the same day."""
        report = SweepReport(day)

        def begin(tx: Tx) -> tuple[list[PolicyRecord], int, int]:
            policies = legacy_repo.all_policies(tx)
            top = legacy_repo.max_card_id(tx)
            if dry_run:
                return policies, 0, top
            found = legacy_repo.sweep_progress(tx, day)
            if found is not None and not found[1]:
                return policies, found[0], top
            legacy_repo.start_sweep(tx, day, self._clock())
            return policies, 0, top

        policies, start, top = self._db.run_tx(begin)
        report.resumed_from = start
        lo = start
        while True:
            hi = min(lo + batch_size, top)
            changed, notices = self._batch(policies, day, lo, hi, top=top, dry=dry_run)
            for stage, count in changed.items():
                report.changed[stage] = report.changed.get(stage, 0) + count
            report.notices += notices
            report.batches += 1
            report.scanned_ids += hi - lo
            if progress is not None:
                progress(hi - start, top - start)
            if hi >= top:
                return report
            lo = hi

    def _batch(
        self, policies: list[PolicyRecord], day: dt.date, lo: int, hi: int, *, top: int, dry: bool
    ) -> tuple[dict[str, int], list[Notice]]:
        def work(tx: Tx) -> tuple[dict[str, int], list[Notice]]:
            now = self._clock()
            changed: dict[str, int] = {}
            notices: list[Notice] = []
            lead = dt.timedelta(days=NOTICE_DAYS)
            for policy in policies:
                op = policy.operator_id
                due = STAGES.index(stage_on(policy, day))
                if STAGES[due] == TERMINATED:
                    count = legacy_repo.terminate(tx, lo, hi, op, now, day=day)
                    if count:
                        changed[TERMINATED] = changed.get(TERMINATED, 0) + count
                # The barring stages due on the day, most severe first; each card takes the first
                # whose notice to it has taken effect.
                barring = tuple(reversed(STAGES[1 : min(due, STAGES.index(ALL_BARRED)) + 1]))
                moved = legacy_repo.set_stages(tx, lo, hi, op, barring=barring, day=day)
                for stage, count in moved.items():
                    changed[stage] = changed.get(stage, 0) + count
                for stage, starts in stage_starts(policy):
                    if starts > day + lead:
                        break
                    # A stage's notice follows the previous stage's taking effect, so a card that
                    # was never noticed gets one notice now and each stage its full lead time.
                    before = STAGES[STAGES.index(stage) - 1]
                    effective = max(starts, day + lead)
                    added = legacy_repo.add_notices(
                        tx, lo, hi, op, stage=stage, effective=effective, now=now,
                        after=None if before == FULL else before, day=day,
                    )  # fmt: skip
                    notices += [Notice(m, op, stage, effective) for m in added]
            if dry:
                raise _DryRun(changed, notices)
            legacy_repo.record_sweep_batch(tx, day, hi, now if hi >= top else None)
            return changed, notices

        try:
            return self._db.run_tx(work)
        except _DryRun as dry_result:
            return dry_result.changed, dry_result.notices
