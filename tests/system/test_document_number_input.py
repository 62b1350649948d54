"""ID numbers never go on a command line (shell history, `ps`): a file, standard input or a prompt.

Every verb that takes a document number reads it with ``--document-number-file PATH`` (``-`` for
standard input) or, left out on a terminal, asks for it without echo; ``--document-number
NUMBER`` is refused without repeating the number.
"""

from __future__ import annotations

import argparse
import io
import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from services.cli.main import build_parser
from tests.support.identities import resident_id
from tests.support.server import dev_init, realname_bin

NUMBER = resident_id(77)
ENV = {**os.environ, "REALNAME_DATABASE_URL": ""}  # the data directory's SQLite database

# Every verb that takes an ID number (the walk below fails for one missing here).
VERBS = {
    ("audit", "query"),
    ("card", "reverify"),
    ("courier", "verify"),
    ("legacy", "complete"),
    ("proofing", "block"),
    ("proofing", "unblock"),
    ("reader", "simulate"),
    ("store", "sign-shipment"),
}


def verbs(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command's path and parser."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from verbs(sub, (*path, name))


def takes_a_document_number(parser: argparse.ArgumentParser) -> bool:
    return any("document-number" in o for a in parser._actions for o in a.option_strings)


def test_the_verbs_taking_a_document_number_are_known() -> None:
    found = {path for path, p in verbs(build_parser()) if takes_a_document_number(p)}
    assert found == VERBS


@pytest.mark.parametrize("verb", sorted(VERBS), ids="-".join)
@pytest.mark.parametrize("form", ["--document-number", "--document-number=", "--document-numb"])
def test_a_number_on_the_command_line_is_refused(verb: tuple[str, ...], form: str) -> None:
    argv = [*verb, form + NUMBER] if form.endswith("=") else [*verb, form, NUMBER]
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    message = err.getvalue()
    assert NUMBER not in message
    if form != "--document-numb":  # an abbreviation is ambiguous: refused by argparse itself
        assert "--document-number-file" in message and "command line" in message


def query(
    tmp_path: Path, *args: str, stdin: str | int | None = None
) -> subprocess.CompletedProcess[str]:
    """`realname audit query` over an empty SQLite database (the number's records: none)."""
    data_dir = tmp_path / "data"
    if not data_dir.exists():
        dev_init(data_dir, env=ENV)
    return subprocess.run(
        [realname_bin(), "audit", "query", "--data-dir", str(data_dir), *args],
        input=stdin if isinstance(stdin, str) else None,
        stdin=stdin if isinstance(stdin, int) else None,
        capture_output=True, text=True, check=False, timeout=60,
        env=ENV,
    )  # fmt: skip


def test_the_number_is_read_from_stdin_or_a_file_never_argv(tmp_path: Path) -> None:
    piped = query(tmp_path, "--document-number-file", "-", stdin=NUMBER + "\n")
    assert piped.returncode == 0, piped.stderr
    held = tmp_path / "number.txt"
    held.write_text(NUMBER + "\n")
    filed = query(tmp_path, "--document-number-file", str(held))
    assert filed.returncode == 0, filed.stderr
    # Neither a terminal nor a file: refused with how to give it, not read from argv.
    missing = query(tmp_path, stdin=subprocess.DEVNULL)
    assert missing.returncode == 2
    assert "--document-number-file" in missing.stderr and "--principal" in missing.stderr
    bad = tmp_path / "two.txt"
    bad.write_text(f"{NUMBER}\n{resident_id(78)}\n")
    two = query(tmp_path, "--document-number-file", str(bad))
    assert two.returncode == 2 and "one ID document number" in two.stderr
    refused = query(tmp_path, "--document-number", NUMBER)
    assert refused.returncode == 2 and "--document-number-file" in refused.stderr
    for done in (piped, filed, missing, two, refused):
        assert NUMBER not in done.stdout + done.stderr


def test_on_a_terminal_the_number_is_asked_without_echo(tmp_path: Path) -> None:
    query(tmp_path, "--principal", "regulator")  # dev-init the data directory first
    leader, follower = pty.openpty()
    try:
        data_dir = tmp_path / "data"
        proc = subprocess.Popen(
            [realname_bin(), "audit", "query", "--data-dir", str(data_dir)],
            stdin=follower, stdout=follower, stderr=follower, start_new_session=True,
            env=ENV,
        )  # fmt: skip
        seen = b""
        deadline = time.monotonic() + 60
        while b"number:" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                seen += os.read(leader, 4096)
        assert b"ID document number:" in seen
        os.write(leader, NUMBER.encode() + b"\n")
        assert proc.wait(timeout=60) == 0
        while select.select([leader], [], [], 0.2)[0]:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
        os.close(follower)
    assert NUMBER.encode() not in seen  # not echoed
