"""The registry with the mTLS listener serving the courier's page and API, as `serve` wires it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.domain.pseudonym import Pseudonymizer
from services.features.transparency import TransparencyLog
from services.http.admin import AdminListener, admin_app
from services.http.courier import courier_api_routes, courier_page_routes
from services.rpc.server import TlsFiles
from services.storage.database import Database
from tests.support.logdata import log_signer
from tests.support.registry import RegistryHarness, registry_server
from tests.support.server import free_port


@dataclass
class Served:
    """The registry harness and its mTLS listener's base URL."""

    harness: RegistryHarness
    url: str


@contextmanager
def courier_served(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, data_dir: Path
) -> Iterator[Served]:
    """A registry server with a transparency log, and the listener with the courier's routes."""
    transparency = TransparencyLog.create(db, log_signer())
    with registry_server(db, pki_dir, pseudonymizer, data_dir, log=transparency) as h:
        app = h.app
        assert app is not None and app.deliveries is not None
        assert app.compliance is not None and app.enforcement is not None
        routes = [
            *courier_api_routes(app.deliveries, app.delivery_bundle, app.audit),
            *courier_page_routes(),
        ]
        address = f"127.0.0.1:{free_port()}"
        listener = AdminListener.create(
            admin_app(app.compliance, app.enforcement, routes),
            address,
            TlsFiles.in_pki_dir(pki_dir),
        )
        listener.start()
        assert listener.wait_started()
        try:
            yield Served(h, f"https://{address}")
        finally:
            listener.stop()
