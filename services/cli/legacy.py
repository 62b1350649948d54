"""`realname import legacy`, `realname legacy policy|complete` (gRPC) and `realname sweep` (local).

* ``import legacy FILE.csv`` (gRPC as an operator): validates the whole file on the server, writes
  the per-row error file, refuses the file when its bad-row ratio is above ``--max-bad-ratio``
  (exit 3, nothing imported), else commits it in batches with a progress line on stderr that
  shows the rows the server has committed (polled with GetImport). A re-run of the same file
  (same SHA-256) resumes after the last committed batch.
* ``legacy policy set|show``, ``legacy complete`` (gRPC as an operator).
* ``sweep --at DATE [--dry-run]`` (local, on the database like ``db upgrade``): applies every
  operator's deadline policy as of DATE and writes the SMS notice list.

Exit codes: 0 done, 1 a call failed, 2 bad arguments or local state, 3 the file was refused.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import grpc

from registry.subscribers import mask_msisdn
from services.cli.common import (
    DOCUMENT_TYPES,
    EXIT_OK,
    EXIT_REFUSED,
    Command,
    SubParsers,
    UsageError,
    add_client_arguments,
    add_document_number_argument,
    client_channel,
    command_group,
    data_settings,
    document_number,
    guard,
    print_message,
)
from services.domain.errors import RealnameError
from services.features.sweep import DEFAULT_BATCH, Sweeper
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import legacy_pb2 as lpb
from services.proto.realname.v1 import legacy_pb2_grpc as lgrpc
from services.runtime.config import ConfigError, add_data_dir_argument
from services.storage.database import Database

PRINCIPAL_HELP: Final = "the operator to call as, e.g. operator-cmcc"
# How often the import's progress line asks the server for its committed rows.
POLL_SECONDS: Final = 0.25

COLUMNS: Final = ("msisdn", "iccid", "status", "document_type", "document_number", "activated_on")
STATUSES: Final = {
    "VERIFIED": lpb.LEGACY_STATUS_VERIFIED,
    "UNVERIFIED": lpb.LEGACY_STATUS_UNVERIFIED,
}


class Progress:
    """A progress line on stderr: redrawn in place on a terminal, every 10 % otherwise."""

    def __init__(self, label: str, total: int, out: TextIO = sys.stderr) -> None:
        self._label, self.total, self._out = label, max(total, 1), out
        self._start = time.monotonic()
        self._drawn = 0.0
        self._tty = out.isatty()
        self._decile = -1

    def update(self, done: int) -> None:
        """Shows ``done`` of the total (rate-limited)."""
        now = time.monotonic()
        share = done / self.total
        if self._tty and now - self._drawn < 0.2 and done < self.total:
            return
        if not self._tty and int(share * 10) == self._decile:
            return
        self._drawn, self._decile = now, int(share * 10)
        rate = done / max(now - self._start, 1e-9)
        bar = "#" * int(share * 30)
        line = f"{self._label} [{bar:<30}] {done:,}/{self.total:,} ({share:.0%}) {rate:,.0f} rows/s"
        self._out.write(("\r" + line) if self._tty else line + "\n")
        self._out.flush()

    def close(self) -> None:
        """Ends the line."""
        if self._tty:
            self._out.write("\n")
            self._out.flush()


# -- the file -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegacyFile:
    """A parsed import file: its id, rows as messages, and the rows malformed as CSV."""

    import_id: str
    rows: list[lpb.LegacyRow]
    local_errors: dict[int, tuple[str, str]]


def read_legacy_file(path: Path) -> LegacyFile:
    """Reads the CSV: ``msisdn,iccid,status[,document_type,document_number[,activated_on]]``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text") from exc
    reader = csv.reader(text.splitlines())
    header = [h.strip().lower() for h in next(reader, [])]
    if tuple(header) not in (COLUMNS, COLUMNS[:5], COLUMNS[:3]):
        raise UsageError(
            f"{path}: the first line must be {','.join(COLUMNS)} (activated_on, or it and the "
            "document columns, may be left out)"
        )
    rows: list[lpb.LegacyRow] = []
    local: dict[int, tuple[str, str]] = {}
    for number, cells in enumerate(reader, start=1):
        row, problem = _row(cells)
        if problem is not None:
            local[number] = problem
        rows.append(row)
    if not rows:
        raise UsageError(f"{path} has no data rows")
    return LegacyFile(hashlib.sha256(data).hexdigest(), rows, local)


def _row(cells: list[str]) -> tuple[lpb.LegacyRow, tuple[str, str] | None]:
    # A malformed line is still sent (as an empty row) so row numbers stay aligned and the
    # server counts it in the bad-row ratio; its error file line gives the local reason.
    if len(cells) not in (3, 5, 6):
        return lpb.LegacyRow(), ("row", f"expected 3, 5 or 6 columns, got {len(cells)}")
    msisdn, iccid, status = (c.strip() for c in cells[:3])
    known = STATUSES.get(status.upper(), lpb.LEGACY_STATUS_UNSPECIFIED)
    row = lpb.LegacyRow(msisdn=msisdn, iccid=iccid, status=known)
    if len(cells) == 6:
        row.activated_on = cells[5].strip()
    if len(cells) >= 5 and (cells[3].strip() or cells[4].strip()):
        kind = DOCUMENT_TYPES.get(cells[3].strip().lower())
        if kind is None:
            return lpb.LegacyRow(), ("document_type", f"must be one of {', '.join(DOCUMENT_TYPES)}")
        row.document.CopyFrom(cpb.Document(type=kind.value, number=cells[4].strip()))  # type: ignore[arg-type]
    return row, None


# -- gRPC ---------------------------------------------------------------------------------------


def _stream(
    header: lpb.ImportHeader,
    rows: list[lpb.LegacyRow],
    start: int,
    batch_size: int,
    progress: Progress | None,
) -> Iterator[lpb.ImportLegacyRequest]:
    yield lpb.ImportLegacyRequest(header=header)
    for index in range(start - 1, len(rows), batch_size):
        chunk = rows[index : index + batch_size]
        yield lpb.ImportLegacyRequest(batch=lpb.LegacyRowBatch(first_row=index + 1, rows=chunk))
        if progress is not None:
            progress.update(index + len(chunk))


class CommittedProgress:
    """Shows an import's committed rows, polled from GetImport, on its progress line.

    Never the rows only sent: gRPC buffers rows well ahead of the batches the server commits.
    """

    def __init__(
        self,
        stub: lgrpc.LegacyServiceStub,
        import_id: str,
        bar: Progress,
        interval: float = POLL_SECONDS,
    ) -> None:
        self._stub, self._import_id, self._bar, self._interval = stub, import_id, bar, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="import-progress", daemon=True)

    def __enter__(self) -> CommittedProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def show(self, committed: int) -> None:
        """Shows ``committed`` rows (the final count, from the stream's answer)."""
        self._bar.update(committed)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                record = self._stub.GetImport(
                    lpb.GetImportRequest(import_id=self._import_id), timeout=self._interval * 4
                ).legacy_import
            except grpc.RpcError:
                continue  # a missed poll only delays the line; the import itself goes on
            if not self._stop.is_set():
                self._bar.update(record.committed_rows)


def _existing(stub: lgrpc.LegacyServiceStub, import_id: str) -> lpb.LegacyImport | None:
    try:
        return stub.GetImport(lpb.GetImportRequest(import_id=import_id)).legacy_import
    except grpc.RpcError as exc:
        call: Any = exc  # a grpc.Call at run time; the stubs do not say so
        if call.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def _write_errors(path: Path, errors: dict[int, list[tuple[str, str]]]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(("row", "field", "reason"))
        for row in sorted(errors):
            for field, reason in errors[row]:
                writer.writerow((row, field, reason))


def _read_errors(path: Path) -> dict[int, list[tuple[str, str]]]:
    errors: dict[int, list[tuple[str, str]]] = {}
    if not path.exists():
        return errors
    with path.open(newline="") as f:
        for record in csv.DictReader(f):
            errors.setdefault(int(record["row"]), []).append((record["field"], record["reason"]))
    return errors


def _merge(
    errors: dict[int, list[tuple[str, str]]],
    found: Iterator[lpb.RowError],
    local: dict[int, tuple[str, str]],
) -> None:
    for e in found:
        if e.row in local:
            errors[e.row] = [local[e.row]]  # the CSV-level reason says more than "empty row"
        elif (e.field, e.reason) not in errors.get(e.row, []):
            errors.setdefault(e.row, []).append((e.field, e.reason))


def cmd_import_legacy(args: argparse.Namespace) -> int:
    """Validate then commit a legacy subscriber file; resume an interrupted import."""
    if not 0 <= args.max_bad_ratio <= 1:
        raise UsageError("--max-bad-ratio must be between 0 and 1")
    if not 1 <= args.batch_size <= 2000:
        raise UsageError("--batch-size must be 1-2000")
    legacy = read_legacy_file(args.file)
    errors_path: Path = args.errors or args.file.with_name(args.file.name + ".errors.csv")
    total = len(legacy.rows)
    quiet = args.quiet
    with client_channel(args) as channel:
        stub = lgrpc.LegacyServiceStub(channel)
        record = _existing(stub, legacy.import_id)
        if record is None or record.state in (lpb.IMPORT_STATE_REFUSED, lpb.IMPORT_STATE_VALIDATED):
            header = lpb.ImportHeader(
                import_id=legacy.import_id, mode=lpb.IMPORT_MODE_VALIDATE, total_rows=total,
                max_bad_ratio=args.max_bad_ratio,
            )  # fmt: skip
            check = None if quiet else Progress("validate", total)
            reply = stub.ImportLegacy(_stream(header, legacy.rows, 1, args.batch_size, check))
            if check is not None:
                check.close()
            errors: dict[int, list[tuple[str, str]]] = {}
            _merge(errors, iter(reply.errors), legacy.local_errors)
            _write_errors(errors_path, errors)
            record = reply.legacy_import
            print(f"validated: {record.bad_rows:,} bad rows of {total:,}; errors in {errors_path}",
                  file=sys.stderr)  # fmt: skip
            if record.state == lpb.IMPORT_STATE_REFUSED:
                print(
                    f"realname: refused: {record.bad_rows / total:.2%} bad rows is above "
                    f"--max-bad-ratio {args.max_bad_ratio:g}; nothing imported",
                    file=sys.stderr,
                )
                print_message(record)
                return EXIT_REFUSED
        if record.state != lpb.IMPORT_STATE_COMPLETED:
            start = record.committed_rows + 1
            if start > 1:
                print(f"resuming after row {record.committed_rows:,}", file=sys.stderr)
            header = lpb.ImportHeader(
                import_id=legacy.import_id, mode=lpb.IMPORT_MODE_COMMIT, total_rows=total
            )
            requests = _stream(header, legacy.rows, start, args.batch_size, None)
            if quiet:
                reply = stub.ImportLegacy(requests)
            else:
                bar = Progress("import", total)
                bar.update(record.committed_rows)
                with CommittedProgress(stub, legacy.import_id, bar) as watch:
                    reply = stub.ImportLegacy(requests)
                    watch.show(reply.legacy_import.committed_rows)
                bar.close()
            known = _read_errors(errors_path)
            _merge(known, iter(reply.errors), legacy.local_errors)
            _write_errors(errors_path, known)
            record = reply.legacy_import
    print_message(record)
    return EXIT_OK


def cmd_policy_set(args: argparse.Namespace) -> int:
    """Set the calling operator's deadline policy."""
    policy = lpb.DeadlinePolicy(
        deadline=args.deadline, grace_days=args.grace_days, termination_days=args.termination_days
    )
    with client_channel(args) as channel:
        reply = lgrpc.LegacyServiceStub(channel).SetDeadlinePolicy(
            lpb.SetDeadlinePolicyRequest(policy=policy)
        )
    print_message(reply.policy)
    return EXIT_OK


def cmd_policy_show(args: argparse.Namespace) -> int:
    """Show the calling operator's deadline policy."""
    with client_channel(args) as channel:
        reply = lgrpc.LegacyServiceStub(channel).GetDeadlinePolicy(lpb.GetDeadlinePolicyRequest())
    print_message(reply.policy)
    return EXIT_OK


def cmd_complete(args: argparse.Namespace) -> int:
    """Complete a legacy subscriber's registration."""
    kind = DOCUMENT_TYPES[args.document_type]
    request = lpb.CompleteRegistrationRequest(
        msisdn=args.msisdn,
        document=cpb.Document(type=kind.value, number=document_number(args)),  # type: ignore[arg-type]
    )
    with client_channel(args) as channel:
        reply = lgrpc.LegacyServiceStub(channel).CompleteRegistration(request)
    print_message(reply.card)
    return EXIT_OK


# -- sweep (local) ------------------------------------------------------------------------------


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from exc


def cmd_sweep(args: argparse.Namespace) -> int:
    """Apply every operator's deadline policy as of --at; write the notice list."""
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    db = Database(data_settings(args).database())
    bar = None if args.quiet else Progress("sweep", 1)
    try:

        def show(done: int, total: int) -> None:
            if bar is not None:
                bar.total = max(total, 1)  # known once the sweep has started
                bar.update(done)

        report = Sweeper(db).run(
            args.at, dry_run=args.dry_run, batch_size=args.batch_size, progress=show
        )
    finally:
        db.dispose()
        if bar is not None:
            bar.close()
    if args.notices is not None:
        with args.notices.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(("msisdn", "operator", "stage", "date"))
            for n in report.notices:
                writer.writerow(
                    (mask_msisdn(n.msisdn), n.operator_id, n.stage, n.effective_on.isoformat())
                )
    summary = {
        "date": args.at.isoformat(),
        "dry_run": args.dry_run,
        "changed": report.changed,
        "notices": len(report.notices),
        "batches": report.batches,
        "resumed_after_card_id": report.resumed_from,
    }
    print(json.dumps(summary, sort_keys=True))
    return EXIT_OK


def _guarded(command: Command) -> Command:
    return guard(command, ConfigError, RealnameError)


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    add_client_arguments(parser, principal_help=PRINCIPAL_HELP)


def register(subparsers: SubParsers) -> None:
    """Adds `realname import legacy`, `realname legacy …` and `realname sweep`."""
    import_sub = command_group(subparsers, "import", "bulk imports (gRPC)")
    p = import_sub.add_parser("legacy", help="import pre-policy subscribers from a CSV file")
    _client_arguments(p)
    p.add_argument("file", type=Path, help="CSV: " + ",".join(COLUMNS))
    p.add_argument(
        "--max-bad-ratio", type=float, default=0.01,
        help="refuse the whole file when more than this share of rows is bad (default 0.01)",
    )  # fmt: skip
    p.add_argument("--errors", type=Path, help="the error file (default FILE.errors.csv)")
    p.add_argument("--batch-size", type=int, default=1000, help="rows per committed batch")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_guarded(cmd_import_legacy))

    legacy_sub = command_group(subparsers, "legacy", "legacy subscribers (gRPC as an operator)")
    policy_sub = command_group(legacy_sub, "policy", "the operator's deadline policy")
    p = policy_sub.add_parser("set", help="set the deadline policy")
    _client_arguments(p)
    p.add_argument("--deadline", required=True, help="YYYY-MM-DD")
    p.add_argument("--grace-days", type=int, default=30)
    p.add_argument("--termination-days", type=int, default=30)
    p.set_defaults(func=_guarded(cmd_policy_set))
    p = policy_sub.add_parser("show", help="show the deadline policy")
    _client_arguments(p)
    p.set_defaults(func=_guarded(cmd_policy_show))
    p = legacy_sub.add_parser("complete", help="complete a legacy subscriber's registration")
    _client_arguments(p)
    p.add_argument("msisdn")
    p.add_argument("--document-type", choices=sorted(DOCUMENT_TYPES), default="resident-id-card")
    add_document_number_argument(p)
    p.set_defaults(func=_guarded(cmd_complete))

    p = subparsers.add_parser("sweep", help="apply the legacy deadline policies (local)")
    add_data_dir_argument(p)
    p.add_argument("--at", type=_date, required=True, help="the date to apply, YYYY-MM-DD")
    p.add_argument("--dry-run", action="store_true", help="report, change nothing")
    p.add_argument("--notices", type=Path, help="write the SMS notice list (CSV) here")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="cards per transaction")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_guarded(cmd_sweep))
