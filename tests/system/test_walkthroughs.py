"""The operators' walkthroughs in docs/operators.md, run as written against `realname serve`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.docs import doc_block, run_block
from tests.support.server import (
    dev_init,
    start_server_process,
    wait_serving,
)


def test_readme_agents_flow_works(tmp_path: Path) -> None:
    """The agents flow (docs/operators.md), as written, against `realname serve` (dev-init)."""
    data_dir = tmp_path / "data"
    dev_init(data_dir)
    server = start_server_process(data_dir)
    try:
        result = run_block("agents", data_dir, server.address, timeout=180)
    finally:
        assert server.stop() == 0
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "SUB_AGENT_NOT_ALLOWED" in out and "register exit status 1" in out
    assert "DOCUMENT_AT_CAP" in out and "1101**********1010" in out
    assert "AGENT_SUSPENDED" in out and "activate exit status" in out
    assert "kiosk-0100,agent-1,ACTIVE,5,1,DOCUMENT_AT_CAP=1," in out
    assert "110105198506121010" not in out and "11010519491231002X" not in out


def test_readme_industry_flow_works(tmp_path: Path) -> None:
    """The industry section (docs/operators.md), as written, against `realname serve`."""
    data_dir = tmp_path / "data"
    dev_init(data_dir)
    server = start_server_process(data_dir, wait=False)
    try:
        # A loaded machine takes a while to import and migrate; the default wait is 30 s.
        wait_serving(server, data_dir / "dev-pki", timeout=180)
        result = run_block("industry", data_dir, server.address, timeout=480)
    finally:
        assert server.stop() == 0
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "registered 91350100M000100Y43" in out, out
    assert "CARD_TYPE_INDUSTRY" in out and "CARD_STATE_SUSPENDED" in out, out
    assert "\nallowed\n" in out and "refused INDUSTRY_DATA_ONLY" in out, out
    assert "refused DEVICE_MISMATCH" in out and "authorize-service exit status 3" in out, out
    # Re-bound: the card is ACTIVE on the new device, and data on it is allowed.
    assert '"imei": "356938035643999"' in out and out.count("\nallowed\n") == 2, out
    assert '"reason":"RESALE_PROHIBITED"' in out and "transfer exit status" in out, out
    assert out.count("110105199003070017") == 0 and "11010519491231002X" not in out, out
    assert "11010519491231002X" not in server.log()


def test_readme_legacy_flow_works(tmp_path: Path) -> None:
    """The legacy section (docs/operators.md), as written, against `realname serve`."""
    doc_block("legacy")  # fails before a server starts when the block is missing
    data_dir = tmp_path / "data"
    dev_init(data_dir)
    server = start_server_process(data_dir)
    try:
        result = run_block("legacy", data_dir, server.address, timeout=900)
    finally:
        assert server.stop() == 0
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "import exit status 3" in out and "nothing imported" in out, out
    assert "4,msisdn,not in a number segment of operator cmcc" in out, out
    assert out.count('"state": "IMPORT_STATE_COMPLETED"') == 2, out
    assert "138****8400,cmcc,OUTGOING_BARRED,2027-06-30" in out, out
    sweeps = [json.loads(line) for line in out.splitlines() if line.startswith('{"batches"')]
    assert [s["changed"] for s in sweeps] == [
        {},
        {"OUTGOING_BARRED": 2},
        {"OUTGOING_BARRED": 2},
        {},
    ]
    assert [s["dry_run"] for s in sweeps] == [False, True, False, False]
    assert '"verified": true' in out and '"service_stage": "SERVICE_STAGE_FULL"' in out, out
    for number in ("110105198506150129", "110105199003070017"):
        assert number not in out and number not in server.log()
