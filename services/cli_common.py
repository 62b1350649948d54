"""Pieces several `realname` command modules share."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, Final

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.runtime.config import Settings, env_default

EXIT_FAILED: Final = 1
"""The server refused or failed the call."""
EXIT_USAGE: Final = 2
"""The command could not be run as given (arguments, files, configuration)."""


def report_subparsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The subcommands of `realname report`, creating the `report` command on first use."""
    report = subparsers.choices.get("report")
    if report is None:
        report = subparsers.add_parser("report", help="reports from the database")
        return report.add_subparsers(dest="report_command", required=True)
    for action in report._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("the report command has no subcommands")


def data_settings(args: argparse.Namespace) -> Settings:
    """The settings of a command that only needs the data dir and the database."""
    return Settings(
        data_dir=args.data_dir.resolve(), database_url=env_default("REALNAME_DATABASE_URL")
    )


def describe_rpc_error(exc: grpc.RpcError) -> str:
    """A failed call's status, reason, metadata and field violations, one per line."""
    call: Any = exc
    lines = [f"ERROR: {call.code().name}: {call.details()}"]
    status = rpc_status.from_call(call)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            lines.append(f"reason: {info.reason}")
            if info.metadata:
                lines.append(f"metadata: {json.dumps(dict(info.metadata), sort_keys=True)}")
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            lines.extend(f"field {v.field}: {v.description}" for v in bad.field_violations)
    return "\n".join(lines)


def guard(
    command: Callable[[argparse.Namespace], int],
    usage_errors: tuple[type[Exception], ...],
) -> Callable[[argparse.Namespace], int]:
    """Runs a command, turning RPC errors (EXIT_FAILED) and ``usage_errors`` (EXIT_USAGE) into a
    message on stderr and an exit status."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except grpc.RpcError as exc:
            print(describe_rpc_error(exc), file=sys.stderr)
            return EXIT_FAILED
        except usage_errors as exc:
            print(f"realname: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return run
