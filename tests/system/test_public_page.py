"""The public registry page in a real headless browser (Debian's chromium driven by playwright)
against a real `realname serve`: search by shop, name and credit code, a revocation shown
plainly, the per-operator list, and a log-index link whose proof verifies offline."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from registry.checkpoint import open_checkpoint
from registry.log.entries import Issuance, decode_entry
from registry.merkle import leaf_hash, verify_inclusion
from registry.note import Ed25519Verifier, parse_verifier_key
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import registry_pb2 as rpb
from services.proto.realname.v1 import registry_pb2_grpc as rgrpc
from tests.support.pki import channel
from tests.support.registry import CREDIT_CODES, application
from tests.support.server import ServerProcess, free_port, realname_bin, start_server_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
HOSTILE_NAME = "Browser Revoked <img src=x onerror=alert(1)> & Co"


@dataclass
class Site:
    """A served registry: its HTTP base URL, gRPC channels and log verifier."""

    server: ServerProcess
    url: str
    pki_dir: Path
    verifier: Ed25519Verifier
    channels: dict[str, grpc.Channel] = field(default_factory=dict)

    def registry(self, principal: str) -> rgrpc.RegistryServiceStub:
        """A RegistryService stub as ``principal`` (one cached channel per principal)."""
        if principal not in self.channels:
            self.channels[principal] = channel(self.server.address, self.pki_dir, principal)
        return rgrpc.RegistryServiceStub(self.channels[principal])

    def issue(self, operator: str, request: rpb.SubmitApplicationRequest) -> rpb.Authorization:
        """Submit (as the marketplace), approve and issue through the gRPC API."""
        submitted = self.registry("marketplace-demo").SubmitApplication(request)
        desk = self.registry(f"operator-{operator}")
        app_id = submitted.application.application_id
        desk.ReviewApplication(
            rpb.ReviewApplicationRequest(
                application_id=app_id,
                decision=rpb.REVIEW_DECISION_APPROVE,
                reason="qualifications complete",
                assessment="graded protection level 3 report checked",
            )
        )
        return desk.IssueAuthorization(
            rpb.IssueAuthorizationRequest(application_id=app_id)
        ).authorization

    def proof(self, serial: str) -> dict[str, object]:
        """GET /proof/<serial> as JSON."""
        with urllib.request.urlopen(f"{self.url}/proof/{serial}", timeout=10) as reply:
            body: dict[str, object] = json.load(reply)
        return body

    def wait_logged(self, serial: str, timeout: float = 30) -> None:
        """Wait until the sequencer has put the serial's certificate under a checkpoint."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proof(serial)["status"] == "INCLUDED":
                return
            time.sleep(0.2)
        raise AssertionError(f"{serial} was never logged:\n{self.server.log()}")


def realname(*args: str) -> str:
    result = subprocess.run(
        [realname_bin(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    data_dir = tmp_path / "data"
    realname("dev-init", "--data-dir", str(data_dir))
    verifier = parse_verifier_key(realname("log", "key", "--data-dir", str(data_dir)).strip())
    assert isinstance(verifier, Ed25519Verifier)
    port = free_port()
    server = start_server_process(data_dir, extra_args=["--http-address", f"127.0.0.1:{port}"])
    served = Site(server, f"http://127.0.0.1:{port}", data_dir / "dev-pki", verifier)
    yield served
    for open_channel in served.channels.values():
        open_channel.close()
    assert server.stop() == 0, server.log()


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def search(page: Page, form: str, **values: str) -> None:
    for name, value in values.items():
        page.fill(f"#{form} input[name={name}]", value)
    page.click(f"#{form} button[type=submit]")
    page.wait_for_load_state()


def row(page: Page, serial: str) -> dict[str, str]:
    cells = page.locator(f"tr.authorization[data-serial='{serial}'] td")
    names = ("operator", "store", "scope", "validity", "status", "serial", "log")
    assert cells.count() == len(names)
    return {name: cells.nth(i).inner_text() for i, name in enumerate(names)}


def test_public_page_searches_shows_revocations_and_links_verifiable_proofs(
    site: Site, browser: Browser
) -> None:
    active = site.issue("cmcc", application(operator="cmcc", shop_id="browser-ok"))
    hostile = application(
        operator="cucc",
        shop_id="browser-revoked",
        credit_code=CREDIT_CODES[1],
        card_types=(cpb.CARD_TYPE_PERSONAL, cpb.CARD_TYPE_INDUSTRY),
        provinces=("44",),
    )
    hostile.store.legal_name = HOSTILE_NAME
    revoked = site.issue("cucc", hostile)
    site.registry("operator-cucc").RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(
            serial=revoked.serial,
            reason=rpb.REVOCATION_REASON_CESSATION_OF_OPERATION,
            comment="desk note that is never published",
        )
    )
    site.wait_logged(active.serial)
    site.wait_logged(revoked.serial)

    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(site.url + "/")
    assert page.title() == "Store authorization registry"

    search(page, "by-shop", marketplace="demo", shop_id="browser-ok")
    shown = row(page, active.serial)
    assert shown["operator"] == "cmcc"
    assert "Fuzhou Demo Telecom Equipment Co., Ltd." in shown["store"]
    assert "demo/browser-ok" in shown["store"]
    assert "personal" in shown["scope"] and "(11)" in shown["scope"] and "(35)" in shown["scope"]
    assert shown["status"] == "ACTIVE"
    assert shown["serial"] == active.serial
    assert shown["log"].startswith("#")

    search(page, "by-name", name="Browser Revoked")
    shown = row(page, revoked.serial)
    assert shown["operator"] == "cucc"
    assert HOSTILE_NAME in shown["store"]  # shown as text, never as markup
    assert page.locator("img").count() == 0
    assert shown["status"].startswith("REVOKED on ")
    assert "cessation of operation" in shown["status"]
    assert "industry" in shown["scope"] and "(44)" in shown["scope"]
    assert "never published" not in page.content()

    search(page, "by-credit-code", credit_code=CREDIT_CODES[1])
    assert row(page, revoked.serial)["status"].startswith("REVOKED")
    assert page.locator(f"tr[data-serial='{active.serial}']").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "public-registry.png"), full_page=True)

    page.click(f"tr[data-serial='{revoked.serial}'] td.operator a")
    page.wait_for_load_state()
    assert page.url == f"{site.url}/operators/cucc"
    assert row(page, revoked.serial)["operator"] == "cucc"

    search(page, "by-name", name="<script>alert(1)</script>")
    assert page.input_value("#by-name input[name=name]") == "<script>alert(1)</script>"
    assert page.locator("#no-results").count() == 1
    assert page.locator("script").count() == 0

    search(page, "by-shop", marketplace="demo", shop_id="browser-ok")
    index = int(row(page, active.serial)["log"].removeprefix("#"))
    page.click(f"tr[data-serial='{active.serial}'] a.log-index")
    page.wait_for_load_state()
    assert page.url == f"{site.url}/proof/{active.serial}"
    proof = json.loads(page.locator("body").inner_text())
    assert dialogs == []

    assert proof["status"] == "INCLUDED" and proof["leaf_index"] == index
    opened = open_checkpoint(
        proof["checkpoint"].encode(), origin=site.verifier.name, log_verifier=site.verifier
    )
    entry = base64.b64decode(proof["entry"])
    verify_inclusion(
        leaf_hash(entry),
        index,
        proof["tree_size"],
        [base64.b64decode(h) for h in proof["hashes"]],
        opened.checkpoint.root_hash,
    )
    decoded = decode_entry(entry)
    assert isinstance(decoded, Issuance)
    assert decoded.certificate == active.certificate


def test_unknown_operator_and_serial_are_not_found(site: Site) -> None:
    for path in ("/operators/NOT-AN-OPERATOR", "/proof/zz", "/proof/abcdef"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(site.url + path, timeout=10)
        assert caught.value.code == 404
        caught.value.close()
