"""The courier's JavaScript verifier in Debian's chromium (the browser, not Node): loaded as the
page will load it (script tags and an import map), it gives every shared delivery vector its
expected verdict, with WebCrypto's Ed25519, ECDSA and SHA-256."""

from __future__ import annotations

import functools
import http.server
import statistics
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from tests.support.paths import REPO_ROOT
from tests.system.test_dashboard import CHROMIUM, CHROMIUM_ARGS


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test's output to its own lines."""


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    """An HTTP server rooted at the repository (ES modules do not load from file:// URLs)."""
    handler = functools.partial(_Quiet, directory=str(REPO_ROOT))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()
    server.server_close()


def test_the_browser_gives_every_vector_its_verdict(origin: str) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make browser does)")
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"{origin}/tests/js/browser_harness.html")
            page.wait_for_function("window.results !== undefined", timeout=120_000)
            results = page.evaluate("window.results")
        finally:
            browser.close()
    assert problems == []
    assert len(results) >= 27
    disagree = [
        name
        for name, got, stale, want, want_stale, _ in results
        if (got, stale) != (want, want_stale)
    ]
    assert disagree == []
    # The recipient check (Argon2id, 19 MiB) dominates an OK verdict; reported, not asserted.
    ok_ms = [ms for _, got, _, _, _, ms in results if got == "OK"]
    print(f"browser OK verdict: median {statistics.median(ok_ms):.0f} ms over {len(ok_ms)}")
