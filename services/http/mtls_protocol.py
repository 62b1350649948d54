"""uvicorn's h11 protocol, extended to hand the verified TLS client certificate to the app.

uvicorn 0.54 does not put the peer certificate in the ASGI scope. Its protocol copies
``app_state`` into every request's ``scope["state"]``, so each connection gets its own copy of
that dict with the DER certificate the TLS handshake verified (``request.state`` in Starlette).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Final

from starlette.requests import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.domain.errors import Unauthenticated
from services.domain.principal import Principal
from services.rpc.auth import principal_from_pem

CLIENT_CERT_STATE: Final = "realname_client_cert_der"
"""Key of the DER client certificate in ``scope["state"]`` (absent without TLS)."""


class ClientCertH11Protocol(H11Protocol):
    """H11Protocol that records the connection's verified client certificate."""

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        """Stores the peer certificate in this connection's own copy of the app state."""
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            der = ssl_object.getpeercert(binary_form=True)
            # The dict is shared by every connection of the server: never write into it.
            self.app_state = {**self.app_state, CLIENT_CERT_STATE: der}


def request_principal(request: Request) -> Principal | None:
    """The principal of the request's client certificate, as gRPC derives it (None: none)."""
    der = getattr(request.state, CLIENT_CERT_STATE, None)
    if not isinstance(der, bytes):
        return None
    try:
        return principal_from_pem(ssl.DER_cert_to_PEM_cert(der).encode("ascii"))
    except Unauthenticated:
        return None
