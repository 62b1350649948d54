"""The courier's verification in the browser next to the Python offline verifier's, same run.

Issue 15: ``make bench`` reports the in-browser verification time per token beside the Python
one. Both verify the same tokens against the same bundle, the shared delivery vectors
(``tests/vectors/delivery/``): the JavaScript verifier (``services/http/static/courier/
verifier.mjs`` with its vendored libraries, loaded as the courier's page loads them, by
``bench/courier_browser.html``) in the headless Debian chromium the browser tests drive with
playwright, and ``registry.delivery.offline.OfflineVerifier`` in this process.

First one untimed pass over every vector on each side checks that both give every vector its
expected verdict (a bench of a verifier that disagrees would time the wrong thing). Then, in
alternating rounds (Python, then the browser) so that a shared machine's drift hits both alike,
every OK vector is verified once per round on each side; the figure is the median wall time
per token of each side, and their ratio. An OK verdict runs every check (signature, chain, CRLs,
checkpoint, inclusion proof, Argon2id recipient commitment); the Argon2id is its largest part.
Both verifiers keep what a bundle allows them to check once (the checkpoint, the CRLs), so the
bundle's opening time is printed apart. Wall time on both sides: the browser's CPU time is
not observable from here.

Run: ``.venv/bin/python -m bench.bench_courier_browser [--rounds N] [--json]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import http.server
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from playwright.sync_api import sync_playwright

from tests.support.delivery_vectors import OUT_DIR, load, verdict_of, verifier_of
from tests.support.paths import REPO_ROOT
from tests.system.test_dashboard import CHROMIUM, CHROMIUM_ARGS

PAGE = "/bench/courier_browser.html"
Result = tuple[str, str, bool, float]
"""One verification: vector name, verdict, stale_bundle flag, milliseconds."""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """The bench prints its own lines only."""


@contextmanager
def repository_origin() -> Iterator[str]:
    """An HTTP server rooted at the repository (ES modules do not load from file:// URLs)."""
    handler = functools.partial(_Quiet, directory=str(REPO_ROOT))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def python_pass(verifier: Any, cases: list[dict[str, Any]]) -> list[Result]:
    """Verifies each case once with the Python offline verifier, timed."""
    out = []
    for case in cases:
        start = time.perf_counter()
        verdict, stale = verdict_of(verifier, case)
        out.append((case["name"], verdict, stale, (time.perf_counter() - start) * 1000))
    return out


def disagreements(results: list[Result], cases: list[dict[str, Any]]) -> list[str]:
    """The vectors whose verdict is not the expected one (names only)."""
    expected = {c["name"]: (c["expect"]["verdict"], c["expect"]["stale_bundle"]) for c in cases}
    return [name for name, got, stale, _ in results if (got, stale) != expected[name]]


def run(rounds: int) -> dict[str, Any]:
    """Measures both verifiers; returns the figures (see the module docstring)."""
    bundle_json, document, _ = load(OUT_DIR)
    cases: list[dict[str, Any]] = document["cases"]
    ok_cases = [c for c in cases if c["expect"]["verdict"] == "OK"]
    start = time.perf_counter()
    verifier = verifier_of(bundle_json, document)
    python_open_ms = (time.perf_counter() - start) * 1000
    python_ms: list[float] = []
    browser_ms: list[float] = []
    with repository_origin() as origin, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(origin + PAGE)
            page.wait_for_function("window.ready === true", timeout=120_000)
            browser_open_ms = float(page.evaluate("window.openMs"))
            # The untimed agreement pass (also the warm-up of both sides).
            wrong = [
                f"python: {name}" for name in disagreements(python_pass(verifier, cases), cases)
            ]
            first = page.evaluate("cases => window.timed(cases)", cases)
            wrong += [f"browser: {name}" for name in disagreements(first, cases)]
            for _ in range(rounds):
                python_ms += [ms for *_, ms in python_pass(verifier, ok_cases)]
                timed = page.evaluate("cases => window.timed(cases)", ok_cases)
                wrong += [f"browser: {name}" for name in disagreements(timed, ok_cases)]
                browser_ms += [ms for *_, ms in timed]
            version = browser.version
        finally:
            browser.close()
    python_median = statistics.median(python_ms)
    browser_median = statistics.median(browser_ms)
    return {
        "tokens_per_side": len(python_ms),
        "ok_vectors": len(ok_cases),
        "vectors_agreeing": len(cases) - len({w.split(": ", 1)[1] for w in wrong}),
        "vectors": len(cases),
        "disagreements": wrong,
        "page_errors": errors,
        "python_ms_median": python_median,
        "python_ms_min": min(python_ms),
        "browser_ms_median": browser_median,
        "browser_ms_min": min(browser_ms),
        "ratio_browser_to_python": browser_median / python_median,
        "python_bundle_open_ms": python_open_ms,
        "browser_bundle_open_ms": browser_open_ms,
        "chromium": version,
        "load_average": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    """Prints the figures; exit 1 if a verifier disagreed with a vector or the page failed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds over the OK vectors")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing: apt-get install chromium (make browser does)")
        return 1
    figures = run(args.rounds)
    failed = bool(figures["disagreements"] or figures["page_errors"])
    if args.json:
        print(json.dumps(figures))
        return 1 if failed else 0
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"courier verification per token, browser vs Python ({when},"
        f" load average {figures['load_average']:.1f}, headless chromium {figures['chromium']})"
    )
    print(
        f"  OK tokens timed per side             {figures['tokens_per_side']:10d}"
        f"  ({figures['ok_vectors']} OK vectors x {args.rounds} rounds, alternating)"
    )
    print(
        f"  browser (verifier.mjs, WebCrypto)    {figures['browser_ms_median']:10.1f} ms median"
        f" (min {figures['browser_ms_min']:.1f})"
    )
    print(
        f"  Python (registry.delivery.offline)   {figures['python_ms_median']:10.1f} ms median"
        f" (min {figures['python_ms_min']:.1f})"
    )
    print(f"  ratio browser / Python               {figures['ratio_browser_to_python']:10.2f}")
    print(
        f"  bundle opened in                     {figures['browser_bundle_open_ms']:10.1f} ms"
        f" browser, {figures['python_bundle_open_ms']:.1f} ms Python"
    )
    print(f"  vectors agreeing with their verdict  {figures['vectors_agreeing']:10d}"
          f" of {figures['vectors']}")  # fmt: skip
    for problem in figures["disagreements"] + figures["page_errors"]:
        print(f"!!! {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
