"""HTTP read API of the transparency log (C2SP tlog-tiles) and its cosignature intake.

Under ``/log/``: ``checkpoint``, ``tile/<L>/<N>[.p/<W>]``, ``tile/entries/<N>[.p/<W>]`` (GET)
and ``cosign`` (POST a checkpoint carrying witness cosignatures). Full tiles and bundles never
change and are cacheable for a year; partial ones and the checkpoint move as the log grows.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from registry.log.errors import (
    CosignatureRejectedError,
    LogCorruptedError,
    NoCheckpointError,
    TreeSizeError,
)
from registry.tiles import EntryBundle, MalformedTilePathError, parse_path
from services.domain.errors import Unavailable

if TYPE_CHECKING:
    from services.features.transparency import TransparencyLog
    from services.storage.database import Database

log = logging.getLogger("realname.http.log")

IMMUTABLE: Final = "public, max-age=31536000, immutable"
"""Cache-Control of full tiles and full entry bundles."""

SHORT_LIVED: Final = "public, max-age=5"
"""Cache-Control of partial tiles and bundles (they are replaced as the log grows)."""

NO_CACHE: Final = "no-cache"
"""Cache-Control of the checkpoint: clients must always revalidate it."""

CHECKPOINT_TYPE: Final = "text/plain; charset=utf-8"
"""Content type of checkpoints (C2SP tlog-tiles)."""

TILE_TYPE: Final = "application/octet-stream"
"""Content type of tiles and entry bundles (C2SP tlog-tiles)."""

MAX_COSIGN_BODY: Final = 64 * 1024
"""Largest cosignature submission read (a note has at most 100 short signature lines)."""

_REJECTION_STATUS: Final = {
    "UNKNOWN_CHECKPOINT": 409,
    "UNKNOWN_WITNESS": 403,
}


def log_routes(transparency: TransparencyLog, reads: Database | None = None) -> list[BaseRoute]:
    """Return the log's routes, mounted at ``/log``; checkpoint and tiles are read from
    ``reads`` (a standby) when given, cosignatures always written to the log's database."""
    db, reader = reads or transparency.db, transparency.reader

    # Plain functions: Starlette runs them in its thread pool, where blocking SQL belongs.
    def checkpoint(_request: Request) -> Response:
        try:
            stored = db.read(reader.latest_checkpoint)
        except NoCheckpointError:
            return _text(404, "the log has not signed a checkpoint yet\n")
        except Unavailable:
            return _text(503, "the log's database is unavailable\n")
        return Response(
            stored.signed_note(),
            media_type=CHECKPOINT_TYPE,
            headers={"Cache-Control": NO_CACHE},
        )

    def tile(request: Request) -> Response:
        path = "tile/" + request.path_params["path"]
        try:
            coordinates = parse_path(path)
        except MalformedTilePathError as error:
            return _text(400, f"{error}\n")
        try:
            if isinstance(coordinates, EntryBundle):
                body = db.read(lambda conn: reader.entry_bundle(conn, coordinates))
            else:
                body = db.read(lambda conn: reader.tile(conn, coordinates))
        except (TreeSizeError, NoCheckpointError):
            return _text(404, f"{path} is beyond the log's tree\n")
        except Unavailable:
            return _text(503, "the log's database is unavailable\n")
        except LogCorruptedError:
            log.exception("log storage is inconsistent", extra={"fields": {"path": path}})
            return _text(500, "the log's storage is inconsistent\n")
        cache = SHORT_LIVED if coordinates.is_partial else IMMUTABLE
        return Response(body, media_type=TILE_TYPE, headers={"Cache-Control": cache})

    async def cosign(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_COSIGN_BODY:
                return _text(413, "cosigned checkpoint too large\n")
        return await run_in_threadpool(_accept, transparency, body)

    return [
        Mount(
            "/log",
            routes=[
                Route("/checkpoint", checkpoint, methods=["GET"]),
                Route("/tile/{path:path}", tile, methods=["GET"]),
                Route("/cosign", cosign, methods=["POST"]),
            ],
        )
    ]


def _accept(transparency: TransparencyLog, body: bytes) -> Response:
    try:
        stored = transparency.accept_cosignatures(body)
    except CosignatureRejectedError as error:
        return _text(_REJECTION_STATUS.get(error.reason, 400), f"{error.reason}: {error}\n")
    except Unavailable:
        return _text(503, "the log's database is unavailable\n")
    return Response(
        stored.signed_note(), media_type=CHECKPOINT_TYPE, headers={"Cache-Control": NO_CACHE}
    )


def _text(status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status, headers={"Cache-Control": "no-store"})
