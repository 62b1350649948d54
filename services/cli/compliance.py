"""`realname report compliance`: the regulator's compliance figures, from the database."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

from services.cli.common import EXIT_FAILED, EXIT_OK, SubParsers, data_settings, report_subparsers
from services.domain.errors import RealnameError
from services.features.compliance import (
    DEFAULT_TARGETS,
    STAGES,
    ComplianceDesk,
    Report,
    parse_targets,
)
from services.runtime.config import add_data_dir_argument, env_default
from services.storage.database import Database


def report_rows(report: Report) -> list[dict[str, Any]]:
    """One flat row per operator: the table, CSV and JSON outputs share it."""
    rows = []
    for f in report.operators:
        row: dict[str, Any] = {
            "operator": f.operator,
            "kind": f.kind,
            "live_cards": f.live_cards,
            "verified_cards": f.verified_cards,
            # None (JSON null, "no data" in the table) when the operator has no live cards.
            "real_name_rate": None if f.real_name_rate is None else round(f.real_name_rate, 4),
        }
        for target in report.targets:
            met = f.meets(target)
            row[f"target_{target.rate:.0%}_by_{target.due}"] = (
                "no data" if met is None else "met" if met else f"short {f.shortfall(target)}"
            )
        for held, count in enumerate(f.documents_by_cards, start=1):
            row[f"documents_{held if held <= 5 else '6+'}_cards"] = count
        row["documents_over_cap"] = f.documents_over_cap
        for stage in STAGES:
            row[f"stage_{stage.lower()}"] = f.cards_by_stage.get(stage, 0)
        row.update(
            disputes_opened=f.disputes_opened,
            disputes_resolved=f.disputes_resolved,
            agents_flagged=f.agents_flagged,
            agents_suspended=f.agents_suspended,
            stores_authorized=f.stores_authorized,
            stores_revoked=f.stores_revoked,
            enforcement_actions=f.enforcement_actions,
        )
        rows.append(row)
    return rows


def cmd_report_compliance(args: argparse.Namespace) -> int:
    """Print the compliance report (and record today's snapshot with --snapshot)."""
    db = Database(data_settings(args).database())
    try:
        desk = ComplianceDesk(db, parse_targets(args.targets))
        if args.snapshot:
            desk.snapshot()
        report = desk.report(args.operator)
    except RealnameError as exc:
        print(f"realname report compliance: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        db.dispose()
    rows = report_rows(report)
    if args.format == "json":
        provinces = [
            {"province": p.province, "live_cards": p.live_cards,
             "verified_cards": p.verified_cards, "real_name_rate": round(p.real_name_rate, 4)}
            for p in report.provinces
        ]  # fmt: skip
        print(json.dumps({"operators": rows, "provinces": provinces}, indent=2))
    elif args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["operator"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        columns = ["operator", "kind", "live_cards", "verified_cards", "real_name_rate"]
        columns += [c for c in (rows[0] if rows else {}) if c.startswith("target_")]
        columns += ["disputes_opened", "agents_flagged", "stores_authorized"]
        widths = {c: max(len(c), *(len(_shown(r[c])) for r in rows)) for c in columns}
        print("  ".join(c.ljust(widths[c]) for c in columns))
        for r in rows:
            print("  ".join(_shown(r[c]).ljust(widths[c]) for c in columns))
    return EXIT_OK


def _shown(value: object) -> str:
    return "no data" if value is None else str(value)


def register(subparsers: SubParsers) -> None:
    """Adds `realname report compliance`."""
    p = report_subparsers(subparsers).add_parser(
        "compliance", help="real-name rate and compliance figures per operator"
    )
    add_data_dir_argument(p)
    p.add_argument("--operator", help="only this operator")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument(
        "--targets",
        default=env_default("REALNAME_COMPLIANCE_TARGETS", DEFAULT_TARGETS),
        help="rate@YYYY-MM-DD,... (env REALNAME_COMPLIANCE_TARGETS)",
    )
    p.add_argument("--snapshot", action="store_true", help="record today's figures first")
    p.set_defaults(func=cmd_report_compliance)
