"""A real PostgreSQL HA cluster on loopback ports: etcd, and Patroni managing a primary and a
synchronous standby (Debian's `patroni` and `etcd-server`, installed when missing).

Patroni, not pg_auto_failover: it runs the machine's own PostgreSQL 15 binaries with no extension
to build, keeps `synchronous_standby_names` itself (`synchronous_mode: true` promotes only a
synchronous standby, so no acknowledged commit is lost), and answers role checks over a plain
REST API. Usage: ``python -m tests.support.ha_cluster up DIR`` (prints the URL), ``down DIR``;
or ``HaCluster`` from a test.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.server import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PACKAGES = {"/usr/bin/patroni": "patroni", "/usr/bin/etcd": "etcd-server"}
SCOPE = "realname-ha"


def ensure_packages() -> None:
    """Installs Debian's patroni and etcd-server when missing (as `make browser` does chromium)."""
    missing = [package for path, package in PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    print(f"installing Debian's {' '.join(missing)} for the HA cluster", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def _as_postgres(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; setpriv keeps the spawn a vfork (see faults.py).
    if os.geteuid() != 0:
        return command
    entry = pwd.getpwnam("postgres")
    return [
        "setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", *command,
    ]  # fmt: skip


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(data_dir).encode() in cmdline


@dataclass
class Node:
    """One Patroni-managed PostgreSQL server."""

    name: str
    root: Path
    pg_port: int
    rest_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        """The server's data directory."""
        return self.root / "data"

    def role(self) -> str:
        """ "primary", "sync_standby", "replica", or "" when its Patroni does not answer."""
        status, body = _get(f"http://127.0.0.1:{self.rest_port}/patroni")
        if status == 0 or not body:
            return ""
        state = json.loads(body)
        if state.get("role") in ("master", "primary") and state.get("state") == "running":
            return "primary"
        return str(state.get("role", ""))

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, from its pid file."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


class HaCluster:
    """etcd plus two Patroni nodes (primary and synchronous standby) under ``root``."""

    def __init__(self, root: Path | None = None) -> None:
        ensure_packages()
        self.root = root or Path(tempfile.mkdtemp(prefix="realname-ha-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.nodes = [
            Node(f"node{i}", self.root / f"node{i}", free_port(), free_port()) for i in range(2)
        ]
        self._etcd: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        """The multi-host URL that always reaches the primary."""
        hosts = ",".join(f"127.0.0.1:{n.pg_port}" for n in self.nodes)
        return f"postgresql+psycopg://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def node_url(self, node: Node, database: str = "postgres") -> str:
        """A URL of one node only."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{node.pg_port}/{database}"

    def start(self, timeout: float = 120) -> None:
        """Starts etcd and both nodes; returns once a primary has a synchronous standby."""
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            # The postgres user must traverse to the root (tempfile makes it 0700).
            self.root.chmod(0o755)
        etcd_dir = self.root / "etcd"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        with (self.root / "etcd.log").open("wb") as out:
            self._etcd = subprocess.Popen(
                [
                    "etcd", "--name", "e0", "--data-dir", str(etcd_dir),
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", f"e0={peer}",
                ],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while _get(f"{client}/health")[0] != 200:
            assert time.monotonic() < deadline, (self.root / "etcd.log").read_text()
            time.sleep(0.2)
        for node in self.nodes:
            self.start_node(node)
        while not (self.primary() is not None and self.sync_standby() is not None):
            exited = [
                n.name for n in self.nodes if n.proc is not None and n.proc.poll() is not None
            ]
            assert not exited and time.monotonic() < deadline, self.logs()
            time.sleep(0.5)

    def start_node(self, node: Node) -> None:
        """Starts (or restarts) a node's Patroni, which starts its PostgreSQL."""
        node.root.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(node.root, entry.pw_uid, entry.pw_gid)
        config = {
            "scope": SCOPE,
            "name": node.name,
            "restapi": {
                "listen": f"127.0.0.1:{node.rest_port}",
                "connect_address": f"127.0.0.1:{node.rest_port}",
            },
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd_port}"]},
            "bootstrap": {
                "dcs": {
                    # Patroni's floors: ttl 20 s, retry_timeout 3 s; a dead primary's leader
                    # key expires after ttl, then the synchronous standby is promoted.
                    "ttl": 20,
                    "loop_wait": 1,
                    "retry_timeout": 4,
                    "synchronous_mode": True,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "parameters": {
                            "synchronous_commit": "on",
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "wal_log_hints": "on",
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "max_connections": 200,
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}],
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    "host replication all 127.0.0.1/32 trust",
                ],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.data_dir),
                "bin_dir": str(PG_BIN),
                "pgpass": str(node.root / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres"},
                    "replication": {"username": "postgres"},
                },
                "parameters": {"unix_socket_directories": str(node.root)},
            },
            "log": {"level": "INFO"},
        }
        path = node.root / "patroni.yml"
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        with (node.root / "patroni.log").open("ab") as out:
            node.proc = subprocess.Popen(
                _as_postgres(["patroni", str(path)]),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def primary(self) -> Node | None:
        """The running primary, if there is one."""
        return next((n for n in self.nodes if n.role() == "primary"), None)

    def sync_standby(self) -> Node | None:
        """The synchronous standby, if there is one (from Patroni's /cluster view)."""
        for node in self.nodes:
            status, body = _get(f"http://127.0.0.1:{node.rest_port}/cluster")
            if status == 200:
                members = json.loads(body).get("members", [])
                for member in members:
                    if member.get("role") == "sync_standby" and member.get("state") in (
                        "running",
                        "streaming",
                    ):
                        return next(n for n in self.nodes if n.name == member["name"])
        return None

    def kill_machine(self, node: Node) -> None:
        """The node's machine dies: SIGKILL its postmaster, then its Patroni (so nothing
        restarts PostgreSQL there and the standby must take over)."""
        pid = node.postmaster_pid()
        assert pid is not None, "no postmaster to kill"
        os.kill(pid, signal.SIGKILL)
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait(timeout=10)

    def logs(self) -> str:
        """The tail of every log, for assertion messages."""
        parts = []
        for path in [self.root / "etcd.log", *(n.root / "patroni.log" for n in self.nodes)]:
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text()[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stops every node and etcd and deletes the folder."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()  # Patroni stops its PostgreSQL on SIGTERM
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(timeout=10)
            # A postmaster left by a killed Patroni: fast shutdown — only if that pid is still
            # this node's postmaster (a stale pid file's number may belong to anything now).
            pid = node.postmaster_pid()
            if pid is not None and _is_postmaster_of(pid, node.data_dir):
                os.kill(pid, signal.SIGINT)
        if self._etcd is not None:
            self._etcd.terminate()
            self._etcd.wait(timeout=10)
        time.sleep(0.5)
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str]) -> int:
    """``up``: start a cluster in a temporary folder, print its URL, and wait; SIGINT or SIGTERM
    tears it down."""
    if argv != ["up"]:
        print("usage: python -m tests.support.ha_cluster up", file=sys.stderr)
        return 2
    cluster = HaCluster()  # under the system temp folder, which the postgres user can traverse
    try:
        cluster.start()
        print(f"REALNAME_DATABASE_URL={cluster.url()}", flush=True)
        print(f"folder {cluster.root}; Ctrl-C stops the cluster", flush=True)
        # Blocked only now: the children started above keep the default handlers.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
