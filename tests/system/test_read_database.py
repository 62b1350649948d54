"""REALNAME_READ_DATABASE_URL: the public HTTP reads come from it, the cap and writes never do.

The "standby" here is a second database on the shared test server with different content (its
own regulator root, its own log checkpoint), so whichever database answered shows in the reply.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import create_engine, text

from registry.authz import authorities
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from services.storage.database import Database, DatabaseConfig
from tests.support.databases import PostgresDatabases
from tests.support.faults import activation
from tests.support.pki import channel
from tests.support.server import ServerProcess, dev_init, start_server_process

STANDBY_NOTE = b"realname.example/log\n7\nc3RhbmRieQ==\n\n- standby checkpoint\n"


@pytest.fixture
def two_databases(pg_databases: PostgresDatabases) -> Iterator[tuple[str, str]]:
    """(primary URL, standby URL): two fresh databases with different content."""
    primary, standby = pg_databases.new(), pg_databases.new()
    try:
        yield primary, standby
    finally:
        pg_databases.drop(primary)
        pg_databases.drop(standby)


def _http_url(server: ServerProcess) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = re.search(r'"msg":"serving".*?"http":"([^"]+)"', server.log())
        if found:
            return f"http://{found.group(1)}"
        time.sleep(0.2)  # the "serving" line is flushed with the log's next batch
    raise AssertionError(server.log())


def _root_certificates(url: str) -> list[bytes]:
    db = Database(DatabaseConfig(url))
    try:
        return db.read(lambda conn: authorities.ca_certificates(conn, "root"))
    finally:
        db.dispose()


def _count(url: str, sql: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


def test_public_reads_come_from_the_read_database_and_writes_do_not(
    tmp_path: Path, two_databases: tuple[str, str]
) -> None:
    primary, standby = two_databases
    data_dir = tmp_path / "data"
    # Each database gets a regulator root of its own; the served one tells which was read.
    dev_init(data_dir, env={**os.environ, "REALNAME_DATABASE_URL": primary})
    dev_init(tmp_path / "standby-data", env={**os.environ, "REALNAME_DATABASE_URL": standby})
    engine = create_engine(standby)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO log_checkpoints (size, root, note, created_at) "
                    "VALUES (7, :root, :note, :at)"
                ),
                {"root": b"\x01" * 32, "note": STANDBY_NOTE, "at": dt.datetime.now(dt.UTC)},
            )
    finally:
        engine.dispose()
    primary_root, standby_root = _root_certificates(primary), _root_certificates(standby)
    assert primary_root and standby_root and primary_root != standby_root

    server = start_server_process(
        data_dir, database_url=primary, env={"REALNAME_READ_DATABASE_URL": standby}
    )
    ch = channel(server.address, data_dir / "dev-pki", "operator-cmcc")
    try:
        http = _http_url(server)
        checkpoint = httpx.get(f"{http}/log/checkpoint", timeout=10)
        assert (checkpoint.status_code, checkpoint.content) == (200, STANDBY_NOTE)
        served = httpx.get(f"{http}/ca/root.pem", timeout=10)
        assert served.status_code == 200, served.text
        ders = [
            c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(served.content)
        ]
        assert ders == standby_root
        crl = httpx.get(f"{http}/crl/root.crl", timeout=10)
        assert crl.status_code == 200, crl.text
        assert (
            x509.load_der_x509_crl(crl.content).issuer
            == x509.load_der_x509_certificate(standby_root[0]).subject
        )
        page = httpx.get(f"{http}/", params={"credit_code": "91110000MA01ABCD1X"}, timeout=10)
        assert page.status_code == 200

        # The cap and every write stay on the primary.
        stub = vgrpc.VerificationServiceStub(ch)
        reply = stub.ActivateCard(activation("read-db-1", 1, 1), timeout=10)
        assert reply.card.msisdn
        card_count = "SELECT count(*) FROM cards"
        assert (_count(primary, card_count), _count(standby, card_count)) == (1, 0)
        # The primary's own log was never touched by the standby's checkpoint.
        assert _count(primary, "SELECT count(*) FROM log_checkpoints WHERE size = 7") == 0
    finally:
        ch.close()
        assert server.stop() == 0, server.log()


def test_a_read_database_without_postgresql_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    dev_init(data_dir)
    server = start_server_process(
        data_dir,
        env={"REALNAME_READ_DATABASE_URL": "postgresql+psycopg://x@127.0.0.1/none"},
        wait=False,
    )
    try:
        assert server.proc.wait(timeout=60) == 2
    finally:
        if server.proc.poll() is None:  # it served instead of refusing
            server.proc.kill()
            server.proc.wait(timeout=10)
    assert "REALNAME_READ_DATABASE_URL needs a PostgreSQL" in server.log()
