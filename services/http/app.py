"""The HTTP side of the service (Starlette app served by uvicorn next to gRPC)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def create_app(is_serving: Callable[[], bool]) -> Starlette:
    """Builds the HTTP application; ``is_serving`` reports the gRPC side's health."""

    async def healthz(_request: Request) -> Response:
        ok = is_serving()
        return JSONResponse(
            {"status": "SERVING" if ok else "NOT_SERVING"}, status_code=200 if ok else 503
        )

    return Starlette(routes=[Route("/healthz", healthz)])
