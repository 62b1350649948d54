"""Structured logging: one JSON object per line, no personal data."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    """Formats records as JSON; structured fields come from ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        """Renders one record as a single JSON line."""
        fields = getattr(record, "fields", None)
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return json_line(
            record.created,
            record.levelname.lower(),
            record.name,
            record.getMessage(),
            fields=fields if isinstance(fields, dict) else None,
            exc=exc,
        )


def json_line(
    created: float,
    level: str,
    logger: str,
    msg: str,
    *,
    fields: dict[str, Any] | None = None,
    exc: str | None = None,
) -> str:
    """The one JSON line format: time, level, logger, message, then the structured fields."""
    # Epoch seconds: formatting a calendar time costs as much as the rest of the line.
    out: dict[str, Any] = {"ts": round(created, 3), "level": level, "logger": logger, "msg": msg}
    if fields:
        out.update(fields)
    if exc is not None:
        out["exc"] = exc
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
            self.write_line(self.format(record))
            if record.levelno >= logging.WARNING:
                self.flush()
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """Buffers one already formatted line."""
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(line + "\n")

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
    _DIRECT[:] = [handler]


# The handler configure() installed; info_fields() writes to it directly while it is root's only
# handler (a test's capture handler, or any other configuration, takes the logging path).
_DIRECT: list[BufferedStreamHandler] = []


def info_fields(logger: logging.Logger, msg: str, fields: dict[str, Any]) -> None:
    """Logs one INFO line with structured fields, exactly as ``logger.info(msg, extra=...)`` would.

    The per-RPC line's LogRecord (creation, handler look-up, formatter dispatch) cost more than
    the JSON itself; when nothing but configure()'s handler would see the record, the line is
    formatted and buffered directly.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    for handler in _DIRECT:
        if _reaches_only(logger, handler):
            handler.write_line(json_line(time.time(), "info", logger.name, msg, fields=fields))
            return
    logger.info(msg, extra={"fields": fields})


def _reaches_only(logger: logging.Logger, handler: logging.Handler) -> bool:
    # A record from ``logger`` would pass no filter and reach ``handler`` alone, on root.
    node: logging.Logger | None = logger
    while node is not None and node is not logging.root:
        if node.handlers or node.filters or node.disabled or not node.propagate:
            return False
        node = node.parent
    root = logging.root
    return root.handlers == [handler] and not root.filters and not handler.filters
