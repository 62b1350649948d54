"""PostgreSQL goes silent under load (not down): calls answer UNAVAILABLE within their deadline,
health says NOT_SERVING, and the service serves again by itself once the database answers.

The silence is a TCP proxy between `realname serve` and the shared test server that stops
forwarding bytes while keeping every connection open: what a stalled server, a hung proxy or a
half-open connection look like from the client, where no error ever arrives.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from tests.support.databases import PostgresDatabases
from tests.support.faults import (
    ActivationLoad,
    activate_all,
    consistency_problems,
    make_data_dir,
)
from tests.support.pki import channel
from tests.support.server import start_server_process
from tests.support.stall_proxy import StallProxy

# The callers' deadline: a stalled call must be answered before it, not by the client's timer.
DEADLINE = 3.0
# The health probe runs every 2 s and gives a query 2 s; allow for a loaded machine.
FLIP_TIMEOUT = 20.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# AUDIT_UNAVAILABLE: the activation's audit record could not be written, so it is not
# acknowledged (its retry replays the outcome).
STALL_ANSWERS = {
    "UNAVAILABLE/DATABASE_TIMEOUT",
    "UNAVAILABLE/DATABASE_UNAVAILABLE",
    "UNAVAILABLE/AUDIT_UNAVAILABLE",
}
FINAL = {"OK", "RESOURCE_EXHAUSTED/CARD_LIMIT_REACHED"}


@pytest.fixture
def proxied_database(pg_databases: PostgresDatabases) -> Iterator[tuple[StallProxy, str, str]]:
    """A fresh database, a proxy in front of its server: (proxy, URL via proxy, direct URL)."""
    url = pg_databases.new()
    proxy = StallProxy(url)
    try:
        yield proxy, proxy.url(url), url
    finally:
        proxy.close()
        pg_databases.drop(url)


def _wait(condition: Callable[[], bool], what: str, timeout: float, context: object) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {context}")
        time.sleep(0.05)


def test_silent_database_answers_unavailable_in_time_and_recovers(
    tmp_path: Path,
    pki_dir: Path,
    pepper_path: Path,
    proxied_database: tuple[StallProxy, str, str],
) -> None:
    proxy, via_proxy, direct = proxied_database
    data_dir = make_data_dir(tmp_path, pki_dir, pepper_path)
    server = start_server_process(data_dir, database_url=via_proxy)
    ch = channel(server.address, data_dir / "dev-pki", "operator-cmcc")
    health = health_pb2_grpc.HealthStub(ch)

    def status() -> int:
        return int(health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)

    try:
        stub = vgrpc.VerificationServiceStub(ch)
        load = ActivationLoad(stub, threads=6, deadline=DEADLINE)
        load.start()
        _wait(
            lambda: sum(r.outcome.ok for r in load.snapshot()) >= 40,
            "load before",
            30,
            Counter(r.outcome.status for r in load.snapshot()),
        )
        proxy.pause()
        paused_at = time.monotonic()
        _wait(lambda: status() == NOT_SERVING, "health NOT_SERVING", FLIP_TIMEOUT, server.log())
        _wait(
            lambda: sum(1 for r in load.snapshot() if r.sent_at > paused_at) >= 20,
            "calls while silent",
            FLIP_TIMEOUT,
            Counter(r.outcome.status for r in load.snapshot()),
        )
        resumed_at = time.monotonic()
        proxy.resume()
        _wait(
            lambda: (
                sum(1 for r in load.snapshot() if r.sent_at > resumed_at and r.outcome.ok) >= 40
            ),
            "recovery",
            30,
            Counter(r.outcome.status for r in load.snapshot() if r.sent_at > resumed_at),
        )
        _wait(lambda: status() == SERVING, "health SERVING", FLIP_TIMEOUT, server.log())
        records = load.stop()

        silent = [r for r in records if paused_at - DEADLINE < r.sent_at < resumed_at]
        # Calls in flight when the database went silent, and calls made while it was: each
        # answered by the server, UNAVAILABLE, before the caller's own deadline ran out.
        late = Counter(
            r.outcome.status for r in silent if r.outcome.status not in STALL_ANSWERS | FINAL
        )
        assert not late, (
            late,
            [
                (round(r.sent_at - paused_at, 2), round(r.outcome.latency, 2), r.outcome.status)
                for r in silent
                if r.outcome.status not in STALL_ANSWERS | FINAL
            ],
        )
        assert sum(r.outcome.status in STALL_ANSWERS for r in silent) >= 20, Counter(
            r.outcome.status for r in silent
        )
        assert max(r.outcome.latency for r in silent) < DEADLINE
        # Back by itself: once one call succeeds after the database answers again, every later
        # call gets a definite answer (no stale pooled session fails it).
        after = [r for r in records if r.sent_at > resumed_at]
        first_ok = next(i for i, r in enumerate(after) if r.outcome.ok)
        assert all(r.outcome.status in FINAL for r in after[first_ok + 1 :]), Counter(
            r.outcome.status for r in after[first_ok + 1 :]
        )

        # An answer was given for every acknowledged call, and a retry with the same request id
        # repeats it; a call whose outcome was unknown now gets a definite one.
        retried = activate_all(stub, [r.request for r in records], timeout=30)
        for record, outcome in zip(records, retried, strict=True):
            if record.outcome.status in FINAL:
                assert (outcome.status, outcome.card) == (
                    record.outcome.status,
                    record.outcome.card,
                )
            else:
                assert outcome.status in FINAL, outcome.status
    finally:
        ch.close()
        assert server.stop() == 0, server.log()
    assert consistency_problems(direct) == []
    log = server.log()
    assert '"msg":"database unreachable"' in log and '"msg":"database reachable again"' in log
