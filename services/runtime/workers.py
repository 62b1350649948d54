"""Several serving processes on one port (SO_REUSEPORT), forked before gRPC or threads start.

gRPC's Python server cannot be forked once started (grpc/examples/python/multiprocessing), and
one process is held to one core by the GIL; so the parent forks N workers first, each builds
its own database pool and server on the shared port, and the kernel spreads connections over
them. The parent only forwards SIGTERM/SIGINT and reports the workers' exit codes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable

log = logging.getLogger("realname.workers")


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket with SO_REUSEPORT, so every worker can bind the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def run_workers(count: int, serve_one: Callable[[int], int]) -> int:
    """Forks ``count`` workers running ``serve_one(index)``; returns 0 only if all exit 0."""
    children: dict[int, int] = {}
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker: never return into the parent's code
            code = 70  # EX_SOFTWARE, unless serve_one says otherwise
            try:
                code = serve_one(index)
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = index

    def forward(signum: int, _frame: object) -> None:
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                children.pop(pid, None)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    while children:
        pid, status = os.wait()
        if pid not in children:
            continue
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            log.error("worker exited", extra={"fields": {"worker": index, "code": code}})
            worst = worst or (code if code > 0 else 1)
            # One worker down means the port serves at reduced capacity: stop the others too,
            # so a supervisor restarts the whole service.
            forward(signal.SIGTERM, None)
    return worst
