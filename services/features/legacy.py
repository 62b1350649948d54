"""Legacy subscribers: bulk import in resumable batches, completing registration, deadlines.

Pre-policy subscribers become cards of channel 'legacy' (state ACTIVE). A VERIFIED row with a
document takes its holder's slot in ``holdings``, beyond the cap only if it was activated before
the cap policy's start: such a card predates the policy, and refusing it would cut off a
subscriber the operator already serves; the holder then cannot get a new card until enough are
given up, and the import counts the document in ``documents_over_cap``. UNVERIFIED rows hold
no slot until CompleteRegistration, which claims one under the cap like an activation. A row of
a blocked document is refused (no card is put in service under it, as at activation).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from registry.clock import Clock, utc_now
from registry.subscribers import DocumentType, mask_msisdn, normalise_number
from services.domain.cards import Card
from services.domain.documents import Document, document_problem
from services.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    QuotaViolation,
)
from services.domain.numbers import iccid_problem
from services.domain.pseudonym import Pseudonymizer
from services.domain.records import ImportRecord, PolicyRecord
from services.features.guards import HolderCheck
from services.storage import cards_repo, legacy_repo, proofing_repo
from services.storage.database import Database, RetryTransaction
from services.storage.legacy_repo import LegacyCard
from services.storage.rawsql import Tx

VERIFIED, UNVERIFIED = 1, 2  # LegacyStatus values (the proto enum's numbers)
MAX_REPORTED_ERRORS = 50_000
MAX_BATCH_ROWS = 2_000
MAX_ROWS = 100_000_000
EARLIEST_DEADLINE, LATEST_DEADLINE = dt.date(2000, 1, 1), dt.date(2100, 12, 31)
DEFAULT_GRACE_DAYS = 30
DEFAULT_TERMINATION_DAYS = 30
MAX_PERIOD_DAYS = 3650
EARLIEST_ACTIVATION = dt.date(1980, 1, 1)
# The day the per-document cap took effect (REALNAME_CAP_POLICY_START): an imported card that
# would put its document over the cap is counted beyond it only if activated before this day.
DEFAULT_CAP_POLICY_START = dt.date(2016, 11, 1)

# A row of a document on the lost/stolen blocklist (the reason of ProofingService's refusals).
DOCUMENT_BLOCKED_ROW = "the document is blocked (DOCUMENT_BLOCKED); no card is imported for it"

_IMPORT_ID = re.compile(r"[0-9a-f]{64}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MSISDN = re.compile(r"1[3-9]\d{9}")
_MAX_RAW = 64


class RawRow(NamedTuple):
    """One row as received: unvalidated text and enum numbers."""

    msisdn: str
    iccid: str
    status: int
    document_type: int
    document_number: str
    activated_on: str = ""


@dataclass(frozen=True)
class RowBatch:
    """Consecutive rows of a file, the first numbered ``first_row`` (from 1)."""

    first_row: int
    rows: list[RawRow]


@dataclass(frozen=True)
class ImportHeader:
    """What an import stream is about: the file (its SHA-256), its size and the threshold."""

    import_id: str
    total_rows: int
    max_bad_ratio: float = 0.01


@dataclass(frozen=True)
class RowError:
    """Why a row is not imported; ``reason`` never carries a document number."""

    row: int
    field: str
    reason: str


@dataclass
class ImportOutcome:
    """The import's record after a stream, and what this stream found."""

    record: ImportRecord
    errors: list[RowError] = field(default_factory=list)
    errors_truncated: bool = False
    skipped_rows: int = 0

    def report(self, errors: Iterable[RowError]) -> None:
        """Keeps errors up to the reporting cap."""
        for error in errors:
            if len(self.errors) >= MAX_REPORTED_ERRORS:
                self.errors_truncated = True
                return
            self.errors.append(error)


@dataclass(frozen=True)
class _Entry:
    """A row that passed the checks that need no database."""

    row: int
    msisdn: str
    iccid: str
    verified: bool
    document: Document | None
    activated_on: dt.date | None = None


@dataclass(frozen=True)
class _Prepared:
    """A batch checked and pseudonymised, ready to commit."""

    batch: RowBatch
    entries: list[_Entry]
    bad: list[RowError]
    keys: dict[int, bytes]


_T = TypeVar("_T")
_U = TypeVar("_U")
_DONE = object()


def pipelined(source: Iterator[_T], work: Callable[[_T], _U], depth: int = 2) -> Iterator[_U]:
    """Yields ``work(item)`` for each item, computed ahead in a thread.

    Reading the stream and checking rows (Python) overlaps with the caller's database work,
    which waits on the server without the GIL. Errors reach the caller in order.
    """
    results: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                results.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer has gone

    def produce() -> None:
        try:
            for item in source:
                if not offer((work(item), None)):
                    return
            offer((_DONE, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            offer((None, exc))

    # In the caller's context: what ``work`` notes (the documents whose keys it derives) goes
    # to the running RPC's audit record, not to a thread that belongs to no call.
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(produce,), name="legacy-import-prefetch", daemon=True
    )
    thread.start()
    try:
        while True:
            value, error = results.get()
            if error is not None:
                raise error
            if value is _DONE:
                return
            yield value
    finally:
        stop.set()


def check_header(header: ImportHeader) -> None:
    """Refuses a malformed import header."""
    problems = []
    if not _IMPORT_ID.fullmatch(header.import_id):
        problems.append(FieldViolation("header.import_id", "must be 64 lower-case hex digits"))
    if not 1 <= header.total_rows <= MAX_ROWS:
        problems.append(FieldViolation("header.total_rows", f"must be 1-{MAX_ROWS:,}"))
    if not 0.0 <= header.max_bad_ratio <= 1.0:
        problems.append(FieldViolation("header.max_bad_ratio", "must be between 0 and 1"))
    if problems:
        raise InvalidArgument(problems)


class _RowChecker:
    """Checks rows against formats, the caller's number segments and earlier rows of a batch."""

    def __init__(self, operator_id: str, segments: dict[str, str], today: dt.date) -> None:
        self._operator = operator_id
        self._segments = segments
        self._today = today

    def _owner(self, msisdn: str) -> str | None:
        for length in range(7, 2, -1):
            owner = self._segments.get(msisdn[:length])
            if owner is not None:
                return owner
        return None

    def check(self, batch: RowBatch) -> tuple[list[_Entry], list[RowError]]:
        """Splits a batch into entries to import and row errors."""
        entries: list[_Entry] = []
        errors: list[RowError] = []
        seen_m: set[str] = set()
        seen_i: set[str] = set()
        for offset, raw in enumerate(batch.rows):
            number = batch.first_row + offset
            bad = self._problems(number, raw)
            if not bad:
                if raw.msisdn in seen_m:
                    bad.append(RowError(number, "msisdn", "repeats an earlier row of the file"))
                elif raw.iccid in seen_i:
                    bad.append(RowError(number, "iccid", "repeats an earlier row of the file"))
            if bad:
                errors += bad
                continue
            seen_m.add(raw.msisdn)
            seen_i.add(raw.iccid)
            doc = None
            if raw.document_type or raw.document_number:
                doc = Document(
                    DocumentType(raw.document_type), normalise_number(raw.document_number)
                )
            activated = dt.date.fromisoformat(raw.activated_on) if raw.activated_on else None
            entries.append(
                _Entry(number, raw.msisdn, raw.iccid, raw.status == VERIFIED, doc, activated)
            )
        return entries, errors

    def _problems(self, number: int, raw: RawRow) -> list[RowError]:
        errors = []
        if not _MSISDN.fullmatch(raw.msisdn):
            errors.append(RowError(number, "msisdn", "must be an 11-digit mainland mobile number"))
        elif self._owner(raw.msisdn) != self._operator:
            errors.append(
                RowError(number, "msisdn", f"not in a number segment of operator {self._operator}")
            )
        problem = iccid_problem(raw.iccid) if len(raw.iccid) <= _MAX_RAW else "is too long"
        if problem is not None:
            errors.append(RowError(number, "iccid", problem))
        if raw.status not in (VERIFIED, UNVERIFIED):
            errors.append(RowError(number, "status", "must be VERIFIED or UNVERIFIED"))
        if raw.document_type or raw.document_number:
            errors += self._document_problems(number, raw)
        if raw.activated_on:
            problem = self._activation_problem(raw.activated_on)
            if problem is not None:
                errors.append(RowError(number, "activated_on", problem))
        return errors

    def _activation_problem(self, text: str) -> str | None:
        if not _DATE.fullmatch(text):
            return "must be a date YYYY-MM-DD"
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            return "must be a date YYYY-MM-DD"
        if not EARLIEST_ACTIVATION <= day <= self._today:
            return f"must be between {EARLIEST_ACTIVATION} and today"
        return None

    def _document_problems(self, number: int, raw: RawRow) -> list[RowError]:
        try:
            doc_type = DocumentType(raw.document_type)
        except ValueError:
            return [RowError(number, "document.type", "must be a known document type")]
        if len(raw.document_number) > _MAX_RAW:
            return [RowError(number, "document.number", "is too long")]
        normalised = normalise_number(raw.document_number)
        if not normalised:
            return [RowError(number, "document.number", "is required with a document type")]
        problem = document_problem(doc_type, normalised, self._today)
        return [] if problem is None else [RowError(number, "document.number", problem)]


def _conflict_errors(
    entries: list[_Entry], taken_m: set[str], taken_i: set[str], *, all_lost: bool = False
) -> list[RowError]:
    """Errors for entries whose number or SIM a live card holds (``all_lost``: each one)."""
    errors = []
    for e in entries:
        if e.msisdn in taken_m:
            errors.append(RowError(e.row, "msisdn", "already held by a live card"))
        elif e.iccid in taken_i:
            errors.append(RowError(e.row, "iccid", "already held by a live card"))
        elif all_lost:
            errors.append(RowError(e.row, "msisdn", "conflicts with a live card"))
    return errors


def _bad_rows(errors: list[RowError]) -> int:
    return len({e.row for e in errors})


def cap_policy_start(text: str | None) -> dt.date:
    """The cap policy's start from REALNAME_CAP_POLICY_START (YYYY-MM-DD; unset: the default)."""
    if not text:
        return DEFAULT_CAP_POLICY_START
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"REALNAME_CAP_POLICY_START must be a date YYYY-MM-DD, not {text!r}"
        ) from None


@dataclass
class _CapCheck:
    """Decides, in a batch's transaction, which verified rows may take their holder's slot."""

    limit: int
    policy_start: dt.date
    operator_id: str
    held: dict[bytes, int]
    added: dict[bytes, int] = field(default_factory=dict)

    def admit(self, entry: _Entry, key: bytes) -> RowError | None:
        """Counts the row's slot, or says why it is refused: over the cap, not pre-policy."""
        count = self.held.get(key, 0) + self.added.get(key, 0)
        grandfathered = entry.activated_on is not None and entry.activated_on < self.policy_start
        if count >= self.limit and not grandfathered:
            return RowError(
                entry.row,
                "activated_on",
                f"the document already holds {self.limit} cards with operator "
                f"{self.operator_id} (CARD_LIMIT_REACHED); a card beyond the cap must have been "
                f"activated before the cap policy's start, {self.policy_start}",
            )
        self.added[key] = self.added.get(key, 0) + 1
        return None

    def crossed(self, inserted: dict[bytes, int]) -> int:
        """How many documents the ``inserted`` slots take over the cap (from at or under it)."""
        return sum(
            1
            for key, n in inserted.items()
            if self.held.get(key, 0) <= self.limit < self.held.get(key, 0) + n
        )


class LegacyDesk:
    """Imports legacy subscribers, completes their registration, keeps deadline policies."""

    def __init__(
        self,
        db: Database,
        pseudonymizer: Pseudonymizer,
        clock: Clock = utc_now,
        policy_start: dt.date = DEFAULT_CAP_POLICY_START,
    ) -> None:
        self._db = db
        self._pseudo = pseudonymizer
        self._holder_checks: list[HolderCheck] = []
        self._clock = clock
        self.policy_start = policy_start

    def today(self) -> dt.date:
        """The current date in China Standard Time."""
        return (self._clock() + dt.timedelta(hours=8)).date()

    def _checker(self, operator_id: str) -> _RowChecker:
        def load(tx: Tx) -> dict[str, str]:
            if cards_repo.get_operator(tx, operator_id) is None:
                raise PermissionDenied(
                    "the calling operator is not registered with this service",
                    reason="UNKNOWN_OPERATOR",
                    metadata={"operator": operator_id},
                )
            return cards_repo.all_segments(tx)

        return _RowChecker(operator_id, self._db.run_tx(load, readonly=True), self.today())

    def _record(self, operator_id: str, import_id: str) -> ImportRecord | None:
        return self._db.run_tx(
            lambda tx: legacy_repo.get_import(tx, operator_id, import_id), readonly=True
        )

    def get_import(self, operator_id: str, import_id: str) -> ImportRecord:
        """The operator's import, or NOT_FOUND."""
        if not _IMPORT_ID.fullmatch(import_id):
            raise InvalidArgument([FieldViolation("import_id", "must be 64 lower-case hex digits")])
        record = self._record(operator_id, import_id)
        if record is None:
            raise NotFound(
                "no import with this id for the calling operator", reason="IMPORT_NOT_FOUND"
            )
        return record

    # -- validation ---------------------------------------------------------------------------

    def validate(
        self, operator_id: str, header: ImportHeader, batches: Iterator[RowBatch]
    ) -> ImportOutcome:
        """Checks every row, writes nothing but the verdict: VALIDATED or REFUSED."""
        check_header(header)
        existing = self._record(operator_id, header.import_id)
        if existing is not None and existing.committed_rows > 0:
            raise _already_started(existing)
        checker = self._checker(operator_id)
        errors: list[RowError] = []
        rows = 0

        def check(batch: RowBatch) -> tuple[list[_Entry], list[RowError]]:
            nonlocal rows
            _check_order(batch, rows + 1)
            rows += len(batch.rows)
            return checker.check(batch)

        for entries, bad in pipelined(batches, check):
            taken = self._db.run_tx(
                lambda tx, e=entries: legacy_repo.live_conflicts(  # type: ignore[misc]
                    tx, [x.msisdn for x in e], [x.iccid for x in e]
                ),
                readonly=True,
            )
            errors += bad + _conflict_errors(entries, *taken)
        _check_total(header, rows)
        bad_rows = _bad_rows(errors)
        state = "REFUSED" if bad_rows > header.max_bad_ratio * header.total_rows else "VALIDATED"

        def record(tx: Tx) -> ImportRecord:
            if not legacy_repo.record_validation(
                tx, operator_id=operator_id, import_id=header.import_id, state=state,
                total_rows=header.total_rows, bad_rows=bad_rows,
                max_bad_ratio=header.max_bad_ratio, now=self._clock(),
            ):  # fmt: skip
                stored = legacy_repo.get_import(tx, operator_id, header.import_id)
                assert stored is not None
                raise _already_started(stored)
            stored = legacy_repo.get_import(tx, operator_id, header.import_id)
            assert stored is not None
            return stored

        outcome = ImportOutcome(self._db.run_tx(record))
        outcome.report(sorted(errors, key=lambda e: e.row))
        return outcome

    # -- commit -------------------------------------------------------------------------------

    def commit(
        self, operator_id: str, header: ImportHeader, batches: Iterator[RowBatch]
    ) -> ImportOutcome:
        """Commits the rows after the committed count, one transaction per batch."""
        check_header(header)
        record = self._record(operator_id, header.import_id)
        if record is None:
            raise FailedPrecondition(
                "this file has not been validated; run a VALIDATE stream first",
                reason="IMPORT_NOT_VALIDATED",
            )
        if record.state == "REFUSED":
            raise FailedPrecondition(
                f"validation refused this file: {record.bad_rows} bad rows of "
                f"{record.total_rows}, above the threshold {record.max_bad_ratio:g}",
                reason="BAD_ROW_RATIO",
                metadata={"bad_rows": str(record.bad_rows), "total_rows": str(record.total_rows)},
            )
        if record.total_rows != header.total_rows:
            raise FailedPrecondition(
                f"the import was validated with {record.total_rows} rows, not {header.total_rows}",
                reason="IMPORT_MISMATCH",
            )
        checker = self._checker(operator_id)
        outcome = ImportOutcome(record)
        expected: int | None = None  # a resuming stream may start after the committed rows

        def prepare(batch: RowBatch) -> _Prepared:
            nonlocal expected
            _check_order(batch, batch.first_row if expected is None else expected)
            expected = batch.first_row + len(batch.rows)
            if expected - 1 > header.total_rows:
                raise _row_count(header, expected - 1)
            entries, bad = checker.check(batch)
            keys = {e.row: self._pseudo.document_key(e.document) for e in entries if e.document}
            return _Prepared(batch, entries, bad, keys)

        for prepared in pipelined(batches, prepare):
            outcome.record, skipped, errors = self._commit_batch(operator_id, header, prepared)
            outcome.skipped_rows += skipped
            outcome.report(errors)
        # A durable commit flushes the log up to here: every batch above is on disk before the
        # caller hears the outcome.
        self._db.run_tx(lambda tx: legacy_repo.touch_import(tx, operator_id, header.import_id))
        return outcome

    def _commit_batch(
        self, operator_id: str, header: ImportHeader, prepared: _Prepared
    ) -> tuple[ImportRecord, int, list[RowError]]:
        batch, entries, bad, keys = prepared.batch, prepared.entries, prepared.bad, prepared.keys
        last_row = batch.first_row + len(batch.rows) - 1

        def work(tx: Tx) -> tuple[ImportRecord, int, list[RowError]]:
            now = self._clock()
            legacy_repo.relax_durability(tx)
            record = legacy_repo.get_import(tx, operator_id, header.import_id)
            assert record is not None
            done = record.committed_rows
            if last_row <= done:
                return record, len(batch.rows), []
            if batch.first_row > done + 1:
                raise FailedPrecondition(
                    f"rows {done + 1}-{batch.first_row - 1} are not committed yet; resume from "
                    f"row {done + 1}",
                    reason="IMPORT_GAP",
                    metadata={"committed_rows": str(done)},
                )
            # Takes the import's row lock first: a concurrent stream of the same file waits
            # here, then finds the rows committed and skips them.
            if not legacy_repo.advance_import(
                tx, operator_id=operator_id, import_id=header.import_id, committed_before=done,
                committed_after=done, imported=0, failed=0, state=record.state, now=now,
            ):  # fmt: skip
                raise RetryTransaction
            fresh = [e for e in entries if e.row > done]
            errors = [e for e in bad if e.row > done]
            # In the batch's transaction: a document blocked before it commits gets no card.
            blocked = proofing_repo.blocked_among(
                tx, sorted({keys[e.row] for e in fresh if e.row in keys})
            )
            if blocked:
                errors += [
                    RowError(e.row, "document.number", DOCUMENT_BLOCKED_ROW)
                    for e in fresh
                    if keys.get(e.row) in blocked
                ]
                fresh = [e for e in fresh if keys.get(e.row) not in blocked]
            # The cap, with the holders' counts locked: a row over it needs a pre-policy date.
            slot_keys = [keys[e.row] for e in fresh if e.verified and e.row in keys]
            op = cards_repo.get_operator(tx, operator_id) if slot_keys else None
            cap = _CapCheck(
                0 if op is None else op.card_limit,
                self.policy_start,
                operator_id,
                legacy_repo.lock_holdings(tx, operator_id, slot_keys),
            )
            admitted = []
            for e in fresh:
                refusal = cap.admit(e, keys[e.row]) if e.verified and e.row in keys else None
                if refusal is None:
                    admitted.append(e)
                else:
                    errors.append(refusal)
            fresh = admitted
            failed = _bad_rows(errors)
            cards = [_card(e, keys.get(e.row)) for e in fresh]
            inserted = legacy_repo.insert_legacy_cards(
                tx, operator_id, header.import_id, cards, now
            )
            lost = [e for e in fresh if e.msisdn not in inserted]
            if lost:
                taken = legacy_repo.live_conflicts(
                    tx, [e.msisdn for e in lost], [e.iccid for e in lost]
                )
                errors += _conflict_errors(lost, *taken, all_lost=True)
            slots: dict[bytes, int] = {}
            for c in cards:
                if c.verified and c.id_key is not None and c.msisdn in inserted:
                    slots[c.id_key] = slots.get(c.id_key, 0) + 1
            legacy_repo.add_holdings(tx, operator_id, slots)
            state = "COMPLETED" if last_row >= header.total_rows else "IMPORTING"
            legacy_repo.advance_import(
                tx, operator_id=operator_id, import_id=header.import_id, committed_before=done,
                committed_after=last_row, imported=len(inserted),
                failed=failed + len(lost), state=state, now=now, over_cap=cap.crossed(slots),
            )  # fmt: skip
            after = legacy_repo.get_import(tx, operator_id, header.import_id)
            assert after is not None
            errors.sort(key=lambda e: e.row)
            return after, done + 1 - batch.first_row, errors

        return self._db.run_tx(work)

    # -- completing registration --------------------------------------------------------------

    def add_holder_check(self, check: HolderCheck) -> None:
        """Adds a check of the holder run before registration (identity proofing wires one)."""
        self._holder_checks.append(check)

    def complete_registration(
        self, operator_id: str, msisdn: str, document: Document, holder_name: str | None = None
    ) -> Card:
        """Verifies a legacy card under a document, taking a slot under the cap atomically."""
        for check in self._holder_checks:
            check(operator_id, document, holder_name)
        key = self._pseudo.document_key(document)

        def work(tx: Tx) -> Card:
            op = cards_repo.get_operator(tx, operator_id)
            if op is None:
                raise PermissionDenied(
                    "the calling operator is not registered with this service",
                    reason="UNKNOWN_OPERATOR",
                    metadata={"operator": operator_id},
                )
            row = cards_repo.live_card_of_operator(tx, operator_id, msisdn)
            if row is None:
                raise NotFound(
                    f"operator {operator_id} has no live card {mask_msisdn(msisdn)}",
                    reason="CARD_NOT_FOUND",
                )
            if row.card.verified:
                if row.id_key == key:
                    return row.card
                raise FailedPrecondition(
                    f"card {mask_msisdn(msisdn)} is already registered under another document",
                    reason="ALREADY_VERIFIED",
                )
            if cards_repo.claim_slot(tx, key, operator_id) is None:
                live = legacy_repo.live_msisdns_of_holder(tx, key, operator_id)
                raise _over_cap(document, operator_id, op.card_limit, live)
            if not legacy_repo.verify_card(tx, row.id, key, document.type, document.masked()):
                raise RetryTransaction
            return cards_repo.card_by_id(tx, row.id)

        return self._db.run_tx(work)

    # -- deadline policies --------------------------------------------------------------------

    def set_policy(
        self, operator_id: str, deadline: dt.date, grace_days: int, termination_days: int
    ) -> PolicyRecord:
        """Creates or replaces the operator's deadline policy."""
        problems = [
            FieldViolation(f"policy.{name}", f"must be 1-{MAX_PERIOD_DAYS} days (0: default 30)")
            for name, days in (("grace_days", grace_days), ("termination_days", termination_days))
            if not 1 <= days <= MAX_PERIOD_DAYS
        ]
        if not EARLIEST_DEADLINE <= deadline <= LATEST_DEADLINE:
            problems.append(FieldViolation("policy.deadline", "must be in 2000-2100"))
        if problems:
            raise InvalidArgument(problems)
        policy = PolicyRecord(operator_id, deadline, grace_days, termination_days, self._clock())

        def work(tx: Tx) -> PolicyRecord:
            if cards_repo.get_operator(tx, operator_id) is None:
                raise PermissionDenied(
                    "the calling operator is not registered with this service",
                    reason="UNKNOWN_OPERATOR",
                )
            legacy_repo.set_policy(tx, policy)
            return policy

        return self._db.run_tx(work)

    def get_policy(self, operator_id: str) -> PolicyRecord:
        """The operator's deadline policy, or NOT_FOUND."""
        policy = self._db.run_tx(lambda tx: legacy_repo.get_policy(tx, operator_id), readonly=True)
        if policy is None:
            raise NotFound(
                f"operator {operator_id} has no deadline policy", reason="NO_DEADLINE_POLICY"
            )
        return policy


def _card(entry: _Entry, key: bytes | None) -> LegacyCard:
    doc = entry.document
    return LegacyCard(
        entry.row, entry.msisdn, entry.iccid, entry.verified, key,
        None if doc is None else doc.type, None if doc is None else doc.masked(),
    )  # fmt: skip


def _over_cap(document: Document, operator_id: str, limit: int, live: list[str]) -> QuotaExceeded:
    masked = [mask_msisdn(m) for m in live]
    return QuotaExceeded(
        f"document {document.masked()} already holds {len(live)} live cards with operator "
        f"{operator_id} (limit {limit}); give one up first",
        reason="CARD_LIMIT_REACHED",
        violations=[
            QuotaViolation(
                f"document:{document.type.name}/operator:{operator_id}",
                f"at most {limit} live cards per document per operator",
            ),
            *(QuotaViolation(f"card:{m}", "a live card of this holder") for m in masked),
        ],
        metadata={"operator": operator_id, "limit": str(limit), "live_cards": ",".join(masked)},
    )


def _already_started(record: ImportRecord) -> FailedPrecondition:
    return FailedPrecondition(
        f"this import has {record.committed_rows} committed rows; commit resumes it",
        reason="IMPORT_ALREADY_STARTED",
        metadata={"committed_rows": str(record.committed_rows)},
    )


def _check_order(batch: RowBatch, expected_first: int) -> None:
    if batch.first_row != expected_first or batch.first_row < 1:
        raise InvalidArgument(
            [FieldViolation("batch.first_row", f"must be {expected_first} (batches in row order)")],
            reason="BATCH_OUT_OF_ORDER",
        )
    if not 1 <= len(batch.rows) <= MAX_BATCH_ROWS:
        raise InvalidArgument([FieldViolation("batch.rows", f"must hold 1-{MAX_BATCH_ROWS} rows")])


def _row_count(header: ImportHeader, rows: int) -> InvalidArgument:
    return InvalidArgument(
        [
            FieldViolation(
                "header.total_rows", f"declared {header.total_rows}, the stream had {rows}"
            )
        ],
        reason="ROW_COUNT_MISMATCH",
    )


def _check_total(header: ImportHeader, rows: int) -> None:
    if rows != header.total_rows:
        raise _row_count(header, rows)
