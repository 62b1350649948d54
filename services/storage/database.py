"""Engines and transactions: SQLite (WAL, BEGIN IMMEDIATE) and PostgreSQL, with retries."""

from __future__ import annotations

import logging
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import ConnectionPoolEntry

from services.domain import audit, retry_budget
from services.domain.errors import Unavailable
from services.storage.rawsql import Tx
from services.storage.stall import GUARD

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATEs after which PostgreSQL (and CockroachDB/YugabyteDB) expect the transaction retried.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
# SQLSTATE classes meaning the server is gone or refusing connections: answer UNAVAILABLE.
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "57", "53")
# Of those, the ones after which the session is dead: connection failures, server shutdown,
# and the server ending a session idle in a transaction (25P03) or idle (57P05) past its timeout.
_LOST_CONNECTION_SQLSTATES = ("08", "57P", "25P03")
# A session the server ended for sitting idle in a transaction, and a write refused because
# the server is (now) read-only — a primary demoted by a failover: the server can't serve it now.
_READ_ONLY_SQLSTATE = "25006"
_UNAVAILABLE_SQLSTATES = frozenset({"25P03", _READ_ONLY_SQLSTATE})
# What the caller is told for each kind of "can't serve now" (all UNAVAILABLE: retry the call).
_UNAVAILABLE_REASONS = {
    "unavailable": ("the database is unavailable; retry later", "DATABASE_UNAVAILABLE"),
    "busy": ("the database is locked by another writer; retry", "DATABASE_BUSY"),
    "full": ("the database is out of disk space; retry later", "DATABASE_FULL"),
    "stalled": (
        "the database did not answer in time; the outcome is unknown, retry with the same "
        "request_id",
        "DATABASE_TIMEOUT",
    ),
}


class RetryTransaction(Exception):
    """Raised inside a unit of work to roll back and run it again (e.g. a lost race)."""

    def __init__(self, *, backoff: bool = True) -> None:
        super().__init__()
        # False when the retry changes strategy rather than waits out a conflict.
        self.backoff = backoff


@dataclass(frozen=True)
class DatabaseConfig:
    """How to reach the database and how to run transactions on it."""

    url: str
    isolation: str = "default"  # "default" or "serializable"
    # One pooled connection per RPC worker thread: overflow connections are closed on return,
    # and reopening PostgreSQL sessions under load cost more than the queries themselves.
    pool_size: int = 32
    busy_timeout_ms: int = 30_000
    # PostgreSQL only: how long a session may wait. 0 turns a setting off.
    connect_timeout_s: int = 5
    # Server side: a statement running, or a session idle inside a transaction, past these is
    # ended by the server, so a vanished client never holds locks for long.
    statement_timeout_ms: int = 30_000
    idle_in_transaction_timeout_ms: int = 10_000
    # TCP: keepalive probes on an idle session, and how long sent data may stay unacknowledged,
    # so a connection to a machine that died or dropped off the network is noticed.
    keepalives_idle_s: int = 10
    keepalives_interval_s: int = 3
    keepalives_count: int = 3
    tcp_user_timeout_ms: int = 10_000
    # Client side: a transaction attempt that gets no answer for this long (or past the calling
    # RPC's deadline, if sooner) has its socket cut: a stalled server that still ACKs TCP.
    stall_timeout_ms: int = 60_000


# libpq's multi-host authority: user@h1:p1,h2:p2/db (SQLAlchemy's parser takes one host:port).
_MULTI_HOST_URL = re.compile(
    r"^(?P<scheme>[^:/]+://)(?P<auth>[^@/]*@)?(?P<hosts>[^/?]*)(?P<rest>.*)$"
)


def normalize_url(url: str) -> str:
    """Rewrites libpq's multi-host form (``…://user@h1:p1,h2:p2/db?…``) as SQLAlchemy's
    (``…://user@/db?host=h1:p1&host=h2:p2&…``), which psycopg hands to libpq as one conninfo
    listing every host; any other URL is returned unchanged."""
    found = _MULTI_HOST_URL.match(url)
    if found is None or "," not in found["hosts"]:
        return url
    hosts = "&".join(f"host={h}" for h in found["hosts"].split(",") if h)
    path, _, query = found["rest"].partition("?")
    query = f"{hosts}&{query}" if query else hosts
    return f"{found['scheme']}{found['auth'] or ''}{path or '/'}?{query}"


def libpq_params(url: str) -> dict[str, Any]:
    """The libpq connection parameters psycopg is given for a PostgreSQL URL (every host)."""
    parsed = make_url(normalize_url(url))
    # The engine only lends its dialect here: nothing connects.
    _args, params = create_engine(parsed).dialect.create_connect_args(parsed)
    params.pop("context", None)
    return dict(params)


def sqlite_url(data_dir: Path) -> str:
    """Returns the URL of the embedded SQLite database under a data directory."""
    return f"sqlite+pysqlite:///{data_dir / 'realname.db'}"


class Database:
    """An engine plus the transaction discipline every unit of work runs under."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        url = make_url(normalize_url(config.url))
        self.is_sqlite = url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"pool_pre_ping": False}
        if self.is_sqlite:
            kwargs["connect_args"] = {
                "timeout": config.busy_timeout_ms / 1000,
                "check_same_thread": False,
            }
            kwargs["pool_size"] = config.pool_size
            kwargs["max_overflow"] = 4
        else:
            kwargs["pool_size"] = config.pool_size
            kwargs["max_overflow"] = 4
            kwargs["pool_recycle"] = 1800
            kwargs["pool_timeout"] = max(1, config.connect_timeout_s)
            kwargs["connect_args"] = postgresql_connect_args(config, url.query.get("options"))
            if config.isolation == "serializable":
                kwargs["isolation_level"] = "SERIALIZABLE"
        self.engine: Engine = create_engine(url, **kwargs)
        event.listen(self.engine, "connect", _mark_fresh)
        if not self.is_sqlite:
            event.listen(self.engine, "do_connect", _bound_connect_by_deadline)
            event.listen(self.engine, "handle_error", _demoted_is_a_disconnect)
        if self.is_sqlite:
            self._configure_sqlite(self.engine, config.busy_timeout_ms)
        # SQLite's busy handler backs off in sleeps of up to 100 ms, starving some of many
        # contending threads (p99 of seconds); within a process, writers queue on a lock instead.
        # The busy timeout still arbitrates between processes.
        self._sqlite_writer = threading.Lock()

    @staticmethod
    def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
        # pysqlite's own transaction handling issues a deferred BEGIN too late for our locking;
        # take it over so writers start with BEGIN IMMEDIATE and never deadlock on upgrade.
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _rec: ConnectionPoolEntry) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged commit survives power loss, not only a process crash.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys=ON")
            # SQLite's temporary files (a statement journal for every audit batch insert) in
            # memory: a file created, written and unlinked per batch (seen with strace).
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
            conn.exec_driver_sql(f"BEGIN {mode}")

    def dispose(self) -> None:
        """Closes every pooled connection."""
        self.engine.dispose()

    def write(self, work: Callable[[Connection], T]) -> T:
        """Runs ``work`` in one write transaction, retrying serialization failures and races."""
        return self._run(work, readonly=False)

    def read(self, work: Callable[[Connection], T]) -> T:
        """Runs ``work`` in one read-only transaction."""
        return self._run(work, readonly=True)

    def run_tx(self, work: Callable[[Tx], T], *, readonly: bool = False) -> T:
        """Runs ``work`` in one transaction on the driver connection (the hot path).

        The same discipline as ``write``: BEGIN IMMEDIATE on SQLite for writers, retries on
        serialization failures and unique-constraint races, UNAVAILABLE when the database is.
        """
        delay = 0.001
        reconnected = False
        attempts = 0
        # Serializable engines abort one side of every conflict, and a hot document under heavy
        # concurrency can lose many rounds in a row: keep going while the caller's deadline allows.
        while retry_budget.may_retry(attempts):
            attempts += 1
            try:
                return self._attempt_tx(work, readonly=readonly)
            except RetryTransaction as retry:
                if not retry.backoff:
                    continue
            except _StaleConnection as stale:
                # A pooled session the server dropped (a restart) before anything was sent to
                # commit: nothing happened, so run once more on a fresh connection.
                if not reconnected:
                    reconnected = True
                    continue
                raise unavailable_error("unavailable") from stale.__cause__
            except Exception as exc:
                kind = classify_driver_error(exc)
                if kind in _UNAVAILABLE_REASONS:
                    raise unavailable_error(kind) from exc
                if kind != "retry":
                    raise
            time.sleep(random.uniform(0, delay))  # noqa: S311
            delay = min(delay * 2, 0.05)
        raise Unavailable(
            "the request kept conflicting with concurrent writes; retry",
            reason="TRANSACTION_CONFLICT",
        )

    def _attempt_tx(self, work: Callable[[Tx], T], *, readonly: bool) -> T:
        # Reads run in autocommit: one statement is one round trip, not BEGIN/SELECT/COMMIT.
        writer_lock = self._sqlite_writer if self.is_sqlite and not readonly else None
        if writer_lock is not None and not writer_lock.acquire(
            timeout=self.config.busy_timeout_ms / 1000
        ):
            raise Unavailable("the database is busy; retry", reason="DATABASE_BUSY")
        try:
            proxy = self.engine.raw_connection()
        except BaseException:
            if writer_lock is not None:
                writer_lock.release()
            raise
        dbapi: Any = proxy.driver_connection
        # A connection that waited in the pool may have died with a server restart meanwhile.
        pooled = not proxy.info.pop("fresh", False)
        committing = False
        armed = self._arm(dbapi)
        try:
            if not readonly and self.is_sqlite:
                dbapi.execute("BEGIN IMMEDIATE")
            elif readonly and not self.is_sqlite:
                dbapi.autocommit = True
            try:
                result = work(Tx(dbapi, sqlite=self.is_sqlite))
                if not readonly:
                    committing = True
                    if self.is_sqlite:
                        dbapi.execute("COMMIT")
                    else:
                        dbapi.commit()
                    audit.note_write()
                return result
            except BaseException as exc:
                if not readonly:
                    _rollback_quietly(dbapi, self.is_sqlite)
                if armed is not None and armed[1].fired and isinstance(exc, Exception):
                    # The guard cut a session that stopped answering: every pooled one is
                    # likely stuck the same way, and there is no time left to try another.
                    self.engine.pool._invalidate(proxy, exc)
                    raise unavailable_error("stalled") from exc
                if isinstance(exc, Exception) and lost_connection(exc):
                    # Every session opened before this one died with the server too: discard
                    # the whole pool (SQLAlchemy's own disconnect handling does the same).
                    self.engine.pool._invalidate(proxy, exc)
                    if pooled and not committing:
                        raise _StaleConnection from exc
                elif isinstance(exc, Exception) and read_only_server(exc):
                    # A failover demoted this server: every pooled session is on the old
                    # primary. The refused statement wrote nothing, so run once more on a new
                    # session, which libpq's target_session_attrs puts on the new primary.
                    self.engine.pool._invalidate(proxy, exc)
                    raise _StaleConnection from exc
                elif isinstance(exc, Exception) and classify_driver_error(exc) == "unavailable":
                    proxy.invalidate()
                raise
            finally:
                if armed is not None:
                    GUARD.disarm(armed[0])
                    if armed[1].fired and proxy.dbapi_connection is not None:
                        # Cut just as the work finished: never hand the dead session on.
                        proxy.invalidate()
                if readonly and not self.is_sqlite and not dbapi.closed:
                    dbapi.autocommit = False
        finally:
            proxy.close()
            if writer_lock is not None:
                writer_lock.release()

    def _arm(self, dbapi: Any) -> tuple[int, Any] | None:
        """Bounds a PostgreSQL transaction attempt by the stall timeout and the call's deadline."""
        if self.is_sqlite or self.config.stall_timeout_ms <= 0:
            return None
        bound = self.config.stall_timeout_ms / 1000
        left = retry_budget.remaining()
        if left is not None:
            bound = min(bound, max(left - retry_budget.ANSWER_MARGIN_S, 0.05))
        return GUARD.arm(dbapi.fileno(), bound)

    def _run(self, work: Callable[[Connection], T], *, readonly: bool) -> T:
        delay = 0.001
        attempts = 0
        while retry_budget.may_retry(attempts):
            attempts += 1
            armed = None
            try:
                with self.engine.connect() as raw:
                    conn = (
                        raw.execution_options(sqlite_begin="DEFERRED")
                        if self.is_sqlite and readonly
                        else raw
                    )
                    armed = self._arm(raw.connection.driver_connection)
                    try:
                        with conn.begin():
                            result = work(conn)
                    finally:
                        if armed is not None:
                            GUARD.disarm(armed[0])
                            if armed[1].fired:
                                raw.invalidate()  # cut just as the work finished
                    if not readonly:
                        audit.note_write()
                    return result
            except RetryTransaction:
                pass
            except IntegrityError:
                # A unique constraint raced with a concurrent commit: the next attempt's reads
                # see that commit and answer from it.
                pass
            except DBAPIError as exc:
                if armed is not None and armed[1].fired:
                    raise unavailable_error("stalled") from exc
                if _sqlstate(exc) in _RETRYABLE_SQLSTATES:
                    pass
                elif is_unavailable(exc):
                    kind = classify_driver_error(exc.orig) if exc.orig is not None else ""
                    raise unavailable_error(
                        kind if kind in _UNAVAILABLE_REASONS else "unavailable"
                    ) from exc
                else:
                    raise
            # Full jitter keeps conflicting retries from colliding again in lockstep.
            time.sleep(random.uniform(0, delay))  # noqa: S311
            delay = min(delay * 2, 0.05)
        raise Unavailable(
            "the request kept conflicting with concurrent writes; retry",
            reason="TRANSACTION_CONFLICT",
        )


def postgresql_connect_args(config: DatabaseConfig, url_options: Any = None) -> dict[str, Any]:
    """libpq parameters for the server's sessions: timeouts and TCP keepalives (see config)."""
    settings = [
        f"-c statement_timeout={int(config.statement_timeout_ms)}",
        f"-c idle_in_transaction_session_timeout={int(config.idle_in_transaction_timeout_ms)}",
    ]
    # Options given in the URL come first and are kept; ours are appended (the last -c wins,
    # so a URL that wants other timeouts sets the REALNAME_DB_* variables instead).
    given = url_options if isinstance(url_options, str) else " ".join(url_options or ())
    args: dict[str, Any] = {
        "connect_timeout": int(config.connect_timeout_s),
        "options": " ".join([given, *settings]).strip(),
    }
    if config.keepalives_idle_s > 0:
        args.update(
            keepalives=1,
            keepalives_idle=int(config.keepalives_idle_s),
            keepalives_interval=int(config.keepalives_interval_s),
            keepalives_count=int(config.keepalives_count),
        )
    if config.tcp_user_timeout_ms > 0:
        args["tcp_user_timeout"] = int(config.tcp_user_timeout_ms)
    return args


def _bound_connect_by_deadline(
    _dialect: Any, _rec: ConnectionPoolEntry, _cargs: Any, cparams: dict[str, Any]
) -> None:
    # A new session inside an RPC may not outlast the call: connect_timeout shrinks to the
    # whole seconds left before the margin (psycopg, like libpq, takes 2 s at the least; gRPC
    # rounds a deadline up when it sends it, so the server's time left can exceed the caller's).
    left = retry_budget.remaining()
    if left is None:
        return
    current = int(cparams.get("connect_timeout") or 0)
    bound = max(2, int(left - retry_budget.ANSWER_MARGIN_S))
    if current <= 0 or bound < current:
        cparams["connect_timeout"] = bound


def _rollback_quietly(dbapi: Any, sqlite: bool) -> None:
    # The original error is what matters; a failed rollback on a broken connection must not
    # replace it (the pool discards such a connection on return).
    try:
        if sqlite:
            if dbapi.in_transaction:
                dbapi.execute("ROLLBACK")
        else:
            dbapi.rollback()
    except (sqlite3.Error, psycopg.Error) as exc:
        log.warning("rollback failed", extra={"fields": {"error": type(exc).__name__}})


def _mark_fresh(_dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
    # Cleared on first use; the entry's info dict is dropped with the connection it describes.
    record.info["fresh"] = True


class _StaleConnection(Exception):
    """A pooled connection turned out dead before its transaction reached COMMIT."""


def unavailable_error(kind: str) -> Unavailable:
    """The UNAVAILABLE answer for a kind from ``classify_driver_error``."""
    message, reason = _UNAVAILABLE_REASONS[kind]
    return Unavailable(message, reason=reason)


def classify_driver_error(exc: BaseException) -> str:
    """Sorts a raw driver error: "retry" (race, serialization), "unavailable", "busy" (locked
    past the busy timeout), "full" (out of disk), or "other" (a bug: INTERNAL)."""
    if isinstance(exc, sqlite3.IntegrityError | psycopg.errors.IntegrityError):
        return "retry"
    if isinstance(exc, PoolTimeout):
        # Every pooled session is busy (or stuck on a stalled server) past the pool's timeout.
        return "unavailable"
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state in _RETRYABLE_SQLSTATES:
            return "retry"
        if state == "53100":  # disk_full
            return "full"
        if state is None and isinstance(exc, psycopg.OperationalError):
            return "unavailable"
        if state is not None and (
            state.startswith(_UNAVAILABLE_SQLSTATE_CLASSES) or state in _UNAVAILABLE_SQLSTATES
        ):
            return "unavailable"
        return "other"
    if isinstance(exc, sqlite3.OperationalError):
        name = getattr(exc, "sqlite_errorname", "")
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return "busy"
        if name.startswith("SQLITE_FULL"):
            return "full"
        # I/O errors, a database that can't be opened, interrupts: the database can't serve.
        return "unavailable"
    return "other"


def read_only_server(exc: BaseException) -> bool:
    """Tells whether a PostgreSQL error is a write refused by a read-only server (a standby, or
    a primary demoted by a failover)."""
    return isinstance(exc, psycopg.Error) and exc.sqlstate == _READ_ONLY_SQLSTATE


def _demoted_is_a_disconnect(context: ExceptionContext) -> None:
    # The SQLAlchemy Connection paths: a session on a demoted primary is as useless as a lost
    # one, so let SQLAlchemy's disconnect handling drop it and the rest of the pool.
    if read_only_server(context.original_exception):
        context.is_disconnect = True


def lost_connection(exc: BaseException) -> bool:
    """Tells whether a PostgreSQL error means the session is gone (server down or restarted)."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith(_LOST_CONNECTION_SQLSTATES)


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def is_unavailable(exc: DBAPIError) -> bool:
    """Tells whether a driver error means "the database can't serve now" rather than a bug."""
    state = _sqlstate(exc)
    if state is not None:
        return state.startswith(_UNAVAILABLE_SQLSTATE_CLASSES) or state in _UNAVAILABLE_SQLSTATES
    if isinstance(exc, OperationalError):
        # psycopg connection failures carry no SQLSTATE; SQLite reports busy/locked/full here.
        return True
    return bool(exc.connection_invalidated)
