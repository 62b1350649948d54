"""Prometheus metrics at /metrics count RPCs by method and status code."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import grpc
import httpx
import pytest

from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from tests.support.identities import resident_id
from tests.support.pki import channel
from tests.support.server import realname_bin, start_server_process

CHECK = "/realname.v1.VerificationService/CheckEligibility"


def test_metrics_count_rpcs_by_method_and_code(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    init = subprocess.run(
        [realname_bin(), "dev-init", "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    server = start_server_process(data_dir)
    try:
        request = vpb.CheckEligibilityRequest(
            document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(4)),
            card_type=cpb.CARD_TYPE_PERSONAL,
        )
        pki = data_dir / "dev-pki"
        with channel(server.address, pki, "operator-cmcc") as ch:
            for _ in range(3):
                vgrpc.VerificationServiceStub(ch).CheckEligibility(request, timeout=10)
        with channel(server.address, pki, "courier-demo") as ch, pytest.raises(grpc.RpcError):
            vgrpc.VerificationServiceStub(ch).CheckEligibility(request, timeout=10)
        time.sleep(0.5)  # the "serving" line is flushed with the log's next batch
        http = re.search(r'"msg":"serving".*?"http":"([^"]+)"', server.log())
        assert http, server.log()
        body = httpx.get(f"http://{http.group(1)}/metrics", timeout=10).text
    finally:
        assert server.stop() == 0
    assert f'realname_rpc_total{{code="OK",method="{CHECK}"}} 3.0' in body
    assert f'realname_rpc_total{{code="PERMISSION_DENIED",method="{CHECK}"}} 1.0' in body
    assert f'realname_rpc_duration_seconds_count{{method="{CHECK}"}} 4.0' in body
    assert resident_id(4) not in body
