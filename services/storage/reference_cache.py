"""A short-lived in-process cache of reference data (operators, number segments).

Both change by administrative action, rarely; reading them on every activation was two of the
seven statements of the hot path. The cap itself never relies on this cache: the claim reads
the operator's limit inside the transaction.
"""

from __future__ import annotations

import threading
import time

from services.storage import cards_repo as repo
from services.storage.rawsql import Tx

DEFAULT_TTL_SECONDS = 5.0


class ReferenceCache:
    """Operators and number segments, reloaded from the database after ``ttl`` seconds."""

    def __init__(self, ttl: float = DEFAULT_TTL_SECONDS) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._expires = 0.0
        self._operators: dict[str, repo.OperatorRow] = {}
        self._segments: dict[str, str] = {}

    def _fresh(self, tx: Tx) -> None:
        now = time.monotonic()
        if now < self._expires:
            return
        operators, segments = repo.all_operators(tx), repo.all_segments(tx)
        with self._lock:
            self._operators, self._segments = operators, segments
            self._expires = now + self._ttl

    def operator(self, tx: Tx, operator_id: str) -> repo.OperatorRow | None:
        """The operator, or None if it is not registered."""
        self._fresh(tx)
        return self._operators.get(operator_id)

    def segment_owner(self, tx: Tx, msisdn: str) -> str | None:
        """The operator owning the longest segment prefix of ``msisdn``."""
        self._fresh(tx)
        segments = self._segments
        for length in range(7, 2, -1):
            owner = segments.get(msisdn[:length])
            if owner is not None:
                return owner
        return None

    def invalidate(self) -> None:
        """Forgets everything, so the next read reloads."""
        with self._lock:
            self._expires = 0.0
