"""A client-side bound on a PostgreSQL session that stops answering (a stalled server or proxy).

Server-side timeouts (statement_timeout) and TCP keepalives do not help when the peer's kernel
still acknowledges every byte but nothing answers: a SIGSTOPped postmaster, a hung proxy. libpq
then waits forever. The guard shuts the session's socket down when a transaction overruns its
bound, so the blocked driver call fails at once with "server closed the connection" — a lost
connection, which the caller answers UNAVAILABLE and the pool discards.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

# How often the watchdog looks for overrun sessions: the bound's precision.
_TICK_S = 0.05


@dataclass
class Watch:
    """One armed bound on one session; ``fired`` tells whether the guard cut it."""

    fileno: int
    expires: float
    fired: bool = False


class StallGuard:
    """One watchdog thread per process that cuts sessions overrunning their bound."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, Watch] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, fileno: int, seconds: float) -> tuple[int, Watch]:
        """Bounds the session on socket ``fileno`` to ``seconds`` from now until ``disarm``."""
        watch = Watch(fileno, time.monotonic() + seconds)
        key = next(self._ids)
        with self._lock:
            self._armed[key] = watch
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="db-stall-guard", daemon=True
                )
                self._thread.start()
        return key, watch

    def disarm(self, key: int) -> None:
        """Ends a bound; after this returns the guard never touches that socket."""
        with self._lock:
            self._armed.pop(key, None)

    def _run(self) -> None:
        while True:
            time.sleep(_TICK_S)
            now = time.monotonic()
            with self._lock:
                # Under the lock: a disarmed session may already be back in the pool, serving
                # another transaction, and must not be cut.
                for key, watch in list(self._armed.items()):
                    if watch.expires <= now:
                        del self._armed[key]
                        watch.fired = True
                        _shut_down(watch.fileno)


def _shut_down(fileno: int) -> None:
    # A duplicate descriptor of the same socket: shutdown() acts on the socket itself, so the
    # driver's blocked read returns EOF, while closing the duplicate leaves its descriptor alone.
    try:
        sock = socket.socket(fileno=socket.dup(fileno))
    except OSError as exc:
        log.warning("stalled session already closed", extra={"fields": {"error": str(exc)}})
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError as exc:
        log.warning("could not cut stalled session", extra={"fields": {"error": str(exc)}})
    finally:
        sock.close()
    log.warning("cut a database session that stopped answering")


GUARD = StallGuard()
"""The process's guard (its thread starts on first use)."""
