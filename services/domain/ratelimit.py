"""Token-bucket rate limits, per principal and per document, kept in each process's memory.

Limits are per process: with ``--workers N`` each worker enforces ``rate/N`` and ``burst/N``
(``RateLimit.split``), so the whole service admits about the configured figures as long as the
kernel spreads connections evenly. Buckets are keyed by opaque strings or bytes (a principal's
name, a document's pseudonymous key), never by a clear document number.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from services.domain.errors import ResourceExhausted

RATE_LIMITED = "RATE_LIMITED"

Monotonic = Callable[[], float]

# Idle buckets beyond this many are forgotten, least recently used first; a bucket idle that
# long has refilled, so forgetting it admits nothing it would have refused.
DEFAULT_MAX_KEYS = 100_000


class RateLimitSyntaxError(ValueError):
    """Raised for a limit that is not ``off`` or ``rate/burst`` with positive numbers."""


@dataclass(frozen=True)
class RateLimit:
    """A sustained rate (tokens per second) and a burst (the bucket's size)."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and math.isfinite(self.burst)):
            raise RateLimitSyntaxError("rate and burst must be finite")
        if self.rate <= 0 or self.burst < 1:
            raise RateLimitSyntaxError("rate must be positive and burst at least 1")

    @classmethod
    def parse(cls, text: str) -> RateLimit | None:
        """Parses ``rate/burst`` (e.g. ``5000/10000``), or ``off`` for no limit (None)."""
        spec = text.strip().lower()
        if spec == "off":
            return None
        rate, sep, burst = spec.partition("/")
        if not sep:
            raise RateLimitSyntaxError(f"expected 'rate/burst' or 'off', got {text!r}")
        try:
            return cls(float(rate), float(burst))
        except ValueError as exc:
            raise RateLimitSyntaxError(f"bad rate limit {text!r}: {exc}") from None

    def split(self, processes: int) -> RateLimit:
        """This limit's share in one of ``processes`` workers (burst never below one token)."""
        if processes <= 1:
            return self
        return RateLimit(self.rate / processes, max(1.0, self.burst / processes))

    def __str__(self) -> str:
        return f"{self.rate:g}/{self.burst:g}"


class TokenBuckets:
    """One token bucket per key, all with the same limit; thread-safe."""

    def __init__(
        self,
        limit: RateLimit,
        clock: Monotonic = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._max_keys = max_keys
        # key -> (tokens, time of last update); dicts keep insertion order, so popping and
        # re-inserting on every take keeps the most recently used last.
        self._buckets: dict[Hashable, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> float:
        """Takes one token for ``key``: 0.0 if admitted, else the seconds until one is due."""
        rate, burst = self.limit.rate, self.limit.burst
        with self._lock:
            now = self._clock()
            tokens, then = self._buckets.pop(key, (burst, now))
            tokens = min(burst, tokens + (now - then) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / rate
            if len(self._buckets) > self._max_keys:
                del self._buckets[next(iter(self._buckets))]
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


class RateLimiter:
    """Refuses calls over a limit with ResourceExhausted (reason RATE_LIMITED, a retry delay)."""

    def __init__(
        self,
        limit: RateLimit,
        scope: str,
        clock: Monotonic = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self.scope = scope
        self._buckets = TokenBuckets(limit, clock, max_keys)

    @property
    def limit(self) -> RateLimit:
        """The limit this limiter enforces (this process's share)."""
        return self._buckets.limit

    def check(self, key: Hashable) -> None:
        """Admits one call for ``key`` or raises ResourceExhausted saying when to retry."""
        wait = self._buckets.take(key)
        if wait > 0.0:
            raise ResourceExhausted(
                f"too many requests for this {self.scope}; retry in {math.ceil(wait * 1000)} ms",
                retry_after_seconds=wait,
                reason=RATE_LIMITED,
                metadata={"scope": self.scope},
            )
