"""Loaded by the server under callgrind (bench.bench_instructions): zero or dump on request.

A daemon thread watches the marks directory: a file ``zero`` or ``dump`` there asks for that
client request; the thread makes it, removes the request and writes ``zeroed`` or ``dumped``.
(A signal would reach whichever thread the kernel picks, and the main thread, blocked in a wait,
might not run its Python handler for a long time.)
"""

import ctypes
import os
import threading
import time
from pathlib import Path

_hooks = ctypes.CDLL(os.environ["REALNAME_CALLGRIND_HOOKS"])
_marks = Path(os.environ["REALNAME_CALLGRIND_MARKS"])


def _watch() -> None:
    while True:
        for request, call, ack in (
            ("zero", _hooks.realname_callgrind_zero, "zeroed"),
            ("dump", _hooks.realname_callgrind_dump, "dumped"),
        ):
            if (_marks / request).exists():
                call()
                (_marks / request).unlink()
                (_marks / ack).touch()
        time.sleep(0.05)


threading.Thread(target=_watch, name="callgrind-requests", daemon=True).start()
