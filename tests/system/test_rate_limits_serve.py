"""`realname serve` splits rate limits over its workers and refuses malformed ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from tests.integration.test_rate_limits import doc, eligibility, refusal
from tests.support.pki import channel
from tests.support.server import dev_init, realname_bin, start_server_process


def test_serve_splits_the_limit_over_workers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    dev_init(data_dir)
    # 1 call/s with a burst of 4 for the service: each of 2 workers admits 2, then 1 per 2 s.
    server = start_server_process(
        data_dir,
        extra_args=["--workers", "2"],
        env={"REALNAME_RATE_PRINCIPAL": "1/4", "REALNAME_RATE_DOCUMENT": "off"},
    )
    try:
        # One channel is one connection, served by one worker.
        with channel(server.address, data_dir / "dev-pki", "operator-cmcc") as ch:
            stub = vgrpc.VerificationServiceStub(ch)
            for seq in range(2):
                stub.CheckEligibility(eligibility(doc(seq)), timeout=10)
            with pytest.raises(grpc.RpcError) as info:
                stub.CheckEligibility(eligibility(doc(2)), timeout=10)
    finally:
        assert server.stop() == 0
    refused = refusal(info.value)
    assert (refused.code, refused.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    # The worker refills at 0.5 tokens/s, not the configured 1/s.
    assert 1.0 < refused.retry_delay <= 2.0


def test_serve_refuses_a_malformed_limit(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    dev_init(data_dir)
    result = subprocess.run(
        [realname_bin(), "serve", "--data-dir", str(data_dir), "--rate-document", "fast"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--rate-document" in result.stderr and "rate/burst" in result.stderr
