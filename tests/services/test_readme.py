"""The README's grpcurl calls work as written (against a real server on a free port)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import start_server_process

README = Path(__file__).resolve().parents[2] / "README.md"
REPO = README.parent


def readme_block(tag: str) -> str:
    match = re.search(rf"<!-- readme-test: {tag} -->\n```sh\n(.*?)```", README.read_text(), re.S)
    assert match, f"README has no block tagged {tag}"
    return match.group(1)


def run_block(
    tag: str, data_dir: Path, address: str, prelude: str = ""
) -> subprocess.CompletedProcess[str]:
    script = prelude + readme_block(tag)
    script = script.replace(".data/", f"{data_dir}/").replace("127.0.0.1:50051", address)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    init = subprocess.run(
        [str(Path(sys.executable).parent / "realname"), "dev-init", "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
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
    block = readme_block("grpcurl-error")
    prelude = readme_block("grpcurl").split("\n\n")[0] + "\n"
    result = run_block("grpcurl-error", data_dir, address, prelude=prelude)
    assert result.returncode != 0
    for line in re.findall(r"^# {1,3}(\S.*)$", block, re.M):
        assert line.strip() in result.stderr + result.stdout
