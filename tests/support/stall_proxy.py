"""A TCP proxy in front of PostgreSQL that can go silent: paused, it stops forwarding bytes but
keeps every connection open, as a stalled server or a hung network device would."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from pathlib import Path

from sqlalchemy.engine import make_url


def _upstream_address(url: str) -> tuple[int, str | tuple[str, int]]:
    """(address family, address) of the server a SQLAlchemy PostgreSQL URL names."""
    parsed = make_url(url)
    socket_dir = parsed.query.get("host")
    port = parsed.port or 5432
    if isinstance(socket_dir, str) and socket_dir.startswith("/"):
        return socket.AF_UNIX, str(Path(socket_dir) / f".s.PGSQL.{port}")
    return socket.AF_INET, (parsed.host or "127.0.0.1", port)


class StallProxy:
    """Forwards 127.0.0.1:<port> to the server of ``url``; ``pause`` makes it silent."""

    def __init__(self, url: str) -> None:
        self._family, self._upstream = _upstream_address(url)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="stall-proxy", daemon=True).start()

    def url(self, url: str) -> str:
        """``url`` rewritten to reach its database through this proxy."""
        parsed = make_url(url)
        query = {k: v for k, v in parsed.query.items() if k not in ("host", "port")}
        proxied = parsed.set(host="127.0.0.1", port=self.port, query=query)
        return proxied.render_as_string(hide_password=False)

    def pause(self) -> None:
        """Stops forwarding in both directions; connections stay open and unanswered."""
        self._forwarding.clear()

    def resume(self) -> None:
        """Forwards again (what was sent meanwhile is delivered now)."""
        self._forwarding.set()

    def close(self) -> None:
        """Closes the listener and every connection."""
        self._closed.set()
        self._forwarding.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(self._family, socket.SOCK_STREAM)
            try:
                upstream.connect(self._upstream)
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                self._forwarding.wait()
                readable, _, _ = select.select([src], [], [], 0.05)
                if not readable or not self._forwarding.is_set():
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):
            # The other direction (or close) shut the pair; select() on a closed socket raises
            # ValueError. Either way this direction is done.
            pass
        finally:
            for sock in (src, dst):
                # Already shut down when the other direction ended first.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
