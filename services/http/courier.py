"""The courier's web app: the page at ``/courier/`` and, behind the courier's client certificate,
its bundle download and handover sync.

* ``GET /courier/`` and the files beside it (``services/http/static/courier``: the page, the
  offline verifier ``verifier.mjs`` and its vendored libraries) — static, public; the page
  checks tokens in the browser, so it reveals nothing a bundle does not.
* ``GET /courier/sw.js`` — the service worker, with the list of files to keep offline and a
  version derived from their contents (a changed file updates the installed app).

No document number reaches the server from the page: a queued handover carries the commitment
of the presented document under the token's salt, as ``realname courier sync`` sends it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

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
    """The static courier page under ``/courier/`` (public: it holds no data)."""

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
