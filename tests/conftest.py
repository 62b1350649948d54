"""Fixtures shared by every test: real databases (SQLite and PostgreSQL), dev PKI, servers."""

from __future__ import annotations

import os

from services.runtime.key_files import create_pepper_file, load_pepper

# Tests fork helpers (pg_ctl as another user, embedded PostgreSQL) while gRPC channels run in
# this process; gRPC's fork handlers are for forked gRPC users, and one aborted a whole run.
# Read when gRPC is first imported, so before anything below imports it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from services.domain.pseudonym import Pseudonymizer
from services.runtime.devpki import ensure_dev_pki
from services.storage.database import Database, DatabaseConfig
from tests.support.databases import (
    PostgresDatabases,
    SqliteDatabases,
    postgres_server_url,
)
from tests.support.server import GrpcHarness, start_harness

BACKENDS = ("sqlite", "postgresql")

# Speed is measured by `make bench`, never asserted: on a shared 2-core machine an example that
# takes longer than Hypothesis's default 200 ms deadline is load, not a defect (it made runs flaky).
settings.register_profile("realname", deadline=None)
settings.load_profile("realname")


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of the PostgreSQL server the session tests against."""
    yield from postgres_server_url()


@pytest.fixture(scope="session")
def pg_databases(pg_server_url: str) -> Iterator[PostgresDatabases]:
    """Factory of fresh, migrated PostgreSQL databases."""
    factory = PostgresDatabases(pg_server_url)
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def sqlite_databases(tmp_path_factory: pytest.TempPathFactory) -> SqliteDatabases:
    """Factory of fresh, migrated SQLite databases."""
    return SqliteDatabases(tmp_path_factory.mktemp("sqlite"))


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_databases: SqliteDatabases
) -> Iterator[str]:
    """A fresh migrated database with demo reference data, on each backend in turn."""
    if request.param == "sqlite":
        yield sqlite_databases.new(tmp_path / "db")
        return
    pg: PostgresDatabases = request.getfixturevalue("pg_databases")
    url = pg.new()
    yield url
    pg.drop(url)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A Database on the fresh test database."""
    database = Database(DatabaseConfig(database_url))
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dev transport PKI made once per session (dev-init's layout)."""
    path = tmp_path_factory.mktemp("pki") / "dev-pki"
    ensure_dev_pki(path)
    return path


@pytest.fixture(scope="session")
def pepper_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pepper file for the session."""
    path = tmp_path_factory.mktemp("pepper") / "pepper"
    create_pepper_file(path)
    return path


@pytest.fixture(scope="session")
def pseudonymizer(pepper_path: Path) -> Pseudonymizer:
    """The session's pseudonymizer."""
    return load_pepper(pepper_path)


@pytest.fixture
def grpc_server(db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer) -> Iterator[GrpcHarness]:
    """An in-process mTLS gRPC server on 127.0.0.1 over the fresh test database."""
    harness = start_harness(db, pki_dir, pseudonymizer)
    yield harness
    harness.close()
