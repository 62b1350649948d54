"""The "Identity proofing at the point of sale" commands (docs/operators.md) work as written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docs import run_block
from tests.support.server import dev_init, start_server_process


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    data_dir = tmp_path / "data"
    dev_init(data_dir)
    server = start_server_process(data_dir)
    yield data_dir, server.address
    assert server.stop() == 0


def test_readme_attested_activation_flow(served: tuple[Path, str]) -> None:
    data_dir, address = served
    result = run_block("proofing", data_dir, address, timeout=900)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "loaded 1 identity records" in out
    # Activated, then re-verified after the unblock.
    assert out.count('"state": "CARD_STATE_ACTIVE"') == 2, out
    assert "FACE_MATCH_FAILED" in result.stderr and "refused: exit status" in out
    blocked = json.loads(next(line for line in out.splitlines() if '"cards_flagged"' in line))
    assert blocked["cards_flagged"] == 1
    report = json.loads(out.strip().splitlines()[-1])
    assert (report["reader"], report["attestations"], report["refused"]) == ("RDR-0077", 2, 1)
    # Masked only, in everything the flow printed.
    assert "350102198506120777" not in out.replace('"number": "350102198506120777"', "")
    assert "林晓明" not in out
