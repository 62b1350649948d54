"""`realname audit ...`: verify, anchor, prune and query the audit trail (on the database)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

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
from services.features.audit_trail import AuditTrail
from services.runtime.config import add_data_dir_argument, env_default
from services.runtime.key_files import load_pepper
from services.storage.database import Database


def _trail(args: argparse.Namespace) -> tuple[Database, AuditTrail]:
    db = Database(data_settings(args).database())
    return db, AuditTrail(db)


def cmd_verify(args: argparse.Namespace) -> int:
    """Recompute the chain; exit 1 and list the problems when anything was tampered with."""
    db, trail = _trail(args)
    try:
        report = trail.verify()
    finally:
        db.dispose()
    summary = (
        f"{report.checked} records from {report.base_id + 1} to {report.head_id}, "
        f"{report.anchors_checked} log anchors"
    )
    if report.ok:
        print(f"audit trail intact: {summary}")
        return EXIT_OK
    print(f"audit trail TAMPERED: {summary}", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_INCONSISTENT


def cmd_anchor(args: argparse.Namespace) -> int:
    """Anchor the current head into the transparency log now."""
    db, trail = _trail(args)
    try:
        head = trail.anchor()
    finally:
        db.dispose()
    print("nothing new to anchor" if head is None else f"anchored head {head}")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete records older than the retention period; the rest still verifies."""
    before = dt.datetime.now(dt.UTC) - dt.timedelta(days=args.keep_days)
    db, trail = _trail(args)
    try:
        deleted = trail.prune(before)
    finally:
        db.dispose()
    print(f"pruned {deleted} records older than {before.isoformat(timespec='seconds')}")
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


def register(subparsers: SubParsers) -> None:
    """Adds `realname audit verify|anchor|prune|query`."""
    sub = command_group(subparsers, "audit", "the tamper-evident audit trail")
    verify = sub.add_parser("verify", help="check the hash chain and the log anchors")
    add_data_dir_argument(verify)
    verify.set_defaults(func=cmd_verify)
    anchor = sub.add_parser("anchor", help="anchor the chain head into the transparency log")
    add_data_dir_argument(anchor)
    anchor.set_defaults(func=cmd_anchor)
    prune = sub.add_parser("prune", help="delete records past the retention period")
    add_data_dir_argument(prune)
    prune.add_argument(
        "--keep-days",
        type=int,
        default=int(env_default("REALNAME_AUDIT_RETENTION_DAYS", "1095") or "1095"),
        help="keep this many days of records (env REALNAME_AUDIT_RETENTION_DAYS, default 1095)",
    )
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
