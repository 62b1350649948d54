"""`realname log …` against a running `realname serve`, over real HTTP, on SQLite and PostgreSQL.

The server's background sequencer integrates what is appended to its database; the monitor and
the witness follow it with a real HTTP client; the database is then tampered with directly, as
a dishonest log operator could, and the monitor must catch each change.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, insert, select, update

from registry.checkpoint import open_checkpoint
from registry.log.entries import Entry, encode_entry
from registry.log.signing import load_log_signer, log_key_path
from registry.log.storage import (
    append_entries,
    log_checkpoints,
    log_cosignatures,
    log_entries,
    log_pending,
    log_state,
    log_tiles,
)
from registry.merkle import empty_root
from registry.note import parse_verifier_key
from services.cli.main import build_parser
from services.storage.database import Database, DatabaseConfig
from tests.support.logdata import audit, issuance, log_signer, revocation
from tests.support.server import ServerProcess, free_port, realname_bin, start_server_process

ORIGIN = "realname.example/log"


def realname(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [realname_bin(), *args], capture_output=True, text=True, timeout=120, check=False
    )


@dataclass
class Served:
    """A running `realname serve` with its database and HTTP URL."""

    server: ServerProcess
    db: Database
    url: str
    data_dir: Path
    vkey: str
    capsys: pytest.CaptureFixture[str]

    def cli(self, *argv: str) -> tuple[int, str, str]:
        """Runs a `realname` subcommand in this process (no logging setup); code, out, err."""
        args = build_parser().parse_args(list(argv))
        code = int(args.func(args))
        out, err = self.capsys.readouterr()
        return code, out, err

    def monitor(self, *extra: str) -> tuple[int, str, str]:
        return self.cli("log", "monitor", "--url", self.url, "--vkey", self.vkey, "--once", *extra)

    def append(self, entries: list[Entry]) -> int:
        """Appends entries and waits for the server's sequencer to publish them."""
        self.db.write(lambda conn: append_entries(conn, entries))
        with self.db.engine.connect() as conn:
            size = int(conn.execute(select(log_state.c.size)).scalar_one())
            pending = conn.execute(select(log_pending.c.id)).all()
        return self.wait_for_size(size + len(pending))

    def wait_for_size(self, size: int) -> int:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            body = httpx.get(f"{self.url}/log/checkpoint").content
            if body and body.split(b"\n")[1] == str(size).encode():
                return size
            time.sleep(0.05)
        raise AssertionError(f"the server never published tree size {size}:\n{self.server.log()}")


@pytest.fixture
def served(
    database_url: str,
    tmp_path: Path,
    pki_dir: Path,
    pepper_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Served]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copytree(pki_dir, data_dir / "dev-pki")
    shutil.copyfile(pepper_path, data_dir / "pepper")
    witness_keys(data_dir, capsys)
    port = free_port()
    server = start_server_process(
        data_dir, database_url=database_url, extra_args=["--http-address", f"127.0.0.1:{port}"]
    )
    db = Database(DatabaseConfig(database_url))
    served = Served(server, db, f"http://127.0.0.1:{port}", data_dir, "", capsys)
    code, out, err = served.cli("log", "key", "--data-dir", str(data_dir))
    assert code == 0, err
    served.vkey = out.strip()
    yield served
    code = server.stop()
    db.dispose()
    assert code == 0, server.log()


def witness_keys(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two witness keys, made with `realname log witness-key`; the log accepts both."""
    lines = []
    for n in (1, 2):
        out = data_dir / f"w{n}.key"
        args = build_parser().parse_args(
            ["log", "witness-key", "--name", f"witness{n}.test", "--out", str(out)]
        )
        assert args.func(args) == 0
        lines.append(capsys.readouterr().out.strip())
        assert out.stat().st_mode & 0o077 == 0
        assert args.func(args) == 2  # never overwrites a key
        assert "not overwriting" in capsys.readouterr().err
        (data_dir / f"w{n}.vkey").write_text(lines[-1])
    log_dir = data_dir / "log"
    log_dir.mkdir(exist_ok=True)
    (log_dir / "witnesses.txt").write_text("# accepted witnesses\n" + "\n".join(lines) + "\n")


def test_monitor_follows_an_honest_log_and_reports_a_watched_store(
    served: Served, tmp_path: Path
) -> None:
    # `log key` printed the verifier key of the key file the server signs with.
    verifier = parse_verifier_key(served.vkey)
    assert verifier.name == ORIGIN
    assert load_log_signer(log_key_path(served.data_dir), ORIGIN).verifier() == verifier
    served.wait_for_size(0)
    note = httpx.get(f"{served.url}/log/checkpoint").content
    assert open_checkpoint(note, origin=ORIGIN, log_verifier=verifier).checkpoint.size == 0
    code, _out, err = served.cli(
        "log", "key", "--data-dir", str(served.data_dir), "--origin", "x.y"
    )
    assert code == 2 and "not 'x.y'" in err

    state = tmp_path / "monitor.json"
    served.append([audit(i) for i in range(20)] + [issuance(1), issuance(2, "cucc")])
    code, out, err = served.monitor(
        "--state", str(state), "--watch-store", "tmall/shop-1", "--watch-operator", "vno1"
    )
    assert code == 0, err
    events = [line for line in out.splitlines() if line.startswith("event ")]
    assert len(events) == 1
    assert "index=20 kind=issuance" in events[0] and "store=tmall/shop-1" in events[0]
    assert "verified realname.example/log at tree size 22 (was 0)" in out

    served.append([revocation(1), issuance(3, "vno1"), audit(99)])
    code, out, err = served.monitor(
        "--state", str(state), "--watch-store", "91110000000000001X", "--watch-operator", "vno1"
    )
    assert code == 0, err
    assert [line.split()[1] for line in out.splitlines() if line.startswith("event ")] == [
        "index=22",
        "index=23",
    ]
    assert "tree size 25 (was 22), root " in out and ": 3 entries checked, 2 watched" in out

    # The console script itself, following the log as a store owner would leave it running.
    follower = subprocess.Popen(
        [
            realname_bin(), "log", "monitor", "--url", served.url, "--vkey", served.vkey,
            "--state", str(state), "--interval", "0.2", "--watch-store", "tmall/shop-9",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in follower.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=pump)
    reader.start()
    try:
        assert "tree size 25 (was 25)" in next_line(lines, "verified")
        served.append([issuance(9)])
        event = next_line(lines, "event ")
        assert "index=25 kind=issuance" in event and "store=tmall/shop-9" in event
    finally:
        follower.terminate()
        code = follower.wait(timeout=20)
        reader.join(timeout=5)
        assert follower.stderr is not None
        errors = follower.stderr.read()
        follower.stderr.close()
        if follower.stdout is not None:
            follower.stdout.close()
    assert code == 0, errors


def next_line(lines: queue.Queue[str], prefix: str, timeout: float = 20) -> str:
    """The next line the follower prints that starts with ``prefix``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line.startswith(prefix):
            return line
    raise AssertionError(f"the monitor printed no {prefix!r} line in {timeout} s")


def test_witnesses_cosign_and_monitors_require_k_of_n(served: Served, tmp_path: Path) -> None:
    served.append([audit(i) for i in range(10)])
    w1, w2 = (served.data_dir / f"w{n}.vkey" for n in (1, 2))
    witness_args = ["--witness", w1.read_text(), "--witness", w2.read_text()]

    def cosign(n: int) -> tuple[int, str, str]:
        return served.cli(
            "log", "cosign", "--url", served.url, "--vkey", served.vkey,
            "--witness-key", str(served.data_dir / f"w{n}.key"),
            "--state", str(tmp_path / f"witness{n}.json"),
        )  # fmt: skip

    code, out, err = cosign(1)
    assert code == 0, err
    assert "cosigned realname.example/log at tree size 10 as witness1.test" in out
    assert served.monitor(*witness_args, "--witness-threshold", "1")[0] == 0
    code, _out, err = served.monitor(*witness_args, "--witness-threshold", "2")
    assert code == 1 and "cosigned by 1 trusted witnesses, policy requires 2" in err
    assert cosign(2)[0] == 0
    assert served.monitor(*witness_args)[0] == 0  # default: all listed witnesses

    served.append([audit(i) for i in range(10, 15)])
    assert cosign(1)[0] == 0
    # Rewrite history under the log's own key: the witness must refuse to cosign the fork.
    fork(served, [audit(1000 + i) for i in range(17)])
    code, _out, err = cosign(1)
    assert code == 1 and "REFUSED" in err


def test_monitor_catches_a_changed_a_deleted_entry_and_a_fork(
    served: Served, tmp_path: Path
) -> None:
    state = tmp_path / "monitor.json"
    served.append([audit(i) for i in range(30)] + [issuance(5)])
    assert served.monitor("--state", str(state))[0] == 0

    original = served.db.read(
        lambda conn: conn.execute(select(log_entries).where(log_entries.c.idx == 7)).one()
    )
    forged = encode_entry(issuance(66))
    served.db.write(
        lambda conn: conn.execute(
            update(log_entries).where(log_entries.c.idx == 7).values(entry=forged)
        )
    )
    code, _out, err = served.monitor()  # a fresh monitor reads every entry
    assert code == 1 and "entry 7 does not hash to its leaf" in err
    code, _out, err = served.monitor("--state", str(state), "--recheck-all")
    assert code == 1 and "entry 7 does not hash" in err

    served.db.write(lambda conn: conn.execute(delete(log_entries).where(log_entries.c.idx == 7)))
    code, _out, err = served.monitor()
    assert code == 1 and "tile/entries/000.p/31" in err and "30 entries, want 31" in err

    served.db.write(lambda conn: conn.execute(insert(log_entries).values(**original._asdict())))
    assert served.monitor()[0] == 0

    fork(served, [audit(i) for i in range(30)] + [issuance(5, serial=0x99), audit(77)])
    code, _out, err = served.monitor("--state", str(state))
    assert code == 1
    assert "INCONSISTENT LOG: tree 32 is not an extension of tree 31 (fork)" in err
    assert "previously verified" in err

    bad_key = served.vkey.rsplit("+", 1)[0] + "+" + "A" * 44
    assert served.monitor("--vkey", bad_key)[0] == 2


def test_monitor_exits_3_when_the_log_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    vkey = log_signer().verifier().verifier_key
    args = build_parser().parse_args(
        ["log", "monitor", "--url", f"http://127.0.0.1:{free_port()}", "--vkey", vkey, "--once"]
    )
    assert args.func(args) == 3
    assert "cannot read the log" in capsys.readouterr().err
    for bad in (["--url", "ftp://x"], ["--vkey", "nonsense"], ["--witness-threshold", "1"]):
        argv = ["log", "monitor", "--url", "http://127.0.0.1:1", "--vkey", vkey, "--once", *bad]
        args = build_parser().parse_args(argv)
        assert args.func(args) == 2
    assert "--witness-threshold needs" in capsys.readouterr().err


def fork(served: Served, entries: list[Entry]) -> None:
    """Replaces the log's whole history in one transaction; the server re-sequences it."""

    def rewrite(conn) -> None:  # type: ignore[no-untyped-def]
        for table in (log_cosignatures, log_checkpoints, log_tiles, log_entries, log_pending):
            conn.execute(delete(table))
        conn.execute(update(log_state).values(size=0, root=empty_root(), edge=b""))
        append_entries(conn, entries)

    served.db.write(rewrite)
    served.wait_for_size(len(entries))


def test_integrate_sequences_pending_entries_offline(
    database_url: str, tmp_path: Path, pki_dir: Path
) -> None:
    data_dir = tmp_path / "offline"
    data_dir.mkdir()
    db = Database(DatabaseConfig(database_url))
    try:
        db.write(lambda conn: append_entries(conn, [audit(i) for i in range(3)]))
    finally:
        db.dispose()
    result = subprocess.run(
        [realname_bin(), "log", "integrate", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "REALNAME_DATABASE_URL": database_url},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("realname.example/log: tree size 3 (+3), root ")
