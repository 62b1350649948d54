"""The courier's web app: the page at ``/courier/`` and, behind the courier's client certificate,
its bundle download and handover sync.

* ``GET /courier/`` and the files beside it (``services/http/static/courier``: the page, the
  offline verifier ``verifier.mjs`` and its vendored libraries) — static, public; the page
  checks tokens in the browser, so it reveals nothing a bundle does not.
* ``GET /courier/sw.js`` — the service worker, with the list of files to keep offline and a
  version derived from their contents (a changed file updates the installed app).

Behind the courier company's client certificate (the mTLS listener of the regulator's dashboard,
:class:`services.http.admin.AdminListener`, where the page is served too, so its calls are
same-origin), for callers whose certificate names a courier company:

* ``GET /courier/api/bundle`` — the current ``realname-delivery-bundle`` (what
  ``realname bundle export`` writes), the company named in ``X-Courier-Company``;
* ``POST /courier/api/confirmations`` — queued handovers as the JSON lines of
  ``registry/delivery/queue.py`` (``realname courier sync``'s input), each recorded through
  :meth:`DeliveryDesk.confirm` exactly as ``ConfirmDelivery`` records it (idempotent: a replayed
  line answers the first record), each in the audit trail as ``POST /courier/api/confirmations``.
  The reply gives each line's verdict; ``recorded`` says the
  handover is on file, ``final`` that the server refused it for good (retrying will not help).

No document number reaches the server from the page: a queued handover carries the commitment
of the presented document under the token's salt, as ``realname courier sync`` sends it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from registry.delivery import DeliveryBundle, PresentedCommitment
from registry.delivery.errors import DeliveryError, QueueCorruptError
from registry.delivery.queue import Confirmation, parse_queue
from services.domain import audit
from services.domain.errors import ErrorKind, RealnameError, Unavailable
from services.domain.principal import Principal, Role
from services.features.delivery import DeliveryDesk
from services.http.mtls_protocol import request_principal

log = logging.getLogger("realname.courier")

PREFIX: Final = "/courier/"
"""Where the page is published."""

_MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
}
_IMPORT_MAP_RE: Final = re.compile(r'<script type="importmap">(.*?)</script>', re.DOTALL)


def _walk(folder: Traversable, prefix: str = "") -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for item in folder.iterdir():
        name = prefix + item.name
        if item.is_dir():
            files.update(_walk(item, name + "/"))
        elif name.endswith(".d.ts") or name == "sw.js":
            continue  # type declarations are for editors; the worker is rendered
        elif any(name.endswith(ext) for ext in _MEDIA_TYPES):
            files[name] = item.read_bytes()
    return files


@functools.cache
def page_files() -> dict[str, bytes]:
    """The page's files by path under ``/courier/`` (read once from the package)."""
    return _walk(resources.files("services.http").joinpath("static", "courier"))


@functools.cache
def _service_worker() -> bytes:
    files = page_files()
    version = hashlib.sha256()
    for name in sorted(files):
        version.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    template = resources.files("services.http").joinpath("static", "courier", "sw.js")
    body = template.read_text(encoding="utf-8")
    listed = json.dumps(["./", *sorted(n for n in files if n != "index.html")])
    body = body.replace('"__VERSION__"', json.dumps(version.hexdigest()[:16]))
    return body.replace('["__FILES__"]', listed).encode("utf-8")


@functools.cache
def security_headers() -> dict[str, str]:
    """Headers of every file: this origin's scripts (and the page's import map) only.

    'wasm-unsafe-eval' lets hash-wasm compile its Argon2 WebAssembly; nothing else is evaluated.
    """
    page = page_files()["index.html"].decode("utf-8")
    found = _IMPORT_MAP_RE.search(page)
    assert found is not None, "index.html carries the import map"
    digest = base64.b64encode(hashlib.sha256(found.group(1).encode("utf-8")).digest()).decode()
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'self' 'wasm-unsafe-eval' 'sha256-{digest}'; "
            "style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
            "connect-src 'self'; worker-src 'self'; manifest-src 'self'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # Revalidated online; offline, the service worker answers from its cache.
        "Cache-Control": "no-cache",
    }


def _media_type(name: str) -> str:
    return _MEDIA_TYPES["." + name.rsplit(".", 1)[-1]]


def courier_page_routes() -> list[BaseRoute]:
    """The static courier page under ``/courier/`` (public: it holds no data; mount after the API).

    Its catch-all file route would answer 404 for ``/courier/api/…`` placed before the API.
    """

    def home(_request: Request) -> Response:
        return RedirectResponse(PREFIX, status_code=308)

    def file(request: Request) -> Response:
        name = str(request.path_params.get("name", "")) or "index.html"
        body = page_files().get(name)
        if body is None:
            return PlainTextResponse("404 not found\n", status_code=404)
        return Response(body, media_type=_media_type(name), headers=security_headers())

    def worker(_request: Request) -> Response:
        headers = {**security_headers(), "Service-Worker-Allowed": PREFIX}
        return Response(_service_worker(), media_type=_MEDIA_TYPES[".js"], headers=headers)

    return [
        Route("/courier", home),
        Route(PREFIX, file),
        Route(PREFIX + "sw.js", worker),
        Route(PREFIX + "{name:path}", file),
    ]


MAX_UPLOAD: Final = 1 << 20
"""Largest confirmation upload accepted (about 1,500 queued handovers)."""

# Refusals of one confirmation as such: the others in the upload still go through (as
# `realname courier sync` carries on past them).
_FINAL_KINDS: Final = frozenset(
    {ErrorKind.INVALID_ARGUMENT, ErrorKind.FAILED_PRECONDITION, ErrorKind.NOT_FOUND}
)
_API_HEADERS: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _courier(request: Request) -> Principal | Response:
    principal = request_principal(request)
    if principal is None or principal.role is not Role.COURIER:
        who = "no client certificate" if principal is None else principal.name
        log.warning("courier API refused", extra={"fields": {"principal": who}})
        return PlainTextResponse(
            "403 this is for a courier company's client certificate only\n",
            status_code=403,
            headers=_API_HEADERS,
        )
    return principal


SYNC_METHOD: Final = "POST /courier/api/confirmations"
"""The audit trail's method name for one synced handover (a gRPC call is named by its RPC)."""


def _synced(
    desk: DeliveryDesk, principal: Principal, item: Confirmation, sink: audit.AuditSink | None
) -> dict[str, object]:
    """Record one handover, audited as a ConfirmDelivery call is (the documents it touched)."""
    context = audit.begin(subscriber_data=True)
    outcome = "INTERNAL"
    try:
        answer = _confirmed(desk, principal.organisation, item)
        outcome = "OK"
        return answer
    except RealnameError as exc:
        outcome = exc.kind.value
        raise
    finally:
        if sink is not None:
            sink.submit(principal.name, SYNC_METHOD, outcome, context)
        audit.end()


def _confirmed(desk: DeliveryDesk, courier: str, item: Confirmation) -> dict[str, object]:
    answer: dict[str, object] = {"id": item.id}
    try:
        verdict, delivery = desk.confirm(
            courier,
            item.token,
            PresentedCommitment(item.presented_commitment),
            courier_staff_id=item.courier_staff_id,
            delivered_at=item.delivered_at,
        )
    except RealnameError as exc:
        if exc.kind not in _FINAL_KINDS:
            raise
        return {**answer, "reason": exc.reason, "detail": exc.message, "recorded": False,
                "final": True}  # fmt: skip
    recorded = delivery is not None
    return {**answer, "reason": verdict.reason.value, "detail": verdict.detail,
            "recorded": recorded, "final": not recorded}  # fmt: skip


def courier_api_routes(
    desk: DeliveryDesk,
    bundle: Callable[[], DeliveryBundle],
    audit_sink: audit.AuditSink | None = None,
) -> list[BaseRoute]:
    """The courier company's bundle download and handover sync (mount behind mTLS only).

    ``audit_sink``: the audit trail each synced handover is recorded in, as gRPC calls are.
    """

    async def current_bundle(request: Request) -> Response:
        principal = _courier(request)
        if isinstance(principal, Response):
            return principal
        try:
            built = await run_in_threadpool(bundle)
        except Unavailable as exc:
            return PlainTextResponse(f"503 {exc}\n", status_code=503, headers=_API_HEADERS)
        headers = {**_API_HEADERS, "X-Courier-Company": principal.organisation}
        return Response(built.to_json(), media_type="application/json", headers=headers)

    async def confirmations(request: Request) -> Response:
        principal = _courier(request)
        if isinstance(principal, Response):
            return principal
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_UPLOAD:
                return PlainTextResponse("413 too many confirmations at once\n", status_code=413)
        try:
            pending = parse_queue(body).pending()
        except (QueueCorruptError, DeliveryError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400, headers=_API_HEADERS)

        def record() -> list[dict[str, object]]:
            return [_synced(desk, principal, item, audit_sink) for item in pending]

        try:
            results = await run_in_threadpool(record)
        except Unavailable as exc:
            # Nothing is lost: what was recorded answers OK again when the page retries.
            return JSONResponse({"error": str(exc)}, status_code=503, headers=_API_HEADERS)
        return JSONResponse({"results": results}, headers=_API_HEADERS)

    return [
        Route(PREFIX + "api/bundle", current_bundle, methods=["GET"]),
        Route(PREFIX + "api/confirmations", confirmations, methods=["POST"]),
    ]
