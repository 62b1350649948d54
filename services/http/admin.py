"""The regulator's dashboard: an HTTPS listener that requires the regulator's client certificate.

* ``GET /regulator/`` — the page (HTML, CSS and script files, no inline script);
* ``GET /regulator/static/plotly.min.js`` — plotly.js from the ``plotly`` wheel, same origin;
* ``GET /regulator/api/compliance`` — the figures the charts draw, as JSON.

The listener is separate from the public HTTP side: TLS with ``CERT_REQUIRED`` against the
transport CA, so a caller without a certificate fails the handshake, and every route answers
403 unless the certificate names the regulator (same role/organisation rule as gRPC).
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from registry.pki.regions import PROVINCES
from services.domain.errors import Unavailable
from services.domain.principal import Role
from services.features.compliance import STAGES, ComplianceDesk, Report
from services.features.enforcement import EnforcementDesk, Standing
from services.http.mtls_protocol import ClientCertH11Protocol, request_principal
from services.rpc.server import TlsFiles
from services.runtime.workers import reuse_port_socket

log = logging.getLogger("realname.admin")

# China Standard Time: the day a snapshot is filed under (as ComplianceDesk.snapshot does), and
# the time the page shows (no daylight saving: a fixed offset).
REPORTING_OFFSET: Final = dt.timedelta(hours=8)
REPORTING_ZONE: Final = "Asia/Shanghai"

SECURITY_HEADERS: Final = {
    # plotly.js injects <style> elements, hence 'unsafe-inline' for styles only.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
"""Headers of the page and the data: nothing but this origin's files, never cached."""

_TEMPLATES: Final = ("dashboard.html", "dashboard.css", "dashboard.js")
_MEDIA_TYPES: Final = {
    "html": "text/html; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
}

Endpoint = Callable[[Request], Response]
_ACTION_KINDS: Final = ("warnings", "fines", "suspensions", "ca_revocations")


def dashboard_data(report: Report, standings: list[Standing], now: dt.datetime) -> dict[str, Any]:
    """The JSON the dashboard draws: per-operator figures, targets, rate history, provinces.

    Days and times are China Standard Time; a rate is null (no data) for no live cards.
    """
    today = (now + REPORTING_OFFSET).date().isoformat()
    by_operator = {s.operator: s for s in standings}
    history: dict[str, list[dict[str, Any]]] = {f.operator: [] for f in report.operators}
    for day, operator, rate in report.history:
        if operator in history and day != today:  # today's point is the live figure below
            history[operator].append({"day": day, "rate": rate})
    operators: list[dict[str, Any]] = []
    for f in report.operators:
        standing = by_operator.get(f.operator)
        drawn = standing.by_own_kind() if standing else dict.fromkeys(_ACTION_KINDS, 0)
        points = sorted(history[f.operator], key=lambda p: str(p["day"]))
        points.append({"day": today, "rate": f.real_name_rate})
        operators.append(
            {
                "operator": f.operator,
                "kind": f.kind,
                "live_cards": f.live_cards,
                "verified_cards": f.verified_cards,
                "real_name_rate": f.real_name_rate,
                "targets": [
                    {
                        "rate": t.rate,
                        "due": t.due.isoformat(),
                        "met": f.meets(t),
                        "shortfall_cards": f.shortfall(t),
                    }
                    for t in report.targets
                ],
                "disputes_opened": f.disputes_opened,
                "disputes_resolved": f.disputes_resolved,
                "agents_flagged": f.agents_flagged,
                "agents_suspended": f.agents_suspended,
                "enforcement_actions": f.enforcement_actions,
                # Each action once under its own kind (a CA revocation is not a warning).
                **drawn,
                "fines_total_yuan": standing.fines_total_yuan if standing else 0,
                "licence_status": standing.licence_status if standing else "GOOD",
                "documents_by_cards": list(f.documents_by_cards),
                "cards_by_stage": {stage: f.cards_by_stage.get(stage, 0) for stage in STAGES},
                "history": points,
            }
        )
    first = min((str(p["day"]) for op in operators for p in op["history"]), default=today)
    if first == today:  # the target lines need a span to be seen
        first = ((now + REPORTING_OFFSET).date() - dt.timedelta(days=1)).isoformat()
    return {
        "computed_at": report.computed_at.isoformat(),
        "time_zone": REPORTING_ZONE,
        "utc_offset_minutes": int(REPORTING_OFFSET.total_seconds() // 60),
        "day": today,
        "first_day": first,
        "targets": [{"rate": t.rate, "due": t.due.isoformat()} for t in report.targets],
        "operators": operators,
        "stages": list(STAGES),
        "provinces": [
            {
                "province": p.province,
                "name": PROVINCES.get(p.province, "other documents"),
                "live_cards": p.live_cards,
                "verified_cards": p.verified_cards,
                "real_name_rate": p.real_name_rate,
            }
            for p in report.provinces
        ],
    }


def _regulator_only(endpoint: Endpoint) -> Endpoint:
    """Wraps a (synchronous) endpoint so only the regulator's certificate reaches it."""

    @functools.wraps(endpoint)
    def guarded(request: Request) -> Response:
        principal = request_principal(request)
        if principal is None or principal.role is not Role.REGULATOR:
            who = "no client certificate" if principal is None else principal.name
            log.warning("dashboard refused", extra={"fields": {"principal": who}})
            return PlainTextResponse(
                "403 the dashboard is for the regulator's client certificate only\n",
                status_code=403,
                headers=SECURITY_HEADERS,
            )
        return endpoint(request)

    return guarded


@functools.cache
def _template(name: str) -> bytes:
    return resources.files("services.http").joinpath("templates", name).read_bytes()


@functools.cache
def _plotly_js() -> tuple[bytes, bytes]:
    """plotly.js as shipped in the plotly wheel, plain and gzipped (4.8 MB, 1.4 MB)."""
    body = resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()
    return body, gzip.compress(body, compresslevel=6, mtime=0)


def admin_app(
    compliance: ComplianceDesk,
    enforcement: EnforcementDesk,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The dashboard application (mount it only behind :class:`AdminListener`'s mTLS).

    ``extra_routes``: other pages behind the same client certificates (the courier's app),
    each with its own access rule.
    """

    def page(_request: Request) -> Response:
        return Response(_template("dashboard.html"), media_type=_MEDIA_TYPES["html"],
                        headers=SECURITY_HEADERS)  # fmt: skip

    def static(request: Request) -> Response:
        name = str(request.path_params["name"])
        if name not in _TEMPLATES[1:]:
            return PlainTextResponse("404 not found\n", status_code=404)
        media = _MEDIA_TYPES[name.rsplit(".", 1)[1]]
        return Response(_template(name), media_type=media, headers=SECURITY_HEADERS)

    def plotly_js(request: Request) -> Response:
        plain, zipped = _plotly_js()
        headers = {"Cache-Control": "private, max-age=86400", "Vary": "Accept-Encoding",
                   "X-Content-Type-Options": "nosniff"}  # fmt: skip
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(zipped, media_type=_MEDIA_TYPES["js"], headers=headers)
        return Response(plain, media_type=_MEDIA_TYPES["js"], headers=headers)

    def figures(_request: Request) -> Response:
        try:
            report = compliance.report()
            _actions, standings = enforcement.list(None)
        except Unavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers=SECURITY_HEADERS)
        data = dashboard_data(report, standings, report.computed_at)
        return JSONResponse(data, headers=SECURITY_HEADERS)

    def home(_request: Request) -> Response:
        return RedirectResponse("/regulator/", status_code=303)

    routes = [
        Route("/", _regulator_only(home)),
        Route("/regulator", _regulator_only(home)),
        Route("/regulator/", _regulator_only(page)),
        Route("/regulator/static/plotly.min.js", _regulator_only(plotly_js)),
        Route("/regulator/static/{name}", _regulator_only(static)),
        Route("/regulator/api/compliance", _regulator_only(figures)),
        *extra_routes,
    ]
    return Starlette(routes=routes)


@dataclass
class AdminListener:
    """The dashboard's HTTPS server (client certificate required), run on its own thread."""

    server: uvicorn.Server
    address: str
    sockets: list[Any] | None
    thread: threading.Thread | None = None

    @classmethod
    def create(
        cls,
        app: Starlette,
        address: str,
        tls: TlsFiles,
        *,
        reuse_port: bool = False,
    ) -> AdminListener:
        """Configures (without starting) a listener on ``host:port`` with the server's TLS files."""
        host, port = address.rsplit(":", 1)
        config = uvicorn.Config(
            app,
            host=host.strip("[]"),
            port=int(port),
            log_config=None,  # keeps the handlers logs.configure installed
            access_log=False,
            http=ClientCertH11Protocol,
            ssl_certfile=str(tls.cert),
            ssl_keyfile=str(tls.key),
            ssl_ca_certs=str(tls.client_ca),
            ssl_cert_reqs=ssl.CERT_REQUIRED,
        )
        sockets = [reuse_port_socket(host.strip("[]"), int(port))] if reuse_port else None
        return cls(uvicorn.Server(config), address, sockets)

    def start(self) -> None:
        """Starts serving on a daemon thread (see :attr:`started` and :attr:`failed`)."""
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": self.sockets}, name="admin", daemon=True
        )
        self.thread.start()

    @property
    def started(self) -> bool:
        """Whether the listener accepts connections."""
        return bool(self.server.started)

    @property
    def failed(self) -> bool:
        """Whether the server thread ended without starting (bad address, TLS files)."""
        return self.thread is not None and not self.thread.is_alive() and not self.started

    def wait_started(self, timeout: float = 30) -> bool:
        """Waits until started; False if it failed or timed out."""
        deadline = time.monotonic() + timeout
        while not self.started:
            if self.failed or time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self) -> None:
        """Asks the server to exit and waits for its thread (5 s at most)."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=5)
