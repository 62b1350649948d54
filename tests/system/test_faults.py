"""Faults against real `realname serve` processes: kill -9, PostgreSQL restart, SQLite locked/full.

After each fault: no acknowledged write is lost, a retried request id gives back its first
outcome (or, if the fault left the outcome unknown, a definite one), nothing is half-written,
no document is over the cap, and the service serves again once the fault is gone.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from sqlalchemy.pool import QueuePool

from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from services.storage.database import Database, DatabaseConfig, sqlite_url
from services.storage.rawsql import Tx
from tests.support.databases import PostgresDatabases, SqliteDatabases
from tests.support.faults import (
    ActivationLoad,
    Outcome,
    PrivatePostgres,
    activate_all,
    activation,
    can_mount_tmpfs,
    card_key,
    consistency_problems,
    document,
    exclusive_sqlite_lock,
    fill_filesystem,
    make_data_dir,
    outcome_of,
    recorded_request_ids,
    small_tmpfs,
)
from tests.support.pki import channel
from tests.support.server import ServerProcess, start_server_process

CAP = 5  # cmcc's card_limit in the demo data
CARD_LIMIT = "RESOURCE_EXHAUSTED/CARD_LIMIT_REACHED"


def _stub(
    server: ServerProcess, data_dir: Path
) -> tuple[grpc.Channel, vgrpc.VerificationServiceStub]:
    ch = channel(server.address, data_dir / "dev-pki", "operator-cmcc")
    return ch, vgrpc.VerificationServiceStub(ch)


def _check_cards_exist(
    stub: vgrpc.VerificationServiceStub,
    requests: list[vpb.ActivateCardRequest],
    outcomes: list[Outcome],
) -> None:
    """Every OK card is listed by ListCards (and GetCard finds a sample of them); each document's
    live cards are exactly its OK activations, and never more than the cap."""
    expected: dict[str, set[tuple[str, str, int, int]]] = defaultdict(set)
    docs: dict[str, cpb.Document] = {}
    for r, o in zip(requests, outcomes, strict=True):
        docs[r.document.number] = r.document
        if o.ok:
            assert o.card is not None
            expected[r.document.number].add(o.card)
    numbers = list(docs)
    # In bursts: the server refuses calls past threads x 64 in flight (RESOURCE_EXHAUSTED).
    for first in range(0, len(numbers), 500):
        lists = {
            number: stub.ListCards.future(vpb.ListCardsRequest(document=docs[number]), timeout=30)
            for number in numbers[first : first + 500]
        }
        for number, call in lists.items():
            cards = call.result().cards
            live = {card_key(c) for c in cards if c.state != vpb.CARD_STATE_DEACTIVATED}
            assert len(live) <= CAP
            assert live == expected[number]
    oks = [(r, o) for r, o in zip(requests, outcomes, strict=True) if o.ok]
    for r, o in random.Random(3).sample(oks, min(50, len(oks))):
        assert (
            card_key(stub.GetCard(vpb.GetCardRequest(msisdn=r.msisdn), timeout=10).card) == o.card
        )


# --- (a) kill -9 during a burst of activations -------------------------------------------------

SHARED_DOCS, PER_SHARED_DOC, DISTINCT_DOCS = 50, 10, 500  # 1,000 activations
KILL_AFTER_ANSWERS = 250
# gRPC refuses calls past threads x 64 in flight (1,024 for the default 16) with a bare
# RESOURCE_EXHAUSTED; 24 threads admit the whole burst at once, with room to spare.
SERVE_ARGS = ["--threads", "24"]


def _burst() -> list[vpb.ActivateCardRequest]:
    requests = [
        activation(f"kill-s{d}-{k}", d, d * PER_SHARED_DOC + k)
        for d in range(SHARED_DOCS)
        for k in range(PER_SHARED_DOC)
    ]
    first = SHARED_DOCS * PER_SHARED_DOC
    requests += [activation(f"kill-d{i}", 1_000 + i, first + i) for i in range(DISTINCT_DOCS)]
    random.Random(9).shuffle(requests)  # shared documents' calls land concurrently
    return requests


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    pki_dir: Path,
    pepper_path: Path,
    sqlite_databases: SqliteDatabases,
) -> Iterator[tuple[Path, str | None, str]]:
    """A data directory and a fresh database: (data_dir, REALNAME_DATABASE_URL, SQL URL)."""
    data_dir = make_data_dir(tmp_path, pki_dir, pepper_path)
    if request.param == "sqlite":
        yield data_dir, None, sqlite_databases.new(data_dir)
        return
    pg: PostgresDatabases = request.getfixturevalue("pg_databases")
    url = pg.new()
    yield data_dir, url, url
    pg.drop(url)


def test_kill_9_during_activations_loses_no_acknowledged_write(
    backend: tuple[Path, str | None, str],
) -> None:
    data_dir, db_url, sql_url = backend
    requests = _burst()
    server = start_server_process(data_dir, database_url=db_url, extra_args=SERVE_ARGS)
    ch, stub = _stub(server, data_dir)
    started = time.monotonic()
    calls = [stub.ActivateCard.future(r, timeout=60) for r in requests]
    while sum(c.done() for c in calls) < KILL_AFTER_ANSWERS:
        assert time.monotonic() - started < 60, server.log()
        time.sleep(0.005)
    server.proc.kill()  # SIGKILL: no grace, no flush, no rollback
    server.proc.wait(timeout=10)
    first = [Outcome(o.status, o.card) for o in _outcomes(calls)]
    ch.close()
    acked = [i for i, o in enumerate(first) if o.final]
    unknown = [i for i, o in enumerate(first) if not o.final]
    assert len(acked) >= KILL_AFTER_ANSWERS, Counter(o.status for o in first)
    assert unknown, "the kill came after the burst: nothing was in flight"
    # A call cut off by the kill is UNAVAILABLE (connection lost), never INTERNAL/UNKNOWN.
    assert {first[i].status.split("/")[0] for i in unknown} <= {"UNAVAILABLE"}, Counter(
        first[i].status for i in unknown
    )

    restarted = start_server_process(data_dir, database_url=db_url, extra_args=SERVE_ARGS)
    try:
        ch, stub = _stub(restarted, data_dir)
        retried = activate_all(stub, requests)
        for i in acked:
            assert (retried[i].status, retried[i].card) == (first[i].status, first[i].card)
        for i in unknown:
            assert retried[i].final, retried[i].status
        sample = random.Random(4).sample(unknown, min(100, len(unknown)))
        again = activate_all(stub, [requests[i] for i in sample])
        for i, outcome in zip(sample, again, strict=True):
            assert (outcome.status, outcome.card) == (retried[i].status, retried[i].card)
        statuses = Counter(o.status for o in retried)
        # Every document's calls are now decided: each shared one holds exactly the cap.
        assert statuses == {
            "OK": SHARED_DOCS * CAP + DISTINCT_DOCS,
            CARD_LIMIT: SHARED_DOCS * (PER_SHARED_DOC - CAP),
        }
        _check_cards_exist(stub, requests, retried)
        ch.close()
    finally:
        assert restarted.stop() == 0, restarted.log()
    assert consistency_problems(sql_url) == []


def _outcomes(calls: Sequence[grpc.Future]) -> list[Outcome]:  # type: ignore[type-arg]
    now = time.monotonic()
    return [outcome_of(c, now) for c in calls]


# --- (b) PostgreSQL restarted under load -------------------------------------------------------

# Loose enough for a loaded 2-core machine; the outage outlasts it, so a call the server holds
# until the database is back overruns it.
DEADLINE = 5.0


def test_postgresql_restart_under_load_answers_unavailable_and_recovers(
    tmp_path: Path, pki_dir: Path, pepper_path: Path
) -> None:
    data_dir = make_data_dir(tmp_path, pki_dir, pepper_path)
    pg = PrivatePostgres()
    server: ServerProcess | None = None
    try:
        url = pg.create_database("realname")
        server = start_server_process(data_dir, database_url=url)
        ch, stub = _stub(server, data_dir)
        load = ActivationLoad(stub, threads=6, deadline=DEADLINE)
        load.start()
        _wait_for(load, lambda: sum(r.outcome.ok for r in load.snapshot()) >= 40, "load before")
        pg.stop("immediate")  # a crash: sessions cut, recovery from WAL on start
        stopped_at = time.monotonic()
        _wait_for(load, lambda: _sent_between(load, stopped_at, None) >= 20, "calls while down")
        time.sleep(max(0.0, stopped_at + DEADLINE + 0.5 - time.monotonic()))
        restart_at = time.monotonic()
        pg.start()
        up_at = time.monotonic()
        _wait_for(load, lambda: _ok_after(load, up_at) >= 40, "recovery", timeout=30)
        records = load.stop()

        statuses = Counter(r.outcome.status for r in records)
        # AUDIT_UNAVAILABLE: a write in flight at the crash committed, but its audit record could
        # not be, so it is not acknowledged (its retry replays the outcome); only such calls.
        in_flight_audit = {
            r.outcome.status
            for r in records
            if r.sent_at < stopped_at and r.outcome.status == "UNAVAILABLE/AUDIT_UNAVAILABLE"
        }
        allowed = {"OK", CARD_LIMIT, "UNAVAILABLE/DATABASE_UNAVAILABLE", *in_flight_audit}
        unexpected = {s for s in statuses if s not in allowed}
        # A DEADLINE_EXCEEDED here is a call the server held past the caller's deadline.
        assert not unexpected, (
            statuses,
            [
                (round(r.sent_at - stopped_at, 2), round(r.outcome.latency, 2), r.outcome.status)
                for r in records
                if r.outcome.status in unexpected
            ],
            round(restart_at - stopped_at, 2),
            round(up_at - stopped_at, 2),
        )
        during = [r for r in records if stopped_at <= r.sent_at < restart_at]
        assert during, "no call was made while PostgreSQL was down"
        assert all(r.outcome.status == "UNAVAILABLE/DATABASE_UNAVAILABLE" for r in during), Counter(
            r.outcome.status for r in during
        )
        # Refused at once, not left to time out.
        assert max(r.outcome.latency for r in during) < DEADLINE / 2
        # Back by itself: once one call succeeds after the restart, no stale pooled
        # connection makes a later call fail.
        after = [r for r in records if r.sent_at >= up_at]
        first_ok = next(i for i, r in enumerate(after) if r.outcome.ok)
        assert after[first_ok].sent_at - up_at < 5
        assert all(r.outcome.final for r in after[first_ok + 1 :]), Counter(
            r.outcome.status for r in after[first_ok + 1 :]
        )

        # A restart nobody called through leaves every pooled connection dead; the first
        # calls after it must not fail on them.
        load = ActivationLoad(stub, threads=6, deadline=DEADLINE, first_number=600_000)
        load.start()
        _wait_for(load, lambda: sum(r.outcome.ok for r in load.snapshot()) >= 10, "warm pool")
        load.pause()
        pg.stop("fast")
        pg.start()
        resumed_at = time.monotonic()
        load.resume()
        _wait_for(load, lambda: _sent_between(load, resumed_at, None) >= 60, "calls after")
        quiet = load.stop()
        after_quiet = [r for r in quiet if r.sent_at >= resumed_at]
        assert all(r.outcome.final for r in after_quiet), Counter(
            r.outcome.status for r in after_quiet
        )
        records += quiet

        # The same below the RPC layer, where no background job touches the pool first: after
        # a restart with no call in between, every pooled session is dead, and none of the
        # next calls may fail on one.
        db = Database(DatabaseConfig(url, pool_size=4))
        try:
            barrier = threading.Barrier(4)

            def warm(tx: Tx) -> object:
                barrier.wait(timeout=10)
                return tx.one("SELECT 1")

            warmers = [threading.Thread(target=db.run_tx, args=(warm,)) for _ in range(4)]
            for t in warmers:
                t.start()
            for t in warmers:
                t.join(timeout=20)
            pool = db.engine.pool
            assert isinstance(pool, QueuePool) and pool.checkedin() == 4
            pg.stop("fast")
            pg.start()
            for _ in range(8):
                assert db.run_tx(lambda tx: tx.one("SELECT count(*) FROM cards")) is not None
                assert db.run_tx(lambda tx: tx.one("SELECT 1"), readonly=True) == (1,)
        finally:
            db.dispose()

        # No acknowledged write lost; every request id now has a definite, stable answer.
        requests = [r.request for r in records]
        retried = activate_all(stub, requests)
        for record, outcome in zip(records, retried, strict=True):
            if record.outcome.final:
                assert (outcome.status, outcome.card) == (
                    record.outcome.status,
                    record.outcome.card,
                )
            else:
                assert outcome.final, outcome.status
        _check_cards_exist(stub, requests, retried)
        ch.close()
        assert server.proc.poll() is None, server.log()
        assert consistency_problems(url) == []
    finally:
        if server is not None:
            server.stop()
        pg.close()


def _sent_between(load: ActivationLoad, start: float, end: float | None) -> int:
    return sum(
        1 for r in load.snapshot() if r.sent_at >= start and (end is None or r.sent_at < end)
    )


def _ok_after(load: ActivationLoad, start: float) -> int:
    return sum(1 for r in load.snapshot() if r.sent_at >= start and r.outcome.ok)


def _wait_for(load: ActivationLoad, condition: object, what: str, timeout: float = 20) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            statuses = Counter(r.outcome.status for r in load.snapshot())
            raise AssertionError(f"timed out waiting for {what}: {statuses}")
        time.sleep(0.05)


# --- (c) SQLite locked by another connection, SQLite on a full disk ----------------------------

BUSY_TIMEOUT_MS = 250


@pytest.fixture
def sqlite_data_dir(
    tmp_path: Path, pki_dir: Path, pepper_path: Path, sqlite_databases: SqliteDatabases
) -> Path:
    """A data directory with a fresh migrated SQLite database in it."""
    data_dir = make_data_dir(tmp_path, pki_dir, pepper_path)
    sqlite_databases.new(data_dir)
    return data_dir


def test_sqlite_locked_past_busy_timeout_answers_busy_and_writes_nothing(
    sqlite_data_dir: Path,
) -> None:
    data_dir = sqlite_data_dir
    url = sqlite_url(data_dir)
    server = start_server_process(
        data_dir, extra_args=["--db-busy-timeout-ms", str(BUSY_TIMEOUT_MS)]
    )
    try:
        ch, stub = _stub(server, data_dir)
        before = [activation(f"lock-before-{i}", 20_000, 700_000 + i) for i in range(2)]
        assert all(o.ok for o in activate_all(stub, before))
        blocked = [activation(f"lock-{i}", 20_000 + i % 3, 700_100 + i) for i in range(8)]
        with exclusive_sqlite_lock(data_dir / "realname.db"):
            outcomes = activate_all(stub, blocked, timeout=10)
            # Readers are not blocked by a writer under WAL.
            seen = stub.CheckEligibility(
                vpb.CheckEligibilityRequest(
                    document=document(20_000), card_type=cpb.CARD_TYPE_PERSONAL
                ),
                timeout=5,
            )
        assert {o.status for o in outcomes} == {"UNAVAILABLE/DATABASE_BUSY"}
        assert max(o.latency for o in outcomes) < 4 * BUSY_TIMEOUT_MS / 1000 + 1
        assert seen.active_cards == 2
        assert consistency_problems(url) == []
        assert not {r.request_id for r in blocked} & recorded_request_ids(url)
        # The lock is gone: the same calls now go through.
        assert all(o.ok for o in activate_all(stub, blocked))
        assert consistency_problems(url) == []
        ch.close()
    finally:
        assert server.stop() == 0, server.log()


def test_sqlite_disk_full_answers_database_full_and_writes_nothing(
    tmp_path: Path, pki_dir: Path, pepper_path: Path, sqlite_databases: SqliteDatabases
) -> None:
    if not can_mount_tmpfs():
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN)")
    data_dir = make_data_dir(tmp_path, pki_dir, pepper_path)
    with small_tmpfs(tmp_path / "small", 32 * 1024 * 1024) as small:
        url = sqlite_databases.new(small)
        server = start_server_process(data_dir, database_url=url)
        try:
            ch, stub = _stub(server, data_dir)
            before = [activation(f"full-before-{i}", 30_000 + i, 800_000 + i) for i in range(3)]
            first = activate_all(stub, before)
            assert all(o.ok for o in first)
            fill_filesystem(small / "filler")
            tried = [activation(f"full-{i}", 30_100 + i % 40, 800_100 + i) for i in range(200)]
            outcomes = activate_all(stub, tried, timeout=20)
            statuses = Counter(o.status for o in outcomes)
            assert set(statuses) <= {"OK", "UNAVAILABLE/DATABASE_FULL"}, statuses
            assert statuses["UNAVAILABLE/DATABASE_FULL"] > 0, statuses
            failed = [r for r, o in zip(tried, outcomes, strict=True) if not o.ok]
            assert consistency_problems(url) == []
            assert not {r.request_id for r in failed} & recorded_request_ids(url)
            # Acknowledged cards are readable on the full disk.
            _check_cards_exist(stub, before, first)
            (small / "filler").unlink()
            again = activate_all(stub, tried)
            assert all(o.ok for o in again), Counter(o.status for o in again)
            for earlier, now in zip(outcomes, again, strict=True):
                if earlier.ok:
                    assert now.card == earlier.card
            assert consistency_problems(url) == []
            ch.close()
        finally:
            assert server.stop() == 0, server.log()
