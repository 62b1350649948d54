"""How long a unit of work may keep retrying conflicts: the calling RPC's deadline, if known."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

# Retrying past this many attempts needs a caller deadline with time left; without a deadline
# (CLI commands, background jobs) this is the whole budget.
MAX_ATTEMPTS = 40
# Stop retrying this long before the caller's deadline, so the refusal still reaches it in time.
_MARGIN_S = 0.05

ANSWER_MARGIN_S = 0.25
"""Work waiting on the database gives up this long before the caller's deadline, so that the
UNAVAILABLE answer still reaches the caller in time."""

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "retry_deadline", default=None
)


def set_deadline(remaining_s: float | None) -> None:
    """Records the current call's remaining time (None: no deadline) for later retries."""
    _deadline.set(None if remaining_s is None else time.monotonic() + remaining_s)


@contextmanager
def call_deadline(remaining_s: float | None) -> Iterator[None]:
    """Runs a block as if inside a call with ``remaining_s`` left (jobs and tests)."""
    token = _deadline.set(None if remaining_s is None else time.monotonic() + remaining_s)
    try:
        yield
    finally:
        _deadline.reset(token)


def may_retry(attempts: int) -> bool:
    """Whether another attempt fits: up to MAX_ATTEMPTS, beyond while the deadline allows."""
    if attempts < MAX_ATTEMPTS:
        return True
    deadline = _deadline.get()
    return deadline is not None and time.monotonic() + _MARGIN_S < deadline


def remaining() -> float | None:
    """Seconds left before the current call's deadline (None: no deadline)."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()
