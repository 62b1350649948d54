"""PostgreSQL sessions carry timeouts, and what they end answers UNAVAILABLE, never INTERNAL.

Real sessions on the shared test server: the settings are read back from the server, and each
timeout is made to fire.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from services.domain import retry_budget
from services.domain.errors import Unavailable
from services.runtime.config import ConfigError, Settings, database_timeouts
from services.storage.database import (
    Database,
    DatabaseConfig,
    libpq_params,
    normalize_url,
    postgresql_connect_args,
)
from services.storage.rawsql import Tx
from tests.support.databases import PostgresDatabases
from tests.support.stall_proxy import StallProxy


@pytest.fixture
def pg_url(pg_databases: PostgresDatabases) -> Iterator[str]:
    """A fresh migrated PostgreSQL database."""
    url = pg_databases.new()
    yield url
    pg_databases.drop(url)


def _show(tx: Tx, name: str) -> str:
    row = tx.one(f"SHOW {name}")
    assert row is not None
    return str(row[0])


def test_sessions_carry_statement_and_idle_in_transaction_timeouts(pg_url: str) -> None:
    db = Database(DatabaseConfig(pg_url))
    try:
        for readonly in (False, True):
            assert db.run_tx(lambda tx: _show(tx, "statement_timeout"), readonly=readonly) == "30s"
            assert (
                db.run_tx(
                    lambda tx: _show(tx, "idle_in_transaction_session_timeout"),
                    readonly=readonly,
                )
                == "10s"
            )
        with db.engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "30s"
            # The TCP keepalives and user timeout libpq was asked for on this session.
            dbapi = conn.connection.driver_connection
            assert dbapi is not None
            params = {
                p.keyword.decode(): (p.val or b"").decode()
                for p in dbapi.pgconn.info
                if p.keyword is not None
            }
        assert (params["keepalives"], params["keepalives_idle"]) == ("1", "10")
        assert (params["keepalives_interval"], params["keepalives_count"]) == ("3", "3")
        assert params["tcp_user_timeout"] == "10000"
    finally:
        db.dispose()


def test_options_in_the_url_are_kept() -> None:
    args = postgresql_connect_args(DatabaseConfig("postgresql+psycopg://x/y"), "-c work_mem=8MB")
    assert args["options"].startswith("-c work_mem=8MB -c statement_timeout=")


def test_a_statement_past_its_timeout_answers_unavailable(pg_url: str) -> None:
    db = Database(DatabaseConfig(pg_url, statement_timeout_ms=200))
    try:
        with pytest.raises(Unavailable) as raised:
            db.run_tx(lambda tx: tx.one("SELECT pg_sleep(2)"))
        assert raised.value.reason == "DATABASE_UNAVAILABLE"
        assert db.run_tx(lambda tx: tx.one("SELECT 1")) == (1,)
    finally:
        db.dispose()


def test_a_session_ended_idle_in_transaction_answers_unavailable(pg_url: str) -> None:
    db = Database(DatabaseConfig(pg_url, idle_in_transaction_timeout_ms=200))

    def slow(tx: Tx) -> object:
        tx.one("SELECT count(*) FROM cards")
        time.sleep(1.0)  # the client stalls mid-transaction: the server ends the session
        return tx.one("SELECT count(*) FROM cards")

    try:
        with pytest.raises(Unavailable) as raised:
            db.run_tx(slow)
        assert raised.value.reason == "DATABASE_UNAVAILABLE"
        # The pool dropped the ended session: the next transaction runs.
        assert db.run_tx(lambda tx: tx.one("SELECT 1")) == (1,)
    finally:
        db.dispose()


def test_a_silent_server_is_cut_before_the_deadline_and_the_pool_recovers(pg_url: str) -> None:
    proxy = StallProxy(pg_url)
    db = Database(DatabaseConfig(proxy.url(pg_url), pool_size=2))
    try:
        assert db.run_tx(lambda tx: tx.one("SELECT 1")) == (1,)
        assert db.write(lambda conn: conn.execute(text("SELECT 1")).scalar_one()) == 1
        proxy.pause()
        for run in (
            lambda: db.run_tx(lambda tx: tx.one("SELECT 1")),
            lambda: db.write(lambda conn: conn.execute(text("SELECT 1")).scalar_one()),
        ):
            started = time.monotonic()
            with retry_budget.call_deadline(3.0), pytest.raises(Unavailable) as raised:
                run()
            assert time.monotonic() - started < 3.0
            assert raised.value.reason in ("DATABASE_TIMEOUT", "DATABASE_UNAVAILABLE")
        proxy.resume()
        assert db.run_tx(lambda tx: tx.one("SELECT 1")) == (1,)
    finally:
        db.dispose()
        proxy.close()


def test_timeouts_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALNAME_DB_STATEMENT_TIMEOUT_MS", "1500")
    monkeypatch.setenv("REALNAME_DB_KEEPALIVES_IDLE_S", "0")
    config = Settings(data_dir=Path("/nonexistent")).database()
    assert (config.statement_timeout_ms, config.keepalives_idle_s) == (1500, 0)
    assert "keepalives" not in postgresql_connect_args(config)
    monkeypatch.setenv("REALNAME_DB_STALL_TIMEOUT_MS", "soon")
    with pytest.raises(ConfigError, match="REALNAME_DB_STALL_TIMEOUT_MS"):
        database_timeouts()


def test_multi_host_urls_are_rewritten_for_sqlalchemy() -> None:
    url = "postgresql+psycopg://app@db1:5432,db2:5433/realname?target_session_attrs=read-write"
    assert normalize_url(url) == (
        "postgresql+psycopg://app@/realname?host=db1:5432&host=db2:5433"
        "&target_session_attrs=read-write"
    )
    params = libpq_params(url)
    assert (params["host"], params["port"]) == ("db1,db2", "5432,5433")
    assert params["target_session_attrs"] == "read-write"
    single = "postgresql+psycopg://app@db1:5432/realname"
    assert normalize_url(single) == single


def test_a_read_only_server_answers_unavailable_and_empties_the_pool(
    pg_url: str, pg_databases: PostgresDatabases
) -> None:
    # What pooled sessions on a primary demoted by a failover see: every write refused.
    name = make_url(pg_url).database
    with pg_databases.admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    db = Database(DatabaseConfig(pg_url, pool_size=2))
    insert = "UPDATE operators SET card_limit = card_limit WHERE id = 'cmcc'"

    def session() -> object:
        return db.read(lambda conn: conn.execute(text("SELECT pg_backend_pid()")).scalar_one())

    try:
        before = session()
        with pytest.raises(Unavailable) as raised:
            db.run_tx(lambda tx: tx.execute(insert))
        assert raised.value.reason == "DATABASE_UNAVAILABLE"
        # The pool kept no session from before: the next one is new.
        after_raw = session()
        assert after_raw != before
        with pytest.raises(Unavailable) as raised:
            db.write(lambda conn: conn.execute(text(insert)))
        assert raised.value.reason == "DATABASE_UNAVAILABLE"
        assert session() != after_raw
    finally:
        db.dispose()
