"""`realname store sign-shipment --qr/--label`: the parcel's QR code and label, read back by a
decoder this project did not write (zxing-cpp), the SVGs rendered by Debian's chromium first."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zxingcpp
from cryptography.hazmat.primitives import serialization
from PIL import Image
from playwright.sync_api import Browser, sync_playwright

from registry.delivery.label import ERROR_LEVEL, LABEL_HEIGHT_MM, LABEL_WIDTH_MM
from registry.pki.keys import Passphrase, save_private_key
from tests.support.identities import msisdn, resident_id
from tests.support.label_camera import LABEL_CSS_PX, render_svg
from tests.support.server import realname_bin
from tests.system.test_dashboard import CHROMIUM, CHROMIUM_ARGS
from tests.unit.registry.delivery.support import ICCID, make_delivery

PASSPHRASE = "label-test-passphrase"
NUMBER = resident_id(515)
MSISDN = msisdn("138", 8077)
ENV = {**os.environ, "REALNAME_STORE_PASSPHRASE": PASSPHRASE}


@dataclass
class StoreFiles:
    key: Path
    cert: Path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> StoreFiles:
    """A store key (encrypted, as `store keygen` writes it) and its real authorization."""
    world = make_delivery(dt.datetime.now(dt.UTC))
    directory = tmp_path_factory.mktemp("store")
    key, cert = directory / "store.key", directory / "store.pem"
    save_private_key(key, world.store_key, Passphrase(PASSPHRASE))
    cert.write_bytes(world.good.public_bytes(serialization.Encoding.PEM))
    return StoreFiles(key, cert)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make browser does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def sign(store: StoreFiles, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            realname_bin(), "store", "sign-shipment", "--key", str(store.key),
            "--cert", str(store.cert), "--order", "订单-WEB-77", "--waybill", "SF1234567077",
            "--courier", "demo", "--iccid", ICCID, "--msisdn", MSISDN, "--operator", "cmcc",
            "--document-number-file", "-", *extra,
        ],
        check=False,
        input=NUMBER,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )  # fmt: skip


def decoded(image: Image.Image) -> list[zxingcpp.Barcode]:
    return [code for code in zxingcpp.read_barcodes(image) if code.format == zxingcpp.QRCode]


def test_png_qr_code_and_svg_label_decode_to_the_token(
    store: StoreFiles, browser: Browser, tmp_path: Path
) -> None:
    qr, label = tmp_path / "parcel.png", tmp_path / "label.svg"
    result = sign(store, "--qr", str(qr), "--label", str(label))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("RN1:")

    codes = decoded(Image.open(qr))
    assert [code.text for code in codes] == [token]
    assert codes[0].ec_level == ERROR_LEVEL

    svg = label.read_text("utf-8")
    assert f'width="{LABEL_WIDTH_MM}mm"' in svg and f'height="{LABEL_HEIGHT_MM}mm"' in svg
    for shown in ("SF1234567077", "订单-WEB-77", "cmcc", "138****8077", "demo"):
        assert shown in svg
    # Neither the full MSISDN nor the document number is on the label.
    assert MSISDN not in svg
    assert NUMBER not in svg and NUMBER[:17] not in svg
    # 100 x 150 mm at 96 px per inch (CSS pixels) is 378 x 567 px.
    image = render_svg(browser, label, *LABEL_CSS_PX)
    assert [code.text for code in decoded(image)] == [token]


def test_svg_qr_code_decodes_to_the_token(
    store: StoreFiles, browser: Browser, tmp_path: Path
) -> None:
    qr = tmp_path / "parcel.svg"
    result = sign(store, "--qr", str(qr))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    codes = decoded(render_svg(browser, qr, 400, 400))
    assert [code.text for code in codes] == [token]
    assert codes[0].ec_level == ERROR_LEVEL


@pytest.mark.parametrize(("option", "name"), [("--qr", "parcel.jpg"), ("--label", "label.png")])
def test_an_unwritten_format_is_refused_before_signing(
    store: StoreFiles, tmp_path: Path, option: str, name: str
) -> None:
    result = sign(store, option, str(tmp_path / name))
    assert result.returncode == 2
    assert "must end in" in result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []
