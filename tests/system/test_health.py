"""Health follows the database: NOT_SERVING and /healthz 503 while it is gone, SERVING after.

Each test breaks a private database under a real `realname serve`: a SQLite directory moved away,
a PostgreSQL database dropped on the shared server and then recreated.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from services.runtime.health import DatabaseHealth, database_probe
from services.storage.database import sqlite_url
from tests.support.databases import migrate_and_seed
from tests.support.identities import resident_id
from tests.support.pki import channel
from tests.support.server import ServerProcess, dev_init, start_server_process

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", "realname.v1.VerificationService", "realname.v1.RegistryService")
# The probe runs every 2 s; allow for a loaded machine.
FLIP_TIMEOUT = 20.0

CHECK = vpb.CheckEligibilityRequest(
    document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(9)),
    card_type=cpb.CARD_TYPE_PERSONAL,
)


def _dev_init(data_dir: Path, database_url: str) -> None:
    dev_init(data_dir, env={**os.environ, "REALNAME_DATABASE_URL": database_url})


class Observer:
    """Reads a server's gRPC health, /healthz and /metrics."""

    def __init__(self, server: ServerProcess, pki_dir: Path) -> None:
        self.server = server
        self.channel = channel(server.address, pki_dir, "operator-cmcc")
        self.health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + 10
        found = None
        while found is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the "serving" line is flushed with the log's next batch
            found = re.search(r'"msg":"serving".*?"http":"([^"]+)"', server.log())
        assert found, server.log()
        self.http = f"http://{found.group(1)}"

    def statuses(self) -> set[int]:
        """The health status of the server ("") and of each service, as a set."""
        return {
            self.health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            for name in SERVICES
        }

    def wait_for(self, status: int) -> None:
        """Polls until every service reports ``status``, or fails with the server's log."""
        deadline = time.monotonic() + FLIP_TIMEOUT
        while time.monotonic() < deadline:
            if self.statuses() == {status}:
                return
            time.sleep(0.2)
        raise AssertionError(
            f"health never became {status}: {self.statuses()}\n{self.server.log()}"
        )

    def healthz(self) -> httpx.Response:
        """GET /healthz."""
        return httpx.get(f"{self.http}/healthz", timeout=10)

    def database_up(self) -> str:
        """The realname_database_up gauge's value as exposed."""
        body = httpx.get(f"{self.http}/metrics", timeout=10).text
        found = re.search(r"^realname_database_up (\S+)$", body, re.MULTILINE)
        assert found, body
        return found.group(1)

    def check_eligibility(self) -> vpb.CheckEligibilityResponse:
        """One CheckEligibility call."""
        return vgrpc.VerificationServiceStub(self.channel).CheckEligibility(CHECK, timeout=10)

    def close(self) -> None:
        """Closes the channel."""
        self.channel.close()


def _eventually_eligible(observer: Observer) -> None:
    # Pooled connections died with the database; the pool replaces them within a few calls.
    deadline = time.monotonic() + FLIP_TIMEOUT
    while True:
        try:
            assert observer.check_eligibility().eligible
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_sqlite_directory_moved_away_and_back(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    url = sqlite_url(db_dir)
    _dev_init(data_dir, url)
    server = start_server_process(data_dir, database_url=url)
    observer = Observer(server, data_dir / "dev-pki")
    try:
        assert observer.statuses() == {SERVING}
        assert observer.healthz().status_code == 200
        assert observer.database_up() == "1.0"

        away = tmp_path / "db-away"
        db_dir.rename(away)
        observer.wait_for(NOT_SERVING)
        reply = observer.healthz()
        assert (reply.status_code, reply.json()) == (503, {"status": "NOT_SERVING"})
        assert observer.database_up() == "0.0"

        away.rename(db_dir)
        observer.wait_for(SERVING)
        assert observer.healthz().status_code == 200
        assert observer.database_up() == "1.0"
        _eventually_eligible(observer)
    finally:
        observer.close()
        assert server.stop() == 0
    log = server.log()
    assert '"msg":"database unreachable"' in log and '"msg":"database reachable again"' in log


@pytest.fixture
def private_pg_database(pg_server_url: str) -> Iterator[tuple[str, str]]:
    """A fresh migrated database on the shared server, and the server's admin URL."""
    name = f"realname_health_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate_and_seed(url)
        yield url, pg_server_url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_postgresql_database_dropped_and_recreated(
    tmp_path: Path, private_pg_database: tuple[str, str]
) -> None:
    url, server_url = private_pg_database
    name = make_url(url).database
    data_dir = tmp_path / "data"
    _dev_init(data_dir, url)
    server = start_server_process(data_dir, database_url=url)
    observer = Observer(server, data_dir / "dev-pki")
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        assert observer.statuses() == {SERVING}
        assert observer.check_eligibility().eligible

        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        observer.wait_for(NOT_SERVING)
        assert observer.healthz().status_code == 503
        assert observer.database_up() == "0.0"
        with pytest.raises(grpc.RpcError) as info:
            observer.check_eligibility()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE

        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        migrate_and_seed(url)
        observer.wait_for(SERVING)
        assert observer.healthz().status_code == 200
        assert observer.database_up() == "1.0"
        _eventually_eligible(observer)
    finally:
        observer.close()
        admin.dispose()
        assert server.stop() == 0


def test_probe_refuses_to_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    health = DatabaseHealth(database_probe(f"sqlite+pysqlite:///{missing}"))
    assert health.check() is False
    assert not health.healthy
    assert not missing.exists()


def test_probe_fails_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, it is a test of the probe" * 100)
    assert DatabaseHealth(database_probe(f"sqlite+pysqlite:///{garbage}")).check() is False


def test_probe_of_an_unreachable_postgresql_server() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    url = "postgresql+psycopg://postgres@127.0.0.1:1/postgres"
    started = time.monotonic()
    assert DatabaseHealth(database_probe(url)).check() is False
    assert time.monotonic() - started < 5
