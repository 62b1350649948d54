"""HTTP side of the seller-authorization registry: CRLs, OCSP and CA certificates.

* ``GET /crl/<operator>.crl`` — the operator CA's CRL (DER), ``/crl/root.crl`` the regulator
  root's (revoked operator CAs). Re-signed in every revoking transaction; a CRL older than
  12 hours is re-signed before it is served (and by the background refresher), so what is
  served always has most of a day before its nextUpdate.
* ``GET /ocsp/<operator>/<base64 request>`` and ``POST /ocsp/<operator>`` with
  ``application/ocsp-request`` — RFC 6960 responses (good, revoked, unknown) from the database,
  signed by the operator CA generation that issued the certificate.
* ``GET /ca/root.pem`` and ``/ca/<operator>.pem`` — CA certificates (every key generation).

Plain HTTP is the norm for these (RFC 5280 4.2.1.13, RFC 6960 appendix A): the objects are signed.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Final
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from registry.pki.errors import InvalidOperatorError
from registry.pki.operators import validate_operator_id
from services.domain.errors import RealnameError, Unavailable
from services.features.seller_checks import ROOT_NAME, SellerChecks

log = logging.getLogger("realname.http.registry")

CRL_TYPE: Final = "application/pkix-crl"
"""Media type of a DER CRL (RFC 2585)."""

OCSP_REQUEST_TYPE: Final = "application/ocsp-request"
"""Media type of an OCSP request (RFC 6960 appendix A)."""

OCSP_RESPONSE_TYPE: Final = "application/ocsp-response"
"""Media type of an OCSP response."""

MAX_OCSP_REQUEST: Final = 8192
"""Largest OCSP request body read (a single-certificate request is about 100 bytes)."""

CRL_CACHE: Final = "public, max-age=300"
"""CRLs may be cached briefly; a revocation re-signs at once, so keep caches short."""


def _issuer(name: str) -> str | None:
    if name == ROOT_NAME:
        return name
    try:
        return validate_operator_id(name)
    except InvalidOperatorError:
        return None


def pki_routes(registry: SellerChecks) -> list[BaseRoute]:
    """The registry's HTTP routes."""

    def crl(request: Request) -> Response:
        issuer = _issuer(request.path_params["issuer"])
        if issuer is None:
            return _text(404, "no such CRL\n")
        try:
            der = registry.crl(issuer)
        except Unavailable:
            return _text(503, "the registry's database is unavailable\n")
        if der is None:
            return _text(404, f"no CRL for {issuer}\n")
        return Response(der, media_type=CRL_TYPE, headers={"Cache-Control": CRL_CACHE})

    def ca_certificates(request: Request) -> Response:
        issuer = _issuer(request.path_params["issuer"])
        if issuer is None:
            return _text(404, "no such CA\n")
        try:
            pem = registry.ca_certificates_pem(issuer)
        except Unavailable:
            return _text(503, "the registry's database is unavailable\n")
        if pem is None:
            return _text(404, f"no CA for {issuer}\n")
        return Response(pem, media_type="application/x-pem-file")

    def answer(operator: str, body: bytes) -> Response:
        try:
            response = registry.ocsp(operator, body)
        except RealnameError as exc:
            log.warning("OCSP answer failed", extra={"fields": {"reason": exc.reason}})
            return _text(503, "the OCSP responder cannot answer now\n")
        if response is None:
            return _text(404, f"no OCSP responder for {operator}\n")
        return Response(
            response, media_type=OCSP_RESPONSE_TYPE, headers={"Cache-Control": "no-cache"}
        )

    def ocsp_get(request: Request) -> Response:
        # RFC 6960 A.1: the DER request, base64, URL-encoded, as the last path segment.
        encoded = unquote(request.path_params["request"])
        try:
            body = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return _text(400, "the path is not a base64 OCSP request\n")
        return answer(request.path_params["operator"], body)

    async def ocsp_post(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != OCSP_REQUEST_TYPE:
            return _text(415, f"send {OCSP_REQUEST_TYPE}\n")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_OCSP_REQUEST:
                return _text(413, "OCSP request too large\n")
        return await run_in_threadpool(answer, request.path_params["operator"], body)

    return [
        Route("/crl/{issuer}.crl", crl, methods=["GET"]),
        Route("/ca/{issuer}.pem", ca_certificates, methods=["GET"]),
        Route("/ocsp/{operator}", ocsp_post, methods=["POST"]),
        Route("/ocsp/{operator}/{request:path}", ocsp_get, methods=["GET"]),
    ]


def _text(status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status, headers={"Cache-Control": "no-store"})
