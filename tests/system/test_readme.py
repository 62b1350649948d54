"""The docs' walkthroughs (README and docs/*.md) work as written, against a real server on a free
port: grpcurl, errors, the registry, a delivery, the citizen, supervision."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image

from tests.support.docs import doc_block, run_block
from tests.support.server import dev_init, free_port, start_server_process


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    dev_init(data_dir)
    server = start_server_process(data_dir)
    yield data_dir, server.address
    assert server.stop() == 0


def test_readme_grpcurl_calls_work(served: tuple[Path, str]) -> None:
    data_dir, address = served
    result = run_block("grpcurl", data_dir, address)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "realname.v1.VerificationService" in out
    assert '"status": "SERVING"' in out
    assert '"eligible": true' in out
    assert '"state": "CARD_STATE_ACTIVE"' in out and '"state": "CARD_STATE_DEACTIVATED"' in out
    assert '"documentMasked"' in out or '"document_masked"' in out
    assert "11010519491231002X" not in out


def test_readme_error_example_prints_what_it_says(served: tuple[Path, str]) -> None:
    data_dir, address = served
    block = doc_block("grpcurl-error")
    prelude = doc_block("grpcurl").split("\n\n")[0] + "\n"
    result = run_block("grpcurl-error", data_dir, address, prelude=prelude)
    assert result.returncode != 0
    for line in re.findall(r"^# {1,3}(\S.*)$", block, re.M):
        assert line.strip() in result.stderr + result.stdout


def test_readme_registry_flow_works(tmp_path: Path) -> None:
    """From application to verification (docs/marketplaces.md), as written, against a server."""
    data_dir = tmp_path / "data"
    dev_init(data_dir)
    http = f"127.0.0.1:{free_port()}"
    # The last --http-address wins: the test needs to know where the HTTP side listens.
    server = start_server_process(data_dir, extra_args=["--http-address", http])
    try:
        result = run_block("registry", data_dir, server.address, http=http, timeout=180)
    finally:
        assert server.stop() == 0
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert '"status": "APPLICATION_STATUS_APPROVED"' in out
    assert '"reason": "VERDICT_REASON_AUTHORIZED"' in out
    assert '"reason": "VERDICT_REASON_REVOKED"' in out
    assert "verify-seller exit status 3" in out
    assert "shop-42.pem: OK" in out
    assert "shop-42.pem: good" in out and "shop-42.pem: revoked" in out
    assert "Lin Wei" not in server.log() and "0591-8888-0000" not in server.log()


def test_readme_delivery_flow_works(served: tuple[Path, str]) -> None:
    """The delivery, end to end (docs/couriers.md), as written, against `realname serve`."""
    data_dir, address = served
    result = run_block("delivery", data_dir, address, timeout=180)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert '"state": "CARD_STATE_PENDING_DELIVERY"' in out
    assert "RN1:" in out
    assert "RECIPIENT_MISMATCH" in out and "courier verify exit status 3" in out
    assert "queued confirmation" in out
    assert '"state": "CARD_STATE_ACTIVE"' in out
    # The parcel's QR code reads back (zxing-cpp) as the token the block printed.
    codes = zxingcpp.read_barcodes(Image.open(data_dir / "parcel-77.png"))
    assert len(codes) == 1 and codes[0].text.startswith("RN1:") and codes[0].text in out
    # The document number stays with the store and the door: not in the queue, not in the bundle.
    for kept in ("confirmations.jsonl", "bundle.json", "label-77.svg"):
        assert "11010519900307005X" not in (data_dir / kept).read_text()


def test_readme_citizen_flow_works(served: tuple[Path, str]) -> None:
    """The citizen lookup and dispute flow, as written: masked list, suspended, then resolved."""
    data_dir, address = served
    result = run_block("citizen", data_dir, address)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert '"msisdn_masked": "138****8301"' in out
    assert '"state": "DISPUTE_STATE_OPEN"' in out and '"suspension": "DISPUTED"' in out
    assert '"resolution": "DISPUTE_RESOLUTION_DEACTIVATED"' in out
    assert "110105199003070092" not in out


def test_readme_supervision_flow_works(served: tuple[Path, str]) -> None:
    """Suspension refuses, lifting allows; the report, audit query and verify work as written."""
    data_dir, address = served
    result = run_block("supervision", data_dir, address)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "activation refused" in out
    assert "OPERATOR_SUSPENDED_BY_REGULATOR" in result.stderr
    assert '"live_cards": "1"' in out and '"verified_cards": "1"' in out
    assert '"method": "/realname.v1.VerificationService/ActivateCard"' in out
    # The server anchors at start and every minute: the CLI may find nothing new to anchor.
    assert "anchored head" in out or "nothing new to anchor" in out
    assert "audit trail intact" in out and " 0 log anchors" not in out
    assert "110105199003070076" not in out + result.stderr
