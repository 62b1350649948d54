"""The courier's app end to end in Debian's chromium at a phone's size, served by the service's
mTLS listener to the courier company's client certificate: the bundle downloaded, the network
cut, the page reloaded from its service worker, a revoked store refused, the camera reads the
token from the parcel's printed label (chromium's fake capture device fed with the label's
image), the wrong document refused, the right one accepted and the handover queued; back online
the queue syncs and the card is then ACTIVE through GetCard. Past the bundle's max age the
page refuses (STALE_BUNDLE).

Screenshots of the OK and refused screens go to tests/artifacts/ (and into docs/ with
REALNAME_UPDATE_DOCS_SCREENSHOT=1)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from registry.delivery.token import encode_text
from services.domain.pseudonym import Pseudonymizer
from services.proto.realname.v1 import registry_pb2 as rpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage.database import Database
from tests.integration.test_delivery_rpc import RECIPIENT, STRANGER, card_state, new_store, sell
from tests.integration.test_delivery_rpc import token_for as signed_token
from tests.support.courier import Served, courier_served
from tests.support.label_camera import label_video
from tests.support.paths import REPO_ROOT
from tests.system.test_dashboard import CHROMIUM, CHROMIUM_ARGS

PHONE = {"width": 390, "height": 844}
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"


@pytest.fixture
def served(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> Iterator[Served]:
    """The registry and the mTLS listener with the courier's page and API, as serve wires them."""
    with courier_served(db, pki_dir, pseudonymizer, tmp_path / "data") as served:
        yield served


def check(page: Page, token: str, number: str) -> str:
    """Paste a token and a resident ID number, press the check button; the verdict's reason."""
    page.fill("#token", token)
    page.select_option("#doc-type", "1")
    page.fill("#doc-number", number)
    page.evaluate("() => document.getElementById('verdict').removeAttribute('data-reason')")
    page.click("#verify")
    page.wait_for_selector("#verdict[data-reason]", timeout=60_000)
    return str(page.get_attribute("#verdict", "data-reason"))


def shot(page: Page, name: str) -> None:
    """Keep a screenshot of the page (and refresh the docs' copy when asked)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    if os.environ.get("REALNAME_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(ARTIFACTS / name, REPO_ROOT / "docs" / name)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_offline_check_queue_and_sync_activate_the_card(served: Served, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make browser does)")
    harness = served.harness
    store = new_store(harness, "app-1")
    card = sell(harness, store, 61)
    token = encode_text(signed_token(store, card))
    revoked = new_store(harness, "app-2")
    revoked_card = sell(harness, revoked, 62)
    revoked_token = encode_text(signed_token(revoked, revoked_card))
    harness.registry_service("operator-cmcc").RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(serial=revoked.serial)
    )  # before the bundle is made
    clients = harness.pki_dir / "clients"
    problems: list[str] = []
    with sync_playwright() as playwright:
        # The dev transport CA is not in chromium's store, and a service worker does not
        # register over a certificate error that ignore_https_errors lets pages past.
        args = [*CHROMIUM_ARGS, "--ignore-certificate-errors"]
        # The camera films the parcel's printed label (label_svg, as `store sign-shipment
        # --label` writes it, drawn by chromium).
        plain = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            video = label_video(plain, token, tmp_path)
        finally:
            plain.close()
        args += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={video}"]
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            context = browser.new_context(
                viewport=PHONE,
                is_mobile=True,
                has_touch=True,
                ignore_https_errors=True,
                permissions=["camera"],
                client_certificates=[
                    {
                        "origin": served.url,
                        "certPath": str(clients / "courier-demo.pem"),
                        "keyPath": str(clients / "courier-demo.key"),
                    }
                ],
            )
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(f"{served.url}/courier/")
            page.wait_for_selector("body[data-ready='1']")
            page.wait_for_function("() => navigator.serviceWorker.controller !== null")
            page.click("#bundle-fetch")
            page.wait_for_function(
                "() => document.getElementById('bundle-status').textContent.includes('已从服务器')"
            )
            assert page.input_value("#courier") == "demo"  # named by the certificate
            page.fill("#staff", "staff-61")

            context.set_offline(True)
            page.reload()
            page.wait_for_selector("body[data-ready='1']")
            assert "有效至" in str(page.text_content("#bundle-status"))
            assert check(page, revoked_token, RECIPIENT) == "SELLER_REVOKED"
            page.fill("#token", "")
            page.click("#scan")  # offline too: the decoder is cached with the page
            page.wait_for_function(
                "() => document.getElementById('token').value.startsWith('RN1:')", timeout=60_000
            )
            assert page.input_value("#token") == token
            assert check(page, token, STRANGER) == "RECIPIENT_MISMATCH"
            assert page.text_content("#verdict-title") == "证件不符"
            # The screenshots are in English: the test machine has no CJK font.
            page.click("#lang")
            page.wait_for_function("() => document.documentElement.lang === 'en'")
            assert page.text_content("#verdict-title") == "Wrong document"
            shot(page, "courier-refused.png")
            assert check(page, token, RECIPIENT) == "OK"
            assert page.text_content("#verdict-title") == "Hand it over"
            shot(page, "courier-ok.png")
            page.click("#lang")
            page.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
            page.click("#confirm")
            page.wait_for_function(
                "() => document.getElementById('queue-status').textContent.includes('1 条交付')"
            )
            assert card_state(harness, card) == vpb.CARD_STATE_PENDING_DELIVERY

            context.set_offline(False)  # the page syncs when the browser is online again
            page.wait_for_function(
                "() => document.getElementById('queue-status').textContent.includes('已同步 1 条')",
                timeout=60_000,
            )
            assert card_state(harness, card) == vpb.CARD_STATE_ACTIVE

            # Past the bundle's max age (a day) the page says so and refuses to check.
            page.clock.set_fixed_time(dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
            page.reload()
            page.wait_for_selector("body[data-ready='1']")
            assert "过期" in str(page.text_content("#bundle-status"))
            assert check(page, token, RECIPIENT) == "STALE_BUNDLE"
        finally:
            browser.close()
    assert problems == []
