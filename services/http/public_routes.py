"""The public registry page: which operator authorized which store, and the log proof of it.

* ``GET /`` — search by marketplace and shop id (``?marketplace=…&shop_id=…``), by store name
  prefix (``?name=…``) or by unified social credit code (``?credit_code=…``); ``after=<serial>``
  pages on. Each result shows the authorizing operator, scope, validity, status (a revocation
  with its date and reason), serial and log index, linked to its proof.
* ``GET /operators/<operator>`` — every authorization an operator issued, in serial order, paged.
* ``GET /proof/<serial>`` — JSON: the inclusion proof of the authorization's issuance (or
  renewal) entry and the signed checkpoint it verifies against (``status`` PENDING until the
  sequencer has integrated it).

Server-rendered HTML with every value escaped; no scripts. Only what the log publishes is shown:
businesses and certificates, never subscriber data or application contacts.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from registry.authz.records import AuthorizationRecord, parse_serial, serial_hex
from registry.log import storage
from registry.pki.errors import InvalidOperatorError
from registry.pki.operators import validate_operator_id
from registry.pki.regions import PROVINCES
from services.domain.errors import NotFound, Unavailable
from services.features.sellers import SellerDesk
from services.features.transparency import INCLUDED, TransparencyLog

PAGE_SIZE: Final = 50
"""Results per page."""

MAX_QUERY: Final = 64
"""Longest search value accepted (store names are at most 64 characters)."""

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
"""Headers of every page: no script or external resource may load, no framing."""

REASONS: Final = {
    0: "unspecified",
    1: "key compromise",
    2: "CA compromise",
    3: "affiliation changed",
    4: "superseded",
    5: "cessation of operation",
    6: "certificate hold",
    8: "removed from CRL",
    9: "privilege withdrawn",
    10: "AA compromise",
}
"""Human names of RFC 5280 revocation reasons."""

_CREDIT_CODE_RE: Final = re.compile(r"^[0-9A-Z]{18}$")
_SHOP_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,39}$")
_MARKETPLACE_RE: Final = re.compile(r"^[a-z0-9.-]{1,24}$")

_STYLE: Final = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:80rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.3rem .5rem;
text-align:left;vertical-align:top}form{margin:.4rem 0}.revoked{color:#b00;font-weight:bold}
.active{color:#070;font-weight:bold}.expired{color:#a60;font-weight:bold}.error{color:#b00}
code{font-size:.9em}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _day(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def _scope_text(record: AuthorizationRecord) -> str:
    types = ", ".join(sorted(card_type.value for card_type in record.scope.card_types))
    if record.scope.nationwide:
        where = "nationwide"
    else:
        where = ", ".join(
            f"{PROVINCES.get(code, code)} ({code})" for code in sorted(record.scope.provinces)
        )
    return f"{types} — {where}"


def _status_html(record: AuthorizationRecord, now: dt.datetime) -> str:
    if record.revoked_at is not None:
        reason = REASONS.get(record.revocation_reason or 0, "unspecified")
        return (
            f'<span class="revoked" data-status="REVOKED">REVOKED</span> on '
            f"{_e(_day(record.revoked_at))}, reason: {_e(reason)}"
        )
    if record.expired(now):
        return '<span class="expired" data-status="EXPIRED">EXPIRED</span>'
    return '<span class="active" data-status="ACTIVE">ACTIVE</span>'


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f'<h1><a href="/">Store authorization registry</a></h1>{body}</body></html>'
    )
    return HTMLResponse(document, status_code=status, headers=SECURITY_HEADERS)


_FORMS: Final = """
<p>Which operator authorized an online store to sell mobile phone cards. Every authorization is
recorded in a public transparency log; each result links to its inclusion proof.</p>
<form method="get" action="/" id="by-shop"><label>Marketplace
<input name="marketplace" value="{marketplace}" maxlength="24"></label>
<label>Shop id <input name="shop_id" value="{shop_id}" maxlength="39"></label>
<button type="submit">Search shop</button></form>
<form method="get" action="/" id="by-name"><label>Store name
<input name="name" value="{name}" maxlength="64"></label>
<button type="submit">Search name</button></form>
<form method="get" action="/" id="by-credit-code"><label>Credit code
<input name="credit_code" value="{credit_code}" maxlength="18"></label>
<button type="submit">Search credit code</button></form>
"""


def public_routes(registry: SellerDesk, log: TransparencyLog | None) -> list[BaseRoute]:
    """Return the public registry page, the per-operator lists and the proof endpoint."""

    def log_indexes(records: Sequence[AuthorizationRecord]) -> list[int | None]:
        if log is None:
            return [None] * len(records)
        return log.db.read(
            lambda conn: [storage.index_for_certificate(conn, r.certificate) for r in records]
        )

    def table(records: Sequence[AuthorizationRecord], next_url: str | None) -> str:
        if not records:
            return '<p id="no-results">No authorization found.</p>'
        now = registry.now()
        rows = []
        for record, index in zip(records, log_indexes(records), strict=True):
            proof = f"/proof/{quote(record.serial_hex)}"
            logged = (
                f'<a class="log-index" href="{_e(proof)}">#{index}</a>'
                if index is not None
                else f'<a class="log-index" href="{_e(proof)}">pending</a>'
            )
            operator_url = f"/operators/{quote(record.operator)}"
            rows.append(
                f'<tr class="authorization" data-serial="{_e(record.serial_hex)}">'
                f'<td class="operator"><a href="{_e(operator_url)}">{_e(record.operator)}</a></td>'
                f'<td class="store">{_e(record.legal_name)}<br>'
                f"<code>{_e(record.marketplace)}/{_e(record.shop_id)}</code><br>"
                f"credit code <code>{_e(record.credit_code)}</code></td>"
                f'<td class="scope">{_e(_scope_text(record))}</td>'
                f'<td class="validity">{_e(_day(record.not_before))} to '
                f"{_e(_day(record.not_after))}</td>"
                f'<td class="status">{_status_html(record, now)}</td>'
                f'<td class="serial"><code>{_e(record.serial_hex)}</code></td>'
                f'<td class="log">{logged}</td></tr>'
            )
        more = f'<p><a id="next-page" href="{_e(next_url)}">Next page</a></p>' if next_url else ""
        return (
            '<table id="results"><thead><tr><th>Authorized by</th><th>Store</th><th>Scope</th>'
            "<th>Valid</th><th>Status</th><th>Serial</th><th>Log index</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{more}"
        )

    def next_link(
        path: str, params: dict[str, str], records: Sequence[AuthorizationRecord]
    ) -> str | None:
        if len(records) < PAGE_SIZE:
            return None
        return f"{path}?{urlencode({**params, 'after': records[-1].serial_hex})}"

    def home(request: Request) -> Response:
        q = {
            key: request.query_params.get(key, "").strip()[:MAX_QUERY]
            for key in ("marketplace", "shop_id", "name", "credit_code")
        }
        after = _after(request)
        forms = _FORMS.format(**{key: _e(value) for key, value in q.items()})
        params: dict[str, str]
        try:
            if q["marketplace"] or q["shop_id"]:
                if not (_MARKETPLACE_RE.match(q["marketplace"]) and _SHOP_RE.match(q["shop_id"])):
                    return _error(forms, "Give a valid marketplace and shop id.")
                params = {"marketplace": q["marketplace"], "shop_id": q["shop_id"]}
                records = registry.list_authorizations(
                    operator=None,
                    marketplace=q["marketplace"],
                    shop_id=q["shop_id"],
                    current_only=True,
                    after_serial=after,
                    limit=PAGE_SIZE,
                )
            elif q["credit_code"]:
                code = q["credit_code"].upper()
                if not _CREDIT_CODE_RE.match(code):
                    return _error(forms, "A credit code is 18 digits and capital letters.")
                params = {"credit_code": code}
                records = registry.search_authorizations(
                    legal_name=None, credit_code=code, after_serial=after, limit=PAGE_SIZE
                )
            elif q["name"]:
                params = {"name": q["name"]}
                records = registry.search_authorizations(
                    legal_name=q["name"], credit_code=None, after_serial=after, limit=PAGE_SIZE
                )
            else:
                return _page("Store authorization registry", forms)
            results = table(records, next_link("/", params, records))
        except Unavailable:
            return _page("Unavailable", "<p>The registry is unavailable; try again.</p>", 503)
        return _page("Search results", f"{forms}<h2>Results</h2>{results}")

    def operator_list(request: Request) -> Response:
        try:
            operator = validate_operator_id(request.path_params["operator"])
        except InvalidOperatorError:
            return _page("Not found", '<p class="error">No such operator.</p>', 404)
        try:
            records = registry.list_authorizations(
                operator=operator,
                marketplace=None,
                shop_id=None,
                current_only=False,
                after_serial=_after(request),
                limit=PAGE_SIZE,
            )
            results = table(records, next_link(f"/operators/{quote(operator)}", {}, records))
        except Unavailable:
            return _page("Unavailable", "<p>The registry is unavailable; try again.</p>", 503)
        forms = _FORMS.format(marketplace="", shop_id="", name="", credit_code="")
        return _page(
            f"Authorizations by {operator}",
            f'{forms}<h2 id="operator">Authorizations issued by {_e(operator)}</h2>{results}',
        )

    def proof(request: Request) -> Response:
        value = parse_serial(request.path_params["serial"])
        if value is None:
            return _json({"error": "not a serial number"}, 404)
        if log is None:
            return _json({"error": "this server keeps no transparency log"}, 404)
        try:
            record = registry.get_authorization(serial_hex(value))
            inclusion = log.certificate_inclusion(record.certificate)
        except NotFound:
            return _json({"error": "no such authorization"}, 404)
        except Unavailable:
            return _json({"error": "the registry is unavailable"}, 503)
        body: dict[str, object] = {
            "serial": record.serial_hex,
            "operator": record.operator,
            "status": inclusion.status,
            "origin": log.origin,
            "verifier_key": log.verifier_key,
        }
        if inclusion.status == INCLUDED:
            body.update(
                leaf_index=inclusion.leaf_index,
                tree_size=inclusion.tree_size,
                hashes=[_b64(h) for h in inclusion.hashes],
                entry=_b64(inclusion.entry),
                leaf_hash=_b64(inclusion.leaf_hash),
                checkpoint=inclusion.checkpoint.decode("utf-8"),
            )
        return _json(body, 200)

    return [
        Route("/", home, methods=["GET"]),
        Route("/operators/{operator}", operator_list, methods=["GET"]),
        Route("/proof/{serial}", proof, methods=["GET"]),
    ]


def _after(request: Request) -> str:
    value = parse_serial(request.query_params.get("after", ""))
    return serial_hex(value) if value is not None else ""


def _error(forms: str, message: str) -> HTMLResponse:
    return _page("Search", f'{forms}<p class="error">{_e(message)}</p>', 400)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json(body: dict[str, object], status: int) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-cache"})
