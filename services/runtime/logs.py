"""Structured logging: one JSON object per line, no personal data."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from typing import Any


class JsonFormatter(logging.Formatter):
    """Formats records as JSON; structured fields come from ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        """Renders one record as a single JSON line."""
        # Epoch seconds: formatting a calendar time costs as much as the rest of the line.
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes lines to a buffered stream, flushed every ``interval`` seconds and on warnings.

    A flush per line (what StreamHandler does) was most of the cost of the per-RPC log line.
    At most ``interval`` seconds of INFO lines can be lost if the process is killed.
    """

    def __init__(self, stream: io.TextIOBase, interval: float = 0.2) -> None:
        super().__init__(stream)
        self._stop = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_periodically, args=(interval,), name="log-flush", daemon=True
        )
        self._flusher.start()

    def _flush_periodically(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        """Buffers one formatted line; flushes at once for warnings and errors."""
        try:
            line = self.format(record) + "\n"
            with self.lock:  # type: ignore[union-attr]
                self.stream.write(line)
            if record.levelno >= logging.WARNING:
                self.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        """Stops the flusher and flushes what is left."""
        self._stop.set()
        self.flush()
        super().close()


def configure(level: str = "INFO") -> None:
    """Sends JSON lines to stderr at ``level``."""
    # A private, block-buffered writer on stderr's descriptor: sys.stderr is line-buffered.
    stream = io.TextIOWrapper(
        open(sys.stderr.fileno(), "wb", buffering=1 << 16, closefd=False),  # noqa: SIM115
        encoding="utf-8",
        write_through=False,
    )
    # The JSON lines name no source line, thread or process: looking them up for every record
    # (a stack walk for the caller) was a quarter of the per-RPC log line's cost.
    logging._srcfile = None  # the logging HOWTO's documented switch ("Optimization")
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BufferedStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
