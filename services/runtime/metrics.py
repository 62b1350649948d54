"""Prometheus metrics of a serving process, exposed at /metrics on the HTTP side.

Each process keeps its own registry: with ``--workers N`` a scrape reaches one worker, so scrape
each worker (or run one per port) until multiprocess collection is added.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any, cast

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import Connection, func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registry.log import storage as log_storage
from services.domain.principal import Principal, Role
from services.proto.realname.v1 import registry_pb2
from services.storage.database import Database

RPCS = Counter(
    "realname_rpc_total",
    "RPCs handled, by full method name and status code.",
    ["method", "code"],
)
RPC_SECONDS = Histogram(
    "realname_rpc_duration_seconds",
    "Server-side RPC latency, by full method name.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)


class MethodMetrics:
    """One method's RPC counters (by status code) and latency histogram, as labelled children.

    Built once per method by the interceptor: labels() on every call cost as much as the
    counting itself.
    """

    def __init__(self, method: str) -> None:
        self._method = method
        self._latency = RPC_SECONDS.labels(method)
        self._codes: dict[str, Any] = {}

    def observe(self, code: str, seconds: float) -> None:
        """Counts one finished RPC of the method and its latency."""
        child = self._codes.get(code)
        if child is None:
            child = self._codes.setdefault(code, RPCS.labels(self._method, code))
        child.inc()
        self._latency.observe(seconds)


ACTIVATIONS = Counter(
    "realname_activations_total",
    "ActivateCard answers by calling operator: outcome 'activated' or the refusal's reason.",
    ["operator", "outcome"],
)
ELIGIBILITY_VERDICTS = Counter(
    "realname_eligibility_verdicts_total",
    "CheckEligibility answers, by whether the document may get another card.",
    ["eligible"],
)
SELLER_VERDICTS = Counter(
    "realname_seller_verdicts_total",
    "Seller verdicts given by VerifySeller and VerifySellers sweeps, by verdict reason.",
    ["reason"],
)
LOG_SIZE = Gauge("realname_log_size", "Entries in the transparency log's tree (sequenced).")
LOG_PENDING = Gauge(
    "realname_log_pending_entries", "Transparency log entries appended but not yet sequenced."
)
LOG_LAG = Gauge(
    "realname_log_sequencer_lag_seconds",
    "How long the oldest pending log entry has waited (0 when none; resolution: the sampling).",
)
DATABASE_UP = Gauge(
    "realname_database_up", "1 while the health probe reaches the database, else 0."
)
DATABASE_UP.set(1)

OutcomeObserver = Callable[[Principal, str, Any], None]
"""Records a business outcome from (caller, refusal reason or "", response message or None)."""

_VERDICT_PREFIX = "VERDICT_REASON_"


def _verdict_name(value: int) -> str:
    return registry_pb2.VerdictReason.Name(cast(Any, value)).removeprefix(_VERDICT_PREFIX)


# Labelled children by label values: labels() costs several times an inc() on the hot path.
_ACTIVATION_CHILDREN: dict[tuple[str, str], Any] = {}
_ELIGIBLE_CHILDREN = {
    True: ELIGIBILITY_VERDICTS.labels("true"),
    False: ELIGIBILITY_VERDICTS.labels("false"),
}


def _activation(principal: Principal, reason: str, response: Any) -> None:
    if principal.role is Role.OPERATOR:
        key = (principal.organisation, "activated" if response is not None else reason)
        child = _ACTIVATION_CHILDREN.get(key)
        if child is None:
            child = _ACTIVATION_CHILDREN.setdefault(key, ACTIVATIONS.labels(*key))
        child.inc()


def _eligibility(_principal: Principal, _reason: str, response: Any) -> None:
    if response is not None:
        _ELIGIBLE_CHILDREN[bool(response.eligible)].inc()


def _seller_verdict(_principal: Principal, _reason: str, response: Any) -> None:
    if response is not None:
        SELLER_VERDICTS.labels(_verdict_name(response.verdict.reason)).inc()


def _seller_sweep(_principal: Principal, _reason: str, response: Any) -> None:
    if response is not None:
        for reason, count in Tally(v.reason for v in response.verdicts).items():
            SELLER_VERDICTS.labels(_verdict_name(reason)).inc(count)


_OBSERVERS: dict[str, OutcomeObserver] = {
    "/realname.v1.VerificationService/ActivateCard": _activation,
    "/realname.v1.VerificationService/CheckEligibility": _eligibility,
    "/realname.v1.RegistryService/VerifySeller": _seller_verdict,
    "/realname.v1.RegistryService/VerifySellers": _seller_sweep,
}


def outcome_observer(method: str) -> OutcomeObserver | None:
    """The recorder of ``method``'s business outcomes (per response of a stream), if it has one.

    The interceptor calls it, so domain code records nothing and never imports Prometheus.
    """
    return _OBSERVERS.get(method)


def _log_stats(conn: Connection) -> tuple[int, int, int | None]:
    state = log_storage.read_state(conn)
    pending = log_storage.log_pending
    count, oldest = conn.execute(select(func.count(), func.min(pending.c.id))).one()
    return (0 if state is None else state.size), int(count), oldest


class LogSampler:
    """Samples the transparency log's size, pending entries and sequencer lag into the gauges.

    The pending table keeps no timestamps, so the lag is measured from when this sampler first
    saw the current oldest pending entry (known by tree size and row id, as SQLite reuses the ids
    of a drained table): it reads low by up to one sampling interval, more after a partial batch.
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._clock = clock
        self._oldest: tuple[tuple[int, int], float] | None = None

    def sample(self) -> None:
        """Reads the log's state (one short read transaction) and sets the gauges."""
        size, pending, oldest = self._db.read(_log_stats)
        now = self._clock()
        LOG_SIZE.set(size)
        LOG_PENDING.set(pending)
        if oldest is None:
            self._oldest = None
            LOG_LAG.set(0)
            return
        seen = (size, int(oldest))
        if self._oldest is None or self._oldest[0] != seen:
            self._oldest = (seen, now)
        LOG_LAG.set(now - self._oldest[1])


async def _metrics(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def metrics_routes() -> list[Route]:
    """The /metrics route (text exposition format)."""
    return [Route("/metrics", _metrics)]
