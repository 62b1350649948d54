"""Pieces several `realname` command modules share."""

from __future__ import annotations

import argparse

from services.config import Settings, env_default


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
