"""Token buckets and limit parsing: the rate limiter on its own, no server."""

from __future__ import annotations

import threading

import pytest

from services.domain.errors import ResourceExhausted
from services.domain.ratelimit import (
    RateLimit,
    RateLimiter,
    RateLimitSyntaxError,
    TokenBuckets,
)
from tests.integration.test_rate_limits import FakeClock


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5000/10000", RateLimit(5000, 10000)),
        (" 0.5/2 ", RateLimit(0.5, 2)),
        ("OFF", None),
        ("off", None),
    ],
)
def test_parse_limits(text: str, expected: RateLimit | None) -> None:
    assert RateLimit.parse(text) == expected


@pytest.mark.parametrize("text", ["", "5", "a/b", "0/10", "-1/10", "10/0.5", "inf/10", "nan/5"])
def test_parse_refuses_bad_limits(text: str) -> None:
    with pytest.raises(RateLimitSyntaxError):
        RateLimit.parse(text)


def test_split_over_workers() -> None:
    assert RateLimit(5000, 10000).split(1) == RateLimit(5000, 10000)
    assert RateLimit(5000, 10000).split(4) == RateLimit(1250, 2500)
    # A worker's bucket always holds at least one token, or it could never admit anything.
    assert RateLimit(3, 2).split(4) == RateLimit(0.75, 1)


def test_bucket_admits_the_burst_then_refuses_until_a_token_is_due() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(rate=2, burst=3), clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    clock.advance(0.2)
    # Refused calls take nothing: the wait shrinks by exactly the time that passed.
    assert buckets.take("a") == pytest.approx(0.3)
    clock.advance(0.3)
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)


def test_bucket_refills_only_up_to_the_burst() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(rate=10, burst=4), clock)
    for _ in range(4):
        assert buckets.take("a") == 0.0
    clock.advance(3600)
    assert [buckets.take("a") for _ in range(4)] == [0.0] * 4
    assert buckets.take("a") == pytest.approx(0.1)


def test_buckets_are_per_key() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(rate=1, burst=1), clock)
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0
    assert buckets.take(("cmcc", b"\x01" * 32)) == 0.0
    assert buckets.take(("cucc", b"\x01" * 32)) == 0.0


def test_idle_buckets_are_forgotten_least_recently_used_first() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(rate=1, burst=1), clock, max_keys=3)
    for key in ("a", "b", "c"):
        buckets.take(key)
    buckets.take("a")  # refused, but now the most recently used
    buckets.take("d")  # evicts "b"
    assert len(buckets) == 3
    assert buckets.take("a") > 0  # kept: still empty
    assert buckets.take("b") == 0.0  # forgotten: a fresh bucket


def test_bucket_is_exact_under_threads() -> None:
    clock = FakeClock()  # frozen: nothing refills while the threads race
    buckets = TokenBuckets(RateLimit(rate=1, burst=500), clock)
    admitted = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        mine = sum(1 for _ in range(200) if buckets.take("hot") == 0.0)
        with lock:
            admitted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 500


def test_limiter_raises_resource_exhausted_with_the_delay_and_scope() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(rate=4, burst=1), "document", clock)
    limiter.check("k")
    with pytest.raises(ResourceExhausted) as info:
        limiter.check("k")
    err = info.value
    assert err.reason == "RATE_LIMITED"
    assert err.metadata == {"scope": "document"}
    assert err.retry_after_seconds == pytest.approx(0.25)
    clock.advance(0.25)
    limiter.check("k")
