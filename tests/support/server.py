"""In-process and subprocess servers for tests, reached over real mTLS on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.app import App
from services.domain.pseudonym import Pseudonymizer
from services.features.cards import CardDesk
from services.features.transparency import TransparencyLog
from services.proto.realname.v1 import log_pb2_grpc, verification_pb2_grpc
from services.rpc.server import RunningServer, TlsFiles, create_server
from services.storage.database import Database
from tests.support.pki import channel


@dataclass
class GrpcHarness:
    """A running server and channels to it, one per principal."""

    running: RunningServer
    address: str
    pki_dir: Path
    registry: CardDesk
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)
    app: App | None = None

    def channel(self, principal: str) -> grpc.Channel:
        """A (cached) channel presenting ``principal``'s client certificate."""
        if principal not in self._channels:
            self._channels[principal] = channel(self.address, self.pki_dir, principal)
        return self._channels[principal]

    def verification(
        self, principal: str = "operator-cmcc"
    ) -> verification_pb2_grpc.VerificationServiceStub:
        """A VerificationService stub as ``principal``."""
        return verification_pb2_grpc.VerificationServiceStub(self.channel(principal))

    def log_service(self, principal: str = "marketplace-demo") -> log_pb2_grpc.LogServiceStub:
        """A LogService stub as ``principal``."""
        return log_pb2_grpc.LogServiceStub(self.channel(principal))

    def close(self) -> None:
        """Closes channels and stops the server."""
        for ch in self._channels.values():
            ch.close()
        self.running.stop(grace=1)
        if self.app is not None and self.app.audit is not None:
            self.app.audit.stop()
        if self.app is not None and self.app.seller_checks is not None:
            self.app.seller_checks.watch.stop()


def start_harness(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, log: TransparencyLog | None = None
) -> GrpcHarness:
    """Starts an mTLS server on an ephemeral loopback port (serving ``log`` too, if given)."""
    app = App.build(db, pseudonymizer, log=log)
    assert app.audit is not None
    app.audit.start()
    running = create_server(
        app.bindings(), "127.0.0.1:0", tls=TlsFiles.in_pki_dir(pki_dir), audit_sink=app.audit
    )
    return GrpcHarness(running, f"127.0.0.1:{running.port}", pki_dir, app.cards, app=app)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def realname_bin() -> str:
    """The path of the `realname` console script in this environment."""
    path = Path(sys.executable).parent / "realname"
    found = str(path) if path.exists() else shutil.which("realname")
    assert found, "the realname console script is not installed"
    return found


def dev_init(data_dir: Path, env: Mapping[str, str] | None = None) -> None:
    """Run `realname dev-init` into ``data_dir`` (as `make run` does) and require success."""
    init = subprocess.run(
        [realname_bin(), "dev-init", "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr


@dataclass
class ServerProcess:
    """A `realname serve` subprocess."""

    proc: subprocess.Popen[bytes]
    address: str
    log_path: Path
    admin_address: str = ""

    def stop(self, timeout: float = 15) -> int:
        """Sends SIGTERM and waits for a graceful exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        """Everything the server wrote to stderr/stdout."""
        return self.log_path.read_text(errors="replace")


def start_server_process(
    data_dir: Path,
    *,
    database_url: str | None = None,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> ServerProcess:
    """Starts `realname serve` on free loopback ports and waits until health says SERVING."""
    grpc_port, http_port, admin_port = free_port(), free_port(), free_port()
    address = f"127.0.0.1:{grpc_port}"
    full_env = dict(os.environ)
    full_env.pop("REALNAME_DATABASE_URL", None)
    if database_url is not None:
        full_env["REALNAME_DATABASE_URL"] = database_url
    full_env.update(env or {})
    log_path = data_dir / f"serve-{grpc_port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [
                realname_bin(), "serve", "--data-dir", str(data_dir),
                "--grpc-address", address, "--http-address", f"127.0.0.1:{http_port}",
                "--admin-address", f"127.0.0.1:{admin_port}", *(extra_args or []),
            ],
            stdout=out, stderr=subprocess.STDOUT, env=full_env,
        )  # fmt: skip
    server = ServerProcess(proc, address, log_path, f"127.0.0.1:{admin_port}")
    if wait:
        wait_serving(server, data_dir / "dev-pki")
    return server


def wait_serving(server: ServerProcess, pki_dir: Path, timeout: float = 30) -> None:
    """Polls gRPC health until SERVING, failing with the server's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    with channel(server.address, pki_dir, "operator-cmcc") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {server.proc.returncode}:\n{server.log()}"
                )
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"server did not become healthy:\n{server.log()}")
