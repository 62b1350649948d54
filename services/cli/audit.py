"""`realname audit ...`: verify, anchor, prune and query the audit trail (on the database)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from registry.log.errors import LogError
from registry.log.signing import log_key_path
from services.cli.common import (
    DOCUMENT_TYPES,
    EXIT_INCONSISTENT,
    EXIT_OK,
    EXIT_USAGE,
    SubParsers,
    UsageError,
    add_document_number_argument,
    command_group,
    data_settings,
    document_number,
)
from services.domain.errors import RealnameError, Violations
from services.domain.pseudonym import PepperError
from services.domain.validation import check_document
from services.features.audit_trail import AuditTrail, VerifyReport
from services.features.transparency import TransparencyLog
from services.runtime.config import (
    ConfigError,
    add_data_dir_argument,
    audit_anchor_seconds,
    env_default,
)
from services.runtime.key_files import load_pepper
from services.storage.database import Database


def _trail(args: argparse.Namespace) -> tuple[Database, AuditTrail]:
    db = Database(data_settings(args).database())
    return db, AuditTrail(db)


def _retention(args: argparse.Namespace) -> dt.timedelta:
    return dt.timedelta(days=args.keep_days)


def _sequence(args: argparse.Namespace, db: Database) -> str:
    """Sequences the log now when this data dir holds its key; says where the entry stands."""
    data_dir = data_settings(args).data_dir
    if not log_key_path(data_dir).exists():
        # Never create a log key here: a second key would sign a different log.
        return "its log entry is pending until `realname serve` or `realname log integrate` runs"
    try:
        log = TransparencyLog.open(db, data_dir, origin=env_default("REALNAME_LOG_ORIGIN"))
        size = log.sequencer.integrate_now().size
    except LogError as exc:
        return f"its log entry is pending: the log could not be sequenced ({exc})"
    return f"logged (tree size {size})"


def cmd_verify(args: argparse.Namespace) -> int:
    """Recompute the chain; exit 1 and list the problems when anything was tampered with."""
    try:
        window = dt.timedelta(seconds=audit_anchor_seconds())
    except ConfigError as exc:
        print(f"realname audit verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    db, trail = _trail(args)
    try:
        report = trail.verify(_retention(args), window)
    finally:
        db.dispose()
    summary = (
        f"{report.checked} records from {report.base_id + 1} to {report.head_id}, "
        f"{report.anchors_checked} log anchors, {report.prunes_checked} logged prunes"
    )
    out = sys.stdout if report.ok else sys.stderr
    print(f"audit trail {'intact' if report.ok else 'TAMPERED'}: {summary}", file=out)
    for problem in report.problems:
        print(f"  {problem}", file=out)
    print(_tail_line(report, window), file=out)
    if report.unsequenced:
        print(f"  {report.unsequenced} audit log entries wait for the sequencer", file=out)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_INCONSISTENT


def _tail_line(report: VerifyReport, window: dt.timedelta) -> str:
    """The unanchored tail and the window: what verify cannot vouch for."""
    seconds = f"{window.total_seconds():g} s"
    anchor = (
        "no anchor yet"
        if report.anchored_at is None
        else f"the last anchor is of head {report.anchored_id} at {_when(report.anchored_at)}"
    )
    tail = report.tail
    if tail is None:
        return f"unanchored tail: none ({anchor}); anchor window {seconds}"
    return (
        f"unanchored tail: records {tail.first_id}..{tail.last_id} ({tail.records} records, "
        f"{_when(tail.first_at)} to {_when(tail.last_at)}; {anchor}); anchor window {seconds}: "
        "until the next anchor these can be removed without verify noticing "
        "(`realname audit anchor` anchors now)"
    )


def _when(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def cmd_anchor(args: argparse.Namespace) -> int:
    """Anchor the current head into the transparency log now, and sequence the log."""
    db, trail = _trail(args)
    try:
        head = trail.anchor()
        where = "" if head is None else f"; {_sequence(args, db)}"
    finally:
        db.dispose()
    print("nothing new to anchor" if head is None else f"anchored head {head}{where}")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete records older than the retention period and log the prune; the rest verifies."""
    db, trail = _trail(args)
    try:
        deleted = trail.prune(_retention(args))
        where = _sequence(args, db) if deleted else "nothing to log"
    finally:
        db.dispose()
    print(f"pruned {deleted} records older than {args.keep_days} days; {where}")
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    """Print the records of a document (through the pepper) or of a principal, as JSON lines."""
    subject = None
    if args.document_number_file is not None or args.principal is None:
        try:
            number = document_number(args)
        except UsageError as exc:
            print(f"realname audit query: {exc}; or give --principal", file=sys.stderr)
            return EXIT_USAGE
        try:
            pseudonymizer = load_pepper(data_settings(args).pepper_path)
        except PepperError as exc:
            print(f"realname audit query: {exc}", file=sys.stderr)
            return EXIT_USAGE
        v = Violations()
        today = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).date()
        doc = check_document(v, DOCUMENT_TYPES[args.document_type].value, number, today)
        try:
            v.raise_if_any()
        except RealnameError:
            print("realname audit query: the document number is not valid", file=sys.stderr)
            return EXIT_USAGE
        assert doc is not None
        subject = pseudonymizer.document_key(doc)
    db, trail = _trail(args)
    try:
        records = trail.query(subject=subject, principal=args.principal, limit=args.limit)
    finally:
        db.dispose()
    for r in records:
        print(
            json.dumps(
                {
                    "id": r.id,
                    "at": r.at.isoformat(),
                    "principal": r.principal,
                    "method": r.method,
                    "outcome": r.outcome,
                    # A prefix of the pseudonym: enough to tell subjects apart, never the number.
                    "subject": None if r.subject is None else r.subject.hex()[:16],
                }
            )
        )
    return EXIT_OK


def _keep_days_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--keep-days",
        type=int,
        default=int(env_default("REALNAME_AUDIT_RETENTION_DAYS", "1095") or "1095"),
        help=f"{what} (env REALNAME_AUDIT_RETENTION_DAYS, default 1095)",
    )


def register(subparsers: SubParsers) -> None:
    """Adds `realname audit verify|anchor|prune|query`."""
    sub = command_group(subparsers, "audit", "the tamper-evident audit trail")
    verify = sub.add_parser("verify", help="check the hash chain, the log anchors and prunes")
    add_data_dir_argument(verify)
    _keep_days_argument(verify, "a logged prune that kept fewer days is reported")
    verify.set_defaults(func=cmd_verify)
    anchor = sub.add_parser("anchor", help="anchor the chain head into the transparency log")
    add_data_dir_argument(anchor)
    anchor.set_defaults(func=cmd_anchor)
    prune = sub.add_parser("prune", help="delete records past the retention period")
    add_data_dir_argument(prune)
    _keep_days_argument(prune, "keep this many days of records")
    prune.set_defaults(func=cmd_prune)
    query = sub.add_parser("query", help="records of a document or of a principal")
    add_data_dir_argument(query)
    query.add_argument(
        "--document-type", choices=sorted(DOCUMENT_TYPES), default="resident-id-card"
    )
    add_document_number_argument(query, "looked up through the pepper, never stored")
    query.add_argument("--principal", help="e.g. operator-cmcc")
    query.add_argument("--limit", type=int, default=100)
    query.set_defaults(func=cmd_query)
