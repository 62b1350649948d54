"""The realname command: dev-init, db upgrade, serve's refusals, graceful shutdown, privacy."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
from alembic.script import ScriptDirectory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text

from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from services.runtime.devpki import DEV_PRINCIPALS
from services.storage.database import sqlite_url
from services.storage.migrate import MIGRATIONS_DIR
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.pki import channel
from tests.support.server import realname_bin, start_server_process


def realname(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [realname_bin(), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    result = realname("dev-init", "--data-dir", str(path))
    assert result.returncode == 0, result.stderr
    return path


def test_dev_init_makes_the_documented_layout_and_is_idempotent(data_dir: Path) -> None:
    pki = data_dir / "dev-pki"
    expected = [pki / "ca.pem", pki / "server.pem", pki / "server.key"] + [
        pki / "clients" / f"{p}.{ext}" for p in DEV_PRINCIPALS for ext in ("pem", "key")
    ]
    assert all(p.is_file() for p in expected)
    assert (data_dir / "pepper").stat().st_mode & 0o077 == 0
    before = {p: p.read_bytes() for p in [*expected, data_dir / "pepper"]}
    again = realname("dev-init", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    assert "0 PKI files written, pepper kept" in again.stdout
    assert "0 reference rows added" in again.stdout
    assert {p: p.read_bytes() for p in before} == before


def test_serve_refuses_without_a_pepper(data_dir: Path) -> None:
    (data_dir / "pepper").unlink()
    result = realname("serve", "--data-dir", str(data_dir), "--grpc-address", "127.0.0.1:0")
    assert result.returncode == 2
    assert "no pepper file" in result.stderr


def test_serve_refuses_an_unmigrated_database(tmp_path: Path, data_dir: Path) -> None:
    (data_dir / "realname.db").unlink()
    result = realname("serve", "--data-dir", str(data_dir), "--grpc-address", "127.0.0.1:0")
    assert result.returncode == 2
    assert "realname db upgrade" in result.stderr
    upgraded = realname("db", "upgrade", "--data-dir", str(data_dir))
    assert upgraded.returncode == 0, upgraded.stderr
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert f"database at revision {head}" in upgraded.stdout


@pytest.mark.parametrize("address", ["0.0.0.0:0", "192.0.2.10:0", "[::]:0", "example.org:0"])
def test_plaintext_is_refused_off_loopback(data_dir: Path, address: str) -> None:
    result = realname(
        "serve", "--data-dir", str(data_dir), "--grpc-address", address, "--insecure-plaintext"
    )
    assert result.returncode == 2
    assert "only allowed on a loopback address" in result.stderr


def test_plaintext_on_loopback_serves_with_a_named_principal(data_dir: Path) -> None:
    server = start_server_process(data_dir, extra_args=["--insecure-plaintext"], wait=False)
    try:
        with grpc.insecure_channel(server.address) as ch:
            grpc.channel_ready_future(ch).result(timeout=30)
            stub = vgrpc.VerificationServiceStub(ch)
            request = vpb.CheckEligibilityRequest(
                document=cpb.Document(
                    type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(3)
                ),
                card_type=cpb.CARD_TYPE_PERSONAL,
            )
            with pytest.raises(grpc.RpcError) as info:
                stub.CheckEligibility(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reply = stub.CheckEligibility(
                request, metadata=[("x-realname-principal", "operator-cmcc")], timeout=10
            )
            assert reply.limit == 5
    finally:
        assert server.stop() == 0


def test_sigterm_finishes_in_flight_calls_and_reports_not_serving(data_dir: Path) -> None:
    server = start_server_process(data_dir)
    pki = data_dir / "dev-pki"
    ch = channel(server.address, pki, "operator-cmcc")
    stub = vgrpc.VerificationServiceStub(ch)
    document = cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(8))
    results: list[str] = []

    def burst() -> None:
        futures = [
            stub.ActivateCard.future(
                vpb.ActivateCardRequest(
                    request_id=f"t-{i}", document=document, msisdn=msisdn("150", i),
                    iccid=iccid(5_000 + i), card_type=cpb.CARD_TYPE_PERSONAL,
                    channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id="agent-1")),
                ),
                timeout=30,
            )
            for i in range(40)
        ]  # fmt: skip
        for f in futures:
            try:
                f.result()
                results.append("OK")
            except grpc.RpcError as exc:
                results.append(exc.code().name)

    worker = threading.Thread(target=burst)
    worker.start()
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    worker.join(timeout=60)
    assert server.proc.wait(timeout=30) == 0
    ch.close()
    log = server.log()
    assert '"msg":"shutting down"' in log and '"msg":"stopped"' in log
    # Every call a handler ran for got its answer to the client: none was cut off mid-flight.
    # Calls still queued when SIGTERM came are refused (CANCELLED/UNAVAILABLE) without running.
    handled = re.findall(
        r'"method":"/realname.v1.VerificationService/ActivateCard"[^}]*"code":"(\w+)"', log
    )
    answered = [r for r in results if r in ("OK", "RESOURCE_EXHAUSTED")]
    assert sorted(handled) == sorted(answered)
    assert set(results) - {"OK", "RESOURCE_EXHAUSTED"} <= {"CANCELLED", "UNAVAILABLE"}
    assert 0 < results.count("OK") <= 5
    engine = create_engine(sqlite_url(data_dir))
    with engine.connect() as conn:
        live = conn.execute(text("SELECT count(*) FROM cards WHERE state = 'ACTIVE'")).scalar()
    engine.dispose()
    assert live == results.count("OK")


def test_health_goes_not_serving_before_stopping(data_dir: Path) -> None:
    server = start_server_process(data_dir)
    with channel(server.address, data_dir / "dev-pki", "operator-cmcc") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        server.proc.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert server.proc.wait(timeout=30) == 0


def test_no_document_number_in_clear_in_the_database_or_logs(data_dir: Path) -> None:
    server = start_server_process(data_dir)
    numbers = [resident_id(i, region="320102", birth="19851120") for i in range(6)]
    passport = "E98765432"
    try:
        with channel(server.address, data_dir / "dev-pki", "operator-cmcc") as ch:
            stub = vgrpc.VerificationServiceStub(ch)
            docs = [
                cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=n) for n in numbers
            ]
            docs.append(cpb.Document(type=cpb.DOCUMENT_TYPE_PASSPORT, number=passport))
            for i, d in enumerate(docs):
                stub.CheckEligibility(
                    vpb.CheckEligibilityRequest(document=d, card_type=cpb.CARD_TYPE_PERSONAL)
                )
                for j in range(6 if i == 0 else 1):  # the sixth card for docs[0] is refused
                    try:
                        stub.ActivateCard(
                            vpb.ActivateCardRequest(
                                request_id=f"p-{i}-{j}", document=d,
                                msisdn=msisdn("188", i * 10 + j), iccid=iccid(70_000 + i * 10 + j),
                                card_type=cpb.CARD_TYPE_PERSONAL,
                                channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id="agent-1")),
                            )
                        )  # fmt: skip
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        assert numbers[0] not in (exc.details() or "")
                stub.ListCards(vpb.ListCardsRequest(document=d))
            # A bad number is refused without being echoed.
            bad = numbers[1][:17] + ("0" if numbers[1][17] != "0" else "1")
            with pytest.raises(grpc.RpcError) as info:
                stub.CheckEligibility(vpb.CheckEligibilityRequest(
                    document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=bad),
                    card_type=cpb.CARD_TYPE_PERSONAL,
                ))  # fmt: skip
            assert bad not in (info.value.details() or "")
    finally:
        assert server.stop() == 0
    haystacks = {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()}
    assert any(name.startswith("realname.db") for name in haystacks)
    for name, blob in haystacks.items():
        for secret in [*numbers, passport, bad]:
            assert secret.encode() not in blob, f"{name} holds a document number in clear"
        # Not even the birth-date-and-sequence middle of a number.
        assert not re.search(rb"19851120\d{3}", blob), name


def test_workers_share_the_port_and_keep_the_cap_exact(data_dir: Path) -> None:
    server = start_server_process(data_dir, extra_args=["--workers", "2"])
    pki = data_dir / "dev-pki"
    document = cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(11))
    outcomes: list[str] = []
    try:
        # Fresh connections, so the kernel's SO_REUSEPORT balancing reaches both workers.
        channels = [channel(server.address, pki, "operator-cmcc") for _ in range(12)]
        futures = [
            vgrpc.VerificationServiceStub(channels[i % 12]).ActivateCard.future(
                vpb.ActivateCardRequest(
                    request_id=f"w-{i}", document=document, msisdn=msisdn("151", i),
                    iccid=iccid(8_000 + i), card_type=cpb.CARD_TYPE_PERSONAL,
                    channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id="agent-1")),
                ),
                timeout=60,
            )
            for i in range(60)
        ]  # fmt: skip
        for f in futures:
            try:
                f.result()
                outcomes.append("OK")
            except grpc.RpcError as exc:
                outcomes.append(exc.code().name)
        for ch in channels:
            ch.close()
    finally:
        assert server.stop() == 0
    assert outcomes.count("OK") == 5
    assert outcomes.count("RESOURCE_EXHAUSTED") == 55
    log = server.log()
    pids = set(re.findall(r'"msg":"serving".*?"pid":(\d+)', log))
    assert len(pids) == 2, log
    served_by = re.findall(r'"method":"/realname.v1.VerificationService/ActivateCard"', log)
    assert len(served_by) >= 60
