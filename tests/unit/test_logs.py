"""The JSON log lines: the per-RPC fast path writes exactly what the logging path would."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

import pytest

from services.runtime import logs


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    """configure()'s handler, writing to a string buffer; the root logger restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    logs.configure("INFO")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logs.BufferedStreamHandler)
    handler.setStream(buffer)
    yield buffer
    handler.close()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    logs._DIRECT.clear()


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """configure()'s handler as root's only one, as in `realname serve` (pytest adds its own
    capture handlers for each test phase, so this runs inside the test)."""
    root = logging.getLogger()
    others = [h for h in root.handlers if not isinstance(h, logs.BufferedStreamHandler)]
    for handler in others:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in others:
            root.addHandler(handler)


FIELDS = {"event": "rpc", "method": "/realname.v1.X/Y", "principal": "operator:o", "code": "OK"}


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    logging.getLogger().handlers[0].flush()
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_fast_path_writes_the_same_line_as_logging(configured: io.StringIO) -> None:
    log = logging.getLogger("realname.test.fast")
    with alone():
        assert logs._reaches_only(log, logging.getLogger().handlers[0])
        logs.info_fields(log, "rpc", FIELDS)
        log.info("rpc", extra={"fields": FIELDS})
    fast, slow = _lines(configured)
    assert fast.pop("ts") == pytest.approx(slow.pop("ts"), abs=5)
    assert fast == slow == {"level": "info", "logger": "realname.test.fast", "msg": "rpc", **FIELDS}


def test_other_handlers_still_get_the_record(
    configured: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    # A capture handler (or any other configuration) must see the line: the logging path runs.
    log = logging.getLogger("realname.test.captured")
    with caplog.at_level(logging.INFO):
        logs.info_fields(log, "rpc", FIELDS)
    assert [getattr(r, "fields", None) for r in caplog.records] == [FIELDS]
    assert [line["msg"] for line in _lines(configured)] == ["rpc"]


def test_a_filter_on_the_way_is_honoured(configured: io.StringIO) -> None:
    log = logging.getLogger("realname.test.filtered")
    log.addFilter(lambda record: False)
    try:
        with alone():
            logs.info_fields(log, "rpc", FIELDS)
    finally:
        log.filters.clear()
    assert _lines(configured) == []


def test_below_the_level_nothing_is_written(configured: io.StringIO) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    with alone():
        logs.info_fields(logging.getLogger("realname.test.quiet"), "rpc", FIELDS)
    assert _lines(configured) == []
