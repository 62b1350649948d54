"""Helpers shared by the bench orchestrator, the baseline server and the load client."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The dev server certificate names localhost and 127.0.0.1; pinning the name keeps verification
# identical whichever loopback form the target uses.
CHANNEL_OPTIONS: list[tuple[str, str | int]] = [("grpc.ssl_target_name_override", "localhost")]

BASELINE_SERVICE = "realname.bench.v1.Baseline"
BASELINE_METHOD = f"/{BASELINE_SERVICE}/Empty"


def client_credentials(pki_dir: Path, principal: str) -> grpc.ChannelCredentials:
    """Channel credentials presenting the dev client certificate of ``principal``."""
    return grpc.ssl_channel_credentials(
        root_certificates=(pki_dir / "ca.pem").read_bytes(),
        private_key=(pki_dir / "clients" / f"{principal}.key").read_bytes(),
        certificate_chain=(pki_dir / "clients" / f"{principal}.pem").read_bytes(),
    )


def source_tree_env(tree: Path) -> dict[str, str]:
    """Environment that makes `realname serve` run another source tree's code (an A/B in one run).

    PYTHONPATH puts the tree's ``services`` and ``registry`` before this checkout's editable
    install; the venv (and its dependencies) is shared. The tree: ``git worktree add`` or
    ``git archive`` of an earlier commit.
    """
    return {"PYTHONPATH": str(tree.resolve())}


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (the usual bind-to-0 probe; a race is harmless here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A server subprocess whose output goes to a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    address: str
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the server wrote, for error reports."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20) -> int:
        """Sends SIGTERM (graceful shutdown), kills after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"!!! {self.name} ignored SIGTERM for {timeout:.0f}s; killing it")
            self.proc.kill()
            return self.proc.wait()


def start_process(
    name: str, argv: list[str], address: str, log_path: Path, env: dict[str, str] | None = None
) -> ServerProcess:
    """Starts a server subprocess with stdout and stderr sent to ``log_path``."""
    with log_path.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    return ServerProcess(name, proc, address, log_path)


def wait_serving(server: ServerProcess, pki_dir: Path, timeout: float = 60) -> None:
    """Polls gRPC health over mTLS until SERVING; raises with the server's log if it never is."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    creds = client_credentials(pki_dir, "operator-cmcc")
    with grpc.secure_channel(server.address, creds, CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(
                    f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}"
                )
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_error = f"health status {reply.status}"
            except grpc.RpcError as exc:
                # Expected while the server is still binding; remembered for the timeout message.
                last_error = f"{exc.code().name}: {exc.details()}"
            time.sleep(0.1)
    raise RuntimeError(
        f"{server.name} did not report SERVING within {timeout:.0f}s ({last_error}):\n"
        f"{server.log_tail()}"
    )


def proc_cpu_seconds(pid: int, *, with_reaped_children: bool = False) -> float:
    """User+system CPU seconds of one process from /proc (0.0 if it is gone).

    ``with_reaped_children`` adds the CPU of children that exited and were waited for, so that
    short-lived PostgreSQL backends (a pool that reconnects) still count.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        # A process that exited between listing and reading has no more CPU to count.
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    # After the command name: field 3 is state, so utime, stime, cutime, cstime (fields 14-17)
    # sit at indexes 11-14.
    used = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        used += int(fields[13]) + int(fields[14])
    return used / ticks


def tree_cpu_seconds(root_pid: int) -> dict[int, float]:
    """CPU seconds of ``root_pid`` and its direct children (PostgreSQL backends are children)."""
    out = {root_pid: proc_cpu_seconds(root_pid, with_reaped_children=True)}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we listed /proc
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == root_pid:
            out[int(entry.name)] = proc_cpu_seconds(int(entry.name))
    return out


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def update_results_section(path: Path, name: str, markdown: str) -> None:
    """Replaces (or appends) the section ``name`` of the results file, keeping the others.

    Phases run on their own (`bench.run --only soak`) update their figures without erasing the
    rest of the last full run's report.
    """
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + block + tail
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
