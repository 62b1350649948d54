"""A background job run every so often while a process serves (CRL refresh, delivery expiry)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("realname.jobs")


class PeriodicJob:
    """Runs ``work`` once at start, then every ``interval`` seconds, until stopped.

    The jobs are idempotent, so a round that fails with one of the ``tolerated`` errors (the
    database unavailable, say) is logged and simply retried next round.
    """

    def __init__(
        self,
        name: str,
        work: Callable[[], object],
        interval: float,
        tolerated: tuple[type[Exception], ...],
    ) -> None:
        self._name = name
        self._work = work
        self._interval = interval
        self._tolerated = tolerated
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Starts the job's thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stops the job and waits for its thread."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._work()
            except self._tolerated as exc:
                log.warning(
                    "background job failed; retrying next round",
                    extra={
                        "fields": {
                            "job": self._name,
                            "error": type(exc).__name__,
                            "reason": str(exc)[:200],
                        }
                    },
                )
            self._stop.wait(self._interval)
