"""Conflict retries: a fixed number without a deadline, as long as the caller's deadline allows."""

from __future__ import annotations

import pytest

from services.domain import retry_budget
from services.domain.errors import Unavailable
from services.storage.database import Database, RetryTransaction
from services.storage.rawsql import Tx


class _Conflicts:
    """A unit of work that loses ``losses`` races (or every race) before it commits."""

    def __init__(self, losses: int | None) -> None:
        self.losses = losses
        self.attempts = 0

    def __call__(self, tx: Tx) -> str:
        self.attempts += 1
        if self.losses is None or self.attempts <= self.losses:
            raise RetryTransaction(backoff=False)
        return "committed"


def test_without_a_deadline_retries_stop_at_the_fixed_budget(db: Database) -> None:
    work = _Conflicts(None)
    with retry_budget.call_deadline(None), pytest.raises(Unavailable) as raised:
        db.run_tx(work)
    assert raised.value.reason == "TRANSACTION_CONFLICT"
    assert work.attempts == retry_budget.MAX_ATTEMPTS


def test_a_deadline_with_time_left_keeps_a_hot_transaction_retrying(db: Database) -> None:
    work = _Conflicts(retry_budget.MAX_ATTEMPTS * 3)
    with retry_budget.call_deadline(60.0):
        assert db.run_tx(work) == "committed"
    assert work.attempts == retry_budget.MAX_ATTEMPTS * 3 + 1


def test_retries_end_when_the_deadline_is_spent(db: Database) -> None:
    work = _Conflicts(None)
    with retry_budget.call_deadline(0.5), pytest.raises(Unavailable) as raised:
        db.run_tx(work)
    assert raised.value.reason == "TRANSACTION_CONFLICT"
    assert work.attempts > retry_budget.MAX_ATTEMPTS


def test_the_session_layer_retries_under_the_same_budget(db: Database) -> None:
    attempts = 0

    def work(_conn: object) -> int:
        nonlocal attempts
        attempts += 1
        if attempts <= retry_budget.MAX_ATTEMPTS + 5:
            raise RetryTransaction
        return attempts

    with retry_budget.call_deadline(60.0):
        assert db.write(work) == retry_budget.MAX_ATTEMPTS + 6
    attempts = 0
    with retry_budget.call_deadline(None), pytest.raises(Unavailable):
        db.write(work)
    assert attempts == retry_budget.MAX_ATTEMPTS
