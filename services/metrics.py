"""Prometheus metrics of a serving process, exposed at /metrics on the HTTP side.

Each process keeps its own registry: with ``--workers N`` a scrape reaches one worker, so scrape
each worker (or run one per port) until multiprocess collection is added.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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


def observe_rpc(method: str, code: str, seconds: float) -> None:
    """Counts one finished RPC and its latency."""
    RPCS.labels(method, code).inc()
    RPC_SECONDS.labels(method).observe(seconds)


async def _metrics(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def metrics_routes() -> list[Route]:
    """The /metrics route (text exposition format)."""
    return [Route("/metrics", _metrics)]
