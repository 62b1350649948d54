"""Builds the gRPC server: TLS, interceptor, servicers, health and reflection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.domain.audit import AuditSink
from services.domain.principal import Role
from services.domain.ratelimit import RateLimiter
from services.rpc.auth import Authenticator
from services.rpc.interceptor import AccessPolicy, RealnameInterceptor

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_METADATA_BYTES = 16 * 1024


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service: how to add it to a server and which roles may call each method.

    ``access`` maps the service's full name, or ``Service/Method`` for a method-specific rule,
    to the roles allowed; the access matrix in the docs mirrors these tables.

    Every method is declared in exactly one of ``subscriber_data`` (it reads or changes
    subscriber data: each call leaves an audit record, one without a subject when it named no
    document) and ``no_subscriber_data`` (recorded only for the documents it notes). A method in
    neither is recorded like a subscriber-data one; a test fails for it until it is declared.
    """

    name: str
    add_to_server: Callable[[grpc.Server], None]
    access: dict[str, frozenset[Role]]
    subscriber_data: frozenset[str] = field(kw_only=True)
    no_subscriber_data: frozenset[str] = field(kw_only=True)

    def unaudited_methods(self) -> frozenset[str]:
        """The ``/Service/Method`` paths declared not to touch subscriber data."""
        return frozenset(f"/{self.name}/{method}" for method in self.no_subscriber_data)


@dataclass(frozen=True)
class TlsFiles:
    """Server certificate, key and the CA that client certificates must chain to."""

    cert: Path
    key: Path
    client_ca: Path

    @classmethod
    def in_pki_dir(cls, pki_dir: Path) -> TlsFiles:
        """The dev-init layout: server.pem, server.key, ca.pem."""
        return cls(pki_dir / "server.pem", pki_dir / "server.key", pki_dir / "ca.pem")

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require and verify a client certificate (mTLS)."""
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.client_ca.read_bytes(),
            require_client_auth=True,
        )


@dataclass
class RunningServer:
    """A started gRPC server, the port it bound and its health servicer."""

    server: grpc.Server
    port: int
    health: health.HealthServicer

    def stop(self, grace: float) -> None:
        """Reports NOT_SERVING, lets in-flight calls finish within ``grace`` seconds, stops."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def create_server(
    bindings: Sequence[ServiceBinding],
    address: str,
    *,
    tls: TlsFiles | None,
    max_workers: int = 32,
    reuse_port: bool = False,
    principal_limiter: RateLimiter | None = None,
    audit_sink: AuditSink | None = None,
    rpc_metrics: bool = True,
) -> RunningServer:
    """Creates and starts a server on ``address`` (port 0 picks one); ``tls=None`` is plaintext."""
    rules: dict[str, frozenset[Role]] = {}
    unaudited: set[str] = set()
    for binding in bindings:
        rules.update(binding.access)
        unaudited |= binding.unaudited_methods()
    interceptor = RealnameInterceptor(
        Authenticator(insecure=tls is None),
        AccessPolicy(rules),
        principal_limiter,
        audit_sink,
        unaudited=frozenset(unaudited),
        metrics=rpc_metrics,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[interceptor],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            # The soft limit alone refuses only some calls between 16 and 20 KiB; one hard limit.
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
        maximum_concurrent_rpcs=max_workers * 64,
    )
    for binding in bindings:
        binding.add_to_server(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [b.name for b in bindings]
    services = (*names, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(services, server)
    port = (
        server.add_secure_port(address, tls.credentials())
        if tls is not None
        else server.add_insecure_port(address)
    )
    if port == 0:
        raise OSError(f"could not bind the gRPC address {address}")
    server.start()
    for name in ("", *names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer)
