"""`realname agents register|suspend|reinstate|list|signals` and `realname report agents`.

* ``agents …`` are gRPC calls to the running server over mTLS as an operator (``--as``).
* ``report agents`` opens the database directly (``--data-dir``; every operator's agents, or
  ``--operator``'s): per agent, its status, the activations and distinct documents it sold to
  since ``--since`` (computed from the cards), and the signals recorded against it since then.

Output: ``--format table`` (default), ``csv`` or ``json``. Exit codes: 0 done, 1 the call
failed, 2 bad arguments or local state.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from registry.authz.errors import RegistryError
from registry.pki.errors import PkiError
from services.cli.common import (
    EXIT_OK,
    Command,
    SubParsers,
    add_client_arguments,
    call_server,
    command_group,
    data_settings,
    guard,
    report_subparsers,
)
from services.features.agents import AgentPolicy, parse_duration
from services.proto.realname.v1 import agents_pb2 as apb
from services.proto.realname.v1 import agents_pb2_grpc as agrpc
from services.runtime.config import ConfigError, add_data_dir_argument
from services.storage import agents_repo
from services.storage.database import Database
from services.storage.rawsql import Tx

KINDS: Final = {
    "shop": apb.AGENT_KIND_SHOP,
    "sales-point": apb.AGENT_KIND_SALES_POINT,
    "online-store": apb.AGENT_KIND_ONLINE_STORE,
}
STATUSES: Final = {"active": apb.AGENT_STATUS_ACTIVE, "suspended": apb.AGENT_STATUS_SUSPENDED}
FORMATS: Final = ("table", "csv", "json")

AGENT_COLUMNS: Final = ("agent_id", "parent", "kind", "status", "name", "suspension_reason")
SIGNAL_COLUMNS: Final = (
    "at", "agent_id", "kind", "value", "threshold", "window_seconds", "subject_masked", "detail",
)  # fmt: skip
REPORT_COLUMNS: Final = (
    "operator", "agent_id", "parent", "status", "activations", "documents", "signals",
    "last_signal_at",
)  # fmt: skip

T = TypeVar("T")
Row = dict[str, str | int]


def agent_policy() -> AgentPolicy:
    """The agent policy from ``REALNAME_AGENT_*``; ConfigError when a value is bad."""
    try:
        return AgentPolicy.from_env(os.environ)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _agents(args: argparse.Namespace, rpc: Callable[[agrpc.AgentServiceStub], T]) -> T:
    return call_server(args, lambda channel: rpc(agrpc.AgentServiceStub(channel)))


def render(rows: Sequence[Row], columns: Sequence[str], fmt: str) -> str:
    """Rows as an aligned text table, CSV or a JSON array."""
    if fmt == "json":
        return json.dumps([{c: r.get(c, "") for c in columns} for r in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    cells = [list(columns)] + [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def _agent_row(agent: apb.Agent) -> Row:
    return {
        "agent_id": agent.agent_id,
        "parent": agent.parent_agent_id,
        "kind": apb.AgentKind.Name(agent.kind).removeprefix("AGENT_KIND_"),
        "status": apb.AgentStatus.Name(agent.status).removeprefix("AGENT_STATUS_"),
        "name": agent.name,
        "suspension_reason": agent.suspension_reason,
    }


def _since(text: str) -> dt.datetime:
    """An ISO 8601 time, or a duration back from now (``24h``, ``7d``)."""
    try:
        return dt.datetime.now(dt.UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a time or a duration like 24h: {text!r}") from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def cmd_register(args: argparse.Namespace) -> int:
    """Register an agent."""
    request = apb.RegisterAgentRequest(
        agent_id=args.agent_id, parent_agent_id=args.parent or "", name=args.name or "",
        kind=KINDS[args.kind],
    )  # fmt: skip
    agent = _agents(args, lambda stub: stub.RegisterAgent(request, timeout=30)).agent
    print(render([_agent_row(agent)], AGENT_COLUMNS, args.format))
    return EXIT_OK


def cmd_suspend(args: argparse.Namespace) -> int:
    """Suspend an agent."""
    request = apb.SuspendAgentRequest(agent_id=args.agent_id, reason=args.reason)
    agent = _agents(args, lambda stub: stub.SuspendAgent(request, timeout=30)).agent
    print(render([_agent_row(agent)], AGENT_COLUMNS, args.format))
    return EXIT_OK


def cmd_reinstate(args: argparse.Namespace) -> int:
    """Reinstate an agent."""
    request = apb.ReinstateAgentRequest(agent_id=args.agent_id)
    agent = _agents(args, lambda stub: stub.ReinstateAgent(request, timeout=30)).agent
    print(render([_agent_row(agent)], AGENT_COLUMNS, args.format))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    """List the operator's agents (every page)."""

    def fetch(stub: agrpc.AgentServiceStub) -> list[apb.Agent]:
        found: list[apb.Agent] = []
        token = ""
        while True:
            page = stub.ListAgents(
                apb.ListAgentsRequest(
                    page_size=500, page_token=token, parent_agent_id=args.parent or "",
                    status=STATUSES.get(args.status or "", apb.AGENT_STATUS_UNSPECIFIED),
                ),
                timeout=30,
            )  # fmt: skip
            found.extend(page.agents)
            token = page.next_page_token
            if not token:
                return found

    agents = _agents(args, fetch)
    print(render([_agent_row(a) for a in agents], AGENT_COLUMNS, args.format))
    return EXIT_OK


def cmd_signals(args: argparse.Namespace) -> int:
    """List signals against the operator's agents, newest first."""
    request = apb.ListAgentSignalsRequest(
        agent_id=args.agent or "", kind=args.kind or "", page_size=args.limit
    )
    if args.since is not None:
        request.since.FromDatetime(args.since)
    signals = _agents(args, lambda stub: stub.ListAgentSignals(request, timeout=30)).signals
    rows: list[Row] = [
        {
            "at": s.at.ToDatetime(tzinfo=dt.UTC).isoformat(timespec="seconds"),
            "agent_id": s.agent_id,
            "kind": s.kind,
            "value": s.value,
            "threshold": s.threshold,
            "window_seconds": s.window_seconds,
            "subject_masked": s.subject_masked,
            "detail": s.detail,
        }
        for s in signals
    ]
    print(render(rows, SIGNAL_COLUMNS, args.format))
    return EXIT_OK


def report_rows(db: Database, operator: str | None, since: dt.datetime) -> list[Row]:
    """The agents report: one row per agent that is registered, sold or was flagged."""

    def work(tx: Tx) -> list[agents_repo.AgentSummary]:
        return agents_repo.agent_summaries(tx, operator, since)

    rows: list[Row] = []
    for s in db.run_tx(work, readonly=True):
        rows.append(
            {
                "operator": s.operator_id,
                "agent_id": s.agent_id,
                "parent": s.parent_id or "",
                "status": s.status,
                "activations": s.activations,
                "documents": s.documents,
                "signals": " ".join(f"{k}={n}" for k, n in sorted(s.signals.items())),
                "last_signal_at": (
                    s.last_signal_at.isoformat(timespec="seconds") if s.last_signal_at else ""
                ),
            }
        )
    return rows


def cmd_report_agents(args: argparse.Namespace) -> int:
    """Print the agents report from the database."""
    db = Database(data_settings(args).database())
    try:
        rows = report_rows(db, args.operator, args.since)
    finally:
        db.dispose()
    if args.flagged:
        rows = [r for r in rows if r["signals"]]
    print(render(rows, REPORT_COLUMNS, args.format))
    return EXIT_OK


def _format_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table")


def _guarded(command: Command) -> Command:
    return guard(command, RegistryError, PkiError)


def register(subparsers: SubParsers) -> None:
    """Adds `realname agents …` and `realname report agents`."""
    sub = command_group(subparsers, "agents", "an operator's agents and their signals (gRPC)")

    p = sub.add_parser("register", help="register an agent (idempotent)")
    add_client_arguments(p)
    p.add_argument("agent_id")
    p.add_argument("--parent", help="the parent agent (not for a virtual operator)")
    p.add_argument("--name", help="display name (default: the id)")
    p.add_argument("--kind", choices=sorted(KINDS), default="shop")
    _format_arg(p)
    p.set_defaults(func=_guarded(cmd_register))

    p = sub.add_parser("suspend", help="suspend an agent: its activations are refused")
    add_client_arguments(p)
    p.add_argument("agent_id")
    p.add_argument("--reason", required=True)
    _format_arg(p)
    p.set_defaults(func=_guarded(cmd_suspend))

    p = sub.add_parser("reinstate", help="lift an agent's suspension")
    add_client_arguments(p)
    p.add_argument("agent_id")
    _format_arg(p)
    p.set_defaults(func=_guarded(cmd_reinstate))

    p = sub.add_parser("list", help="list the operator's agents")
    add_client_arguments(p)
    p.add_argument("--status", choices=sorted(STATUSES))
    p.add_argument("--parent", help="only the sub-agents of this agent")
    _format_arg(p)
    p.set_defaults(func=_guarded(cmd_list))

    p = sub.add_parser("signals", help="list signals against the operator's agents")
    add_client_arguments(p)
    p.add_argument("--agent")
    p.add_argument("--kind", help="e.g. BATCH_ISSUANCE, DOCUMENT_AT_CAP, DISPUTED_CARD")
    p.add_argument("--since", type=_since, help="ISO 8601 time or a duration back (24h, 7d)")
    p.add_argument("--limit", type=int, default=100)
    _format_arg(p)
    p.set_defaults(func=_guarded(cmd_signals))

    p = report_subparsers(subparsers).add_parser(
        "agents", help="per agent: sales, documents and fraud signals"
    )
    add_data_dir_argument(p)
    p.add_argument("--operator", help="only this operator's agents")
    p.add_argument(
        "--since", type=_since, default=_since("1d"),
        help="ISO 8601 time or a duration back (default 1d)",
    )  # fmt: skip
    p.add_argument("--flagged", action="store_true", help="only agents with signals")
    _format_arg(p)
    p.set_defaults(func=_guarded(cmd_report_agents))
