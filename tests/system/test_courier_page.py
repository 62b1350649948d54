"""The courier's page at /courier/ in Debian's chromium at a phone's size (390 x 844): it keeps
a pasted trust bundle, shows each offline verdict of the shared delivery vectors in the courier's
words, clears the document number after every check and stores it nowhere, and switches between
Simplified Chinese (the default) and English. The browser's clock is fixed at each vector's check
time (the vectors' bundle is from 2026-06-01)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

from services.http.app import create_app
from services.http.courier import courier_page_routes
from tests.support.http import http_server
from tests.support.label_camera import label_video
from tests.support.paths import REPO_ROOT
from tests.system.test_dashboard import CHROMIUM, CHROMIUM_ARGS

VECTORS = REPO_ROOT / "tests" / "vectors" / "delivery"
PHONE = {"width": 390, "height": 844}


def vectors() -> dict[str, Any]:
    """The shared delivery vectors (cases by name) and the bundle's text."""
    doc = json.loads((VECTORS / "vectors.json").read_text())
    return {
        "cases": {c["name"]: c for c in doc["cases"]},
        "bundle": (VECTORS / "bundle.json").read_text(),
    }


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    """The courier page served by the service's HTTP app."""
    with http_server(create_app(lambda: True, courier_page_routes())) as url:
        yield url


def open_page(page: Page, origin: str, at: str) -> None:
    """Load the page with the browser's clock fixed at ``at``."""
    page.clock.set_fixed_time(at)
    page.goto(f"{origin}/courier/")
    page.wait_for_selector("body[data-ready='1']")


def check(page: Page, case: dict[str, Any]) -> str:
    """Paste the case's token and document, press the check button; the verdict's reason."""
    page.fill("#token", case["token"])
    page.select_option("#doc-type", str(case["document_type"]))
    page.fill("#doc-number", case["document_number"])
    page.evaluate("document.getElementById('verdict').removeAttribute('data-reason')")
    page.click("#verify")
    page.wait_for_selector("#verdict[data-reason]", timeout=60_000)
    return str(page.get_attribute("#verdict", "data-reason"))


def test_the_page_shows_each_verdict_in_the_couriers_words(origin: str) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make browser does)")
    data = vectors()
    cases = data["cases"]
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            open_page(page, origin, cases["ok"]["at"])
            assert page.locator("html").get_attribute("lang") == "zh-CN"
            assert page.text_content("#bundle-status") == "尚未载入信任包"
            page.click("text=粘贴信任包")
            page.fill("#bundle-text", data["bundle"])
            page.click("#bundle-load")
            page.fill("#courier", "sf-express")
            assert "有效至" in str(page.text_content("#bundle-status"))

            refusals = ["recipient_mismatch", "bad_signature_tampered", "seller_revoked"]
            refusals += ["seller_not_authorized_unknown_serial", "token_expired", "wrong_courier"]
            for name in ("ok", *refusals):
                assert check(page, cases[name]) == cases[name]["expect"]["verdict"], name
                # The number is gone from the form once checked.
                assert page.input_value("#doc-number") == ""
            assert page.get_attribute("#verdict", "class") == "stop"
            assert page.text_content("#verdict-title") == "不是本公司的包裹"
            assert check(page, cases["ok"]) == "OK"
            assert page.get_attribute("#verdict", "class") == "ok"
            assert page.text_content("#verdict-title") == "可以交付"
            assert page.is_visible("#confirm")

            page.click("#lang")
            page.wait_for_function("() => document.documentElement.lang === 'en'")
            assert page.locator("html").get_attribute("lang") == "en"
            assert page.text_content("#verdict-title") == "Hand it over"
            assert check(page, cases["recipient_mismatch"]) == "RECIPIENT_MISMATCH"
            assert page.text_content("#verdict-title") == "Wrong document"
            assert "Do not hand over" in str(page.text_content("#verdict-next"))
            # Large touch targets: every button is at least 48 CSS pixels high, none wider than
            # the phone.
            for box in page.eval_on_selector_all(
                "button",
                "bs => bs.filter(b => b.offsetParent).map(b => b.getBoundingClientRect().toJSON())",
            ):
                assert box["height"] >= 48 and box["right"] <= PHONE["width"]

            # The bundle (and the language) survive a reload from IndexedDB; past the bundle's
            # max age the page says so and refuses.
            open_page(page, origin, cases["stale_bundle"]["at"])
            assert page.locator("html").get_attribute("lang") == "en"
            assert "out of date" in str(page.text_content("#bundle-status"))
            assert check(page, cases["stale_bundle"]) == "STALE_BUNDLE"
            assert page.get_attribute("#verdict", "class") == "wait"

            # Nothing the page keeps holds a document number.
            kept = page.evaluate(
                """() => new Promise((resolve) => {
                  const open = indexedDB.open("realname-courier");
                  open.onsuccess = () => {
                    const t = open.result.transaction(["kv", "queue"]);
                    const kv = t.objectStore("kv").getAll(), q = t.objectStore("queue").getAll();
                    t.oncomplete = () => resolve(JSON.stringify([kv.result, q.result,
                      Object.entries(localStorage), Object.entries(sessionStorage)]));
                  };
                })"""
            )
        finally:
            browser.close()
    assert problems == []
    numbers = {c["document_number"] for c in cases.values()}
    assert not [n for n in numbers if n in kept], "a document number was kept"


def test_once_loaded_the_page_opens_and_verifies_offline(origin: str) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make browser does)")
    data = vectors()
    ok = data["cases"]["ok"]
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(str(error)))
            open_page(page, origin, ok["at"])
            manifest = page.evaluate(
                "async () => (await fetch(document.querySelector('link[rel=manifest]').href))"
                ".json()"
            )
            assert manifest["display"] == "standalone" and manifest["start_url"] == "./"
            # The worker has cached every file once it controls the page.
            page.wait_for_function(
                "() => navigator.serviceWorker.controller !== null", timeout=30_000
            )
            page.click("text=粘贴信任包")
            page.fill("#bundle-text", data["bundle"])
            page.click("#bundle-load")
            page.fill("#courier", "sf-express")
            page.wait_for_function(
                "document.getElementById('bundle-status').textContent.includes('有效至')"
            )

            context.set_offline(True)
            assert page.evaluate("navigator.onLine") is False
            page.reload()
            page.wait_for_selector("body[data-ready='1']")
            assert "有效至" in str(page.text_content("#bundle-status"))
            assert check(page, data["cases"]["recipient_mismatch"]) == "RECIPIENT_MISMATCH"
            assert check(page, ok) == "OK"
            # A fresh tab, still offline, opens from the worker too.
            second = context.new_page()
            second.clock.set_fixed_time(ok["at"])
            second.goto(f"{origin}/courier/")
            second.wait_for_selector("body[data-ready='1']")
            assert check(second, data["cases"]["seller_revoked"]) == "SELLER_REVOKED"
        finally:
            browser.close()
    assert problems == []


def test_the_camera_reads_the_labels_qr_code(origin: str, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make browser does)")
    data = vectors()
    ok = data["cases"]["ok"]
    problems: list[str] = []
    with sync_playwright() as playwright:
        # The camera films the store's printed label (label_svg, drawn by chromium).
        plain = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            video = label_video(plain, ok["token"], tmp_path)
        finally:
            plain.close()
        fake_camera = [
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}",
        ]
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *fake_camera]
        )
        try:
            context = browser.new_context(viewport=PHONE, permissions=["camera"])
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(str(error)))
            open_page(page, origin, ok["at"])
            page.click("text=粘贴信任包")
            page.fill("#bundle-text", data["bundle"])
            page.click("#bundle-load")
            page.fill("#courier", "sf-express")
            # Debian's chromium has no BarcodeDetector on Linux: the page decodes with jsQR.
            assert page.evaluate("() => 'BarcodeDetector' in window") is False
            page.click("#scan")
            page.wait_for_function(
                "() => document.getElementById('token').value.startsWith('RN1:')", timeout=60_000
            )
            assert page.input_value("#token") == ok["token"]
            page.select_option("#doc-type", str(ok["document_type"]))
            page.fill("#doc-number", ok["document_number"])
            page.click("#verify")
            page.wait_for_selector("#verdict[data-reason]", timeout=60_000)
            assert page.get_attribute("#verdict", "data-reason") == "OK"
        finally:
            browser.close()
    assert problems == []
