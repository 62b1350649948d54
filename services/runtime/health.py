"""Health that follows the database: a probe every 2 s flips gRPC health and /healthz.

While the database cannot be reached, every RPC would fail with UNAVAILABLE; saying so on the
health service lets a load balancer send callers to a process that can serve them. The probe
opens a fresh connection each round, apart from the RPC pool, so a pool busy with load never
makes it time out, and a database that refuses new connections is noticed even while pooled
ones still work.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from urllib.parse import quote

import psycopg
from grpc_health.v1 import health, health_pb2
from sqlalchemy.engine import make_url

from services.runtime.metrics import DATABASE_UP
from services.runtime.periodic import PeriodicJob
from services.storage.database import libpq_params, normalize_url
from services.storage.stall import GUARD

log = logging.getLogger("realname.health")

PROBE_INTERVAL = 2.0
"""Seconds between database probes."""

PROBE_TIMEOUT = 2.0
"""Seconds a probe may take (connect plus query) before the database counts as unreachable."""

Probe = Callable[[], None]
"""Returns if the database answered, raises ``PROBE_ERRORS`` if it did not."""

PROBE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error, OSError)


def database_probe(url: str, timeout: float = PROBE_TIMEOUT) -> Probe:
    """A probe of the database at a SQLAlchemy ``url``: connect afresh, run one query."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:":
            return lambda: None
        # mode=rw: a missing file is an error, not a new empty database.
        uri = f"file:{quote(path)}?mode=rw"

        def probe_sqlite() -> None:
            conn = sqlite3.connect(uri, uri=True, timeout=timeout)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                conn.close()

        return probe_sqlite
    # Every host of a multi-host URL, with its target_session_attrs: the probe reaches the
    # server the pool would (after a failover, the new primary).
    params = libpq_params(url)
    params["options"] = f"-c statement_timeout={int(timeout * 1000)}"
    params["connect_timeout"] = max(1, round(timeout))

    def probe_postgresql() -> None:
        # libpq bounds the connect (2 s at least); the guard bounds the query even when the
        # server still acknowledges TCP but never answers (stalled, or behind a hung proxy).
        with psycopg.connect(autocommit=True, **params) as conn:
            key, watch = GUARD.arm(conn.fileno(), timeout)
            try:
                conn.execute("SELECT 1").fetchone()
            finally:
                GUARD.disarm(key)
            if watch.fired:
                raise TimeoutError("the database did not answer the probe in time")

    return probe_postgresql


class DatabaseHealth:
    """Reports NOT_SERVING for the server and every service while the database is unreachable."""

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._healthy = True
        self._lock = threading.Lock()
        self._servicer: health.HealthServicer | None = None
        self._services: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        """Whether the last probe reached the database (True before the first one)."""
        return self._healthy

    def report_to(self, servicer: health.HealthServicer, services: Sequence[str]) -> None:
        """Sets ``services`` (and the server-wide "") on ``servicer`` from now on."""
        with self._lock:
            self._servicer = servicer
            self._services = ("", *services)
            self._publish()

    def check(self) -> bool:
        """Probes the database once and publishes a change of state; returns the new state."""
        try:
            self._probe()
        except PROBE_ERRORS as exc:
            self._set(False, f"{type(exc).__name__}: {str(exc)[:200]}")
            return False
        self._set(True, "")
        return True

    def job(self, interval: float = PROBE_INTERVAL) -> PeriodicJob:
        """The background probe (start it once the gRPC server runs; stop it at shutdown)."""
        return PeriodicJob("database-health", self.check, interval, ())

    def _set(self, healthy: bool, error: str) -> None:
        with self._lock:
            if healthy == self._healthy:
                return
            self._healthy = healthy
            DATABASE_UP.set(1 if healthy else 0)
            fields = {"event": "database_health", "reachable": healthy, "error": error}
            if healthy:
                log.info("database reachable again", extra={"fields": fields})
            else:
                log.error("database unreachable", extra={"fields": fields})
            self._publish()

    def _publish(self) -> None:
        if self._servicer is None:
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._healthy
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        # After enter_graceful_shutdown the servicer ignores these, so shutdown wins.
        for name in self._services:
            self._servicer.set(name, status)
