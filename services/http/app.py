"""The HTTP side of the service (Starlette app served by uvicorn next to gRPC)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from services.runtime.metrics import metrics_routes


def create_app(is_serving: Callable[[], bool], routes: Sequence[BaseRoute] = ()) -> Starlette:
    """Builds the HTTP application from feature routes; ``is_serving`` reports gRPC health."""

    async def healthz(_request: Request) -> Response:
        ok = is_serving()
        body = {"status": "SERVING" if ok else "NOT_SERVING"}
        return JSONResponse(body, status_code=200 if ok else 503)

    return Starlette(routes=[Route("/healthz", healthz), *metrics_routes(), *routes])
