"""Prometheus metrics at /metrics count RPCs by method and status code."""

from __future__ import annotations

import re
import time
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text

from registry.log.sequencer import Sequencer
from registry.log.storage import append_entry
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import registry_pb2 as rpb
from services.proto.realname.v1 import registry_pb2_grpc as rgrpc
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from services.runtime.metrics import LogSampler
from services.storage.database import Database
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.logdata import issuance, log_signer
from tests.support.pki import channel
from tests.support.server import dev_init, start_server_process

CHECK = "/realname.v1.VerificationService/CheckEligibility"


def test_metrics_count_rpcs_by_method_and_code(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    dev_init(data_dir)
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


def test_layers_off_switches_the_rpc_metrics_off_and_says_so(tmp_path: Path) -> None:
    """REALNAME_LAYERS_OFF=metrics (the layer bench's switch) counts no RPC; serve warns."""
    data_dir = tmp_path / "data"
    dev_init(data_dir)
    server = start_server_process(data_dir, env={"REALNAME_LAYERS_OFF": "metrics"})
    try:
        request = vpb.CheckEligibilityRequest(
            document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(5)),
            card_type=cpb.CARD_TYPE_PERSONAL,
        )
        with channel(server.address, data_dir / "dev-pki", "operator-cmcc") as ch:
            vgrpc.VerificationServiceStub(ch).CheckEligibility(request, timeout=10)
        time.sleep(0.5)  # the "serving" line is flushed with the log's next batch
        http = re.search(r'"msg":"serving".*?"http":"([^"]+)"', server.log())
        assert http, server.log()
        body = httpx.get(f"http://{http.group(1)}/metrics", timeout=10).text
    finally:
        assert server.stop() == 0
    assert f'method="{CHECK}"' not in body
    assert '"msg":"layers switched off","layers":["metrics"]' in server.log()


def test_layers_off_refuses_an_unknown_layer(tmp_path: Path) -> None:
    """A misspelt layer stops serve before it starts, rather than leaving the layer on."""
    data_dir = tmp_path / "data"
    dev_init(data_dir)
    server = start_server_process(data_dir, env={"REALNAME_LAYERS_OFF": "metric"}, wait=False)
    assert server.proc.wait(timeout=60) == 2
    assert "REALNAME_LAYERS_OFF names unknown layers metric" in server.log()


def _activation(seq: int, number: str, prefix: str = "138") -> vpb.ActivateCardRequest:
    return vpb.ActivateCardRequest(
        request_id=f"metrics-{prefix}-{seq}",
        document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=number),
        msisdn=msisdn(prefix, seq),
        iccid=iccid(int(prefix) * 1000 + seq),
        card_type=cpb.CARD_TYPE_PERSONAL,
        channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id="agent-1")),
    )


def _sample(body: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
    return None if found is None else float(found.group(1))


def test_metrics_count_activations_verdicts_and_log_state(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    dev_init(data_dir)
    server = start_server_process(data_dir)
    number = resident_id(7)
    pki = data_dir / "dev-pki"
    try:
        with channel(server.address, pki, "operator-cmcc") as ch:
            stub = vgrpc.VerificationServiceStub(ch)
            check = vpb.CheckEligibilityRequest(
                document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=number),
                card_type=cpb.CARD_TYPE_PERSONAL,
            )
            assert stub.CheckEligibility(check, timeout=10).eligible
            for seq in range(5):
                stub.ActivateCard(_activation(seq, number), timeout=10)
            refusals = [_activation(5, number), _activation(6, number, prefix="186")]
            for request in refusals:
                with pytest.raises(grpc.RpcError):
                    stub.ActivateCard(request, timeout=10)
            assert not stub.CheckEligibility(check, timeout=10).eligible
        with channel(server.address, pki, "operator-cucc") as ch:
            request = _activation(1, number, prefix="186")
            vgrpc.VerificationServiceStub(ch).ActivateCard(request, timeout=10)
        with channel(server.address, pki, "courier-demo") as ch, pytest.raises(grpc.RpcError):
            vgrpc.VerificationServiceStub(ch).ActivateCard(_activation(9, number), timeout=10)
        with channel(server.address, pki, "marketplace-demo") as ch:
            registry = rgrpc.RegistryServiceStub(ch)
            shop = rpb.Shop(marketplace="demo", shop_id="no-such-shop")
            registry.VerifySeller(rpb.VerifySellerRequest(shop=shop), timeout=10)
            sweep = rpb.VerifySellersRequest(marketplace="demo", shop_ids=["nope-1", "nope-2"])
            answers = list(registry.VerifySellers(iter([sweep]), timeout=10))
            assert [v.reason for v in answers[0].verdicts] == [rpb.VERDICT_REASON_UNKNOWN_STORE] * 2
        time.sleep(0.5)  # the "serving" line is flushed with the log's next batch
        http = re.search(r'"msg":"serving".*?"http":"([^"]+)"', server.log())
        assert http, server.log()
        engine = create_engine(f"sqlite:///{data_dir / 'realname.db'}")
        with engine.connect() as conn:
            log_size = conn.execute(text("SELECT size FROM log_state")).scalar_one()
        engine.dispose()
        assert log_size > 0  # dev-init logged the demo operators' CAs
        # The log gauges are sampled every 2 s.
        deadline = time.monotonic() + 15
        while True:
            body = httpx.get(f"http://{http.group(1)}/metrics", timeout=10).text
            if _sample(body, "realname_log_size") == log_size or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    finally:
        assert server.stop() == 0
    activations = "realname_activations_total"
    assert f'{activations}{{operator="cmcc",outcome="activated"}} 5.0' in body
    assert f'{activations}{{operator="cmcc",outcome="CARD_LIMIT_REACHED"}} 1.0' in body
    assert f'{activations}{{operator="cmcc",outcome="NUMBER_NOT_OPERATORS"}} 1.0' in body
    assert f'{activations}{{operator="cucc",outcome="activated"}} 1.0' in body
    assert 'operator="demo"' not in body  # a courier refused by role is no activation
    assert 'realname_eligibility_verdicts_total{eligible="true"} 1.0' in body
    assert 'realname_eligibility_verdicts_total{eligible="false"} 1.0' in body
    assert 'realname_seller_verdicts_total{reason="UNKNOWN_STORE"} 3.0' in body
    assert _sample(body, "realname_log_size") == log_size, body
    assert _sample(body, "realname_log_pending_entries") == 0
    assert _sample(body, "realname_log_sequencer_lag_seconds") == 0
    assert _sample(body, "realname_database_up") == 1
    assert number not in body


class _Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def test_log_sampler_measures_pending_entries_and_their_wait(db: Database) -> None:
    clock = _Clock()
    sampler = LogSampler(db, clock)
    signer = log_signer()
    sequencer = Sequencer(db.engine, signer, signer.name, transact=db.write)
    sequencer.integrate_now()
    sampler.sample()
    assert (_gauge("realname_log_size"), _gauge("realname_log_pending_entries")) == (0, 0)
    assert _gauge("realname_log_sequencer_lag_seconds") == 0

    db.write(lambda conn: append_entry(conn, issuance(1)))
    db.write(lambda conn: append_entry(conn, issuance(2)))
    sampler.sample()
    assert _gauge("realname_log_pending_entries") == 2
    assert _gauge("realname_log_sequencer_lag_seconds") == 0
    clock.now += 7.5
    sampler.sample()
    assert _gauge("realname_log_sequencer_lag_seconds") == 7.5

    sequencer.integrate_now()
    db.write(lambda conn: append_entry(conn, issuance(3)))
    clock.now += 1
    sampler.sample()
    # A new oldest entry: its wait starts when the sampler first sees it.
    assert (_gauge("realname_log_size"), _gauge("realname_log_pending_entries")) == (2, 1)
    assert _gauge("realname_log_sequencer_lag_seconds") == 0
    sequencer.integrate_now()
    sampler.sample()
    assert (_gauge("realname_log_size"), _gauge("realname_log_pending_entries")) == (3, 0)
    assert _gauge("realname_log_sequencer_lag_seconds") == 0
