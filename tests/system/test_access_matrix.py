"""Every served RPC, called as every kind of caller, answers as docs/access-matrix.md says."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.proto.realname.v1 import (  # noqa: F401
    agents_pb2,
    citizen_pb2,
    compliance_pb2,
    delivery_pb2,
    industry_pb2,
    legacy_pb2,
    log_pb2,
    proofing_pb2,
    registry_pb2,
    supervision_pb2,
    verification_pb2,
)

# Imported for their descriptors: every service the server may offer must be in the pool.
from services.runtime.devpki import cert_pem, key_pem, load_issued, make_ca, make_client_cert
from tests.support.pki import GRPC_TEST_OPTIONS, channel
from tests.support.rpc import rich_error
from tests.support.server import ServerProcess, dev_init, start_server_process

MATRIX = Path(__file__).resolve().parents[2] / "docs" / "access-matrix.md"
ROLES = ("operator", "marketplace", "courier", "regulator", "citizen-portal")
# Every kind of caller, and the matrix column that governs it.
CALLERS = {
    "operator-cmcc": "operator",  # own operator
    "operator-cucc": "operator",  # another operator
    "operator-vno1": "operator",  # a virtual operator
    "marketplace-demo": "marketplace",
    "courier-demo": "courier",
    "regulator": "regulator",
    "citizen-portal": "citizen-portal",
}
LOG_FLUSH_SECONDS = 0.5
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED}
# grpcio-health-checking's servicer predates Health/List in the proto it registers.
UPSTREAM_UNIMPLEMENTED = {"grpc.health.v1.Health/List"}


def documented() -> dict[str, dict[str, bool]]:
    rows: dict[str, dict[str, bool]] = {}
    for line in MATRIX.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 1 + len(ROLES) and "/" in cells[0]:
            assert all(c in ("✓", "✗") for c in cells[1:]), line
            rows[cells[0]] = {role: c == "✓" for role, c in zip(ROLES, cells[1:], strict=True)}
    return rows


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    data_dir = tmp_path_factory.mktemp("matrix") / "data"
    dev_init(data_dir)
    process = start_server_process(data_dir)
    yield process, data_dir / "dev-pki"
    assert process.stop() == 0


def served_methods(address: str, pki: Path) -> list[MethodDescriptor]:
    with channel(address, pki, "regulator") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = [s.name for r in replies for s in r.list_services_response.service]
    pool = descriptor_pool.Default()
    return [m for name in sorted(names) for m in pool.FindServiceByName(name).methods]


def call(ch: grpc.Channel, method: MethodDescriptor) -> tuple[grpc.StatusCode, str | None]:
    """Calls ``method`` with an empty request; returns the status code and ErrorInfo reason."""
    request_cls = GetMessageClass(method.input_type)
    response_cls = GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    ser, de = request_cls.SerializeToString, response_cls.FromString
    request = request_cls()
    try:
        if not method.client_streaming and not method.server_streaming:
            ch.unary_unary(path, ser, de)(request, timeout=10)
        elif not method.client_streaming:
            replies = ch.unary_stream(path, ser, de)(request, timeout=10)
            next(replies, None)
            replies.cancel()
        elif not method.server_streaming:
            ch.stream_unary(path, ser, de)(iter([request]), timeout=10)
        else:
            replies = ch.stream_stream(path, ser, de)(iter([request]), timeout=10)
            next(replies, None)
            replies.cancel()
    except grpc.RpcError as exc:
        err = rich_error(exc)
        return err.code, err.reason
    return grpc.StatusCode.OK, None


def test_every_served_rpc_is_in_the_matrix_and_nothing_else(
    server: tuple[ServerProcess, Path],
) -> None:
    process, pki = server
    served = {
        f"{m.containing_service.full_name}/{m.name}" for m in served_methods(process.address, pki)
    }
    assert served == set(documented())


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_each_caller_gets_what_the_matrix_says(
    server: tuple[ServerProcess, Path], caller: str
) -> None:
    process, pki = server
    matrix = documented()
    role = CALLERS[caller]
    wrong: list[str] = []
    with channel(process.address, pki, caller) as ch:
        for method in served_methods(process.address, pki):
            name = f"{method.containing_service.full_name}/{method.name}"
            code, reason = call(ch, method)
            denied = code == grpc.StatusCode.PERMISSION_DENIED and reason == "ROLE_NOT_ALLOWED"
            if code == grpc.StatusCode.UNIMPLEMENTED and name in UPSTREAM_UNIMPLEMENTED:
                continue
            if code in NEVER or code == grpc.StatusCode.UNAUTHENTICATED:
                wrong.append(f"{name}: {code.name}")
            elif matrix[name][role] == denied:
                wrong.append(f"{name}: {code.name}/{reason}, matrix says {matrix[name][role]}")
    assert wrong == []


def _stranger_credentials(pki: Path, kind: str) -> grpc.ChannelCredentials:
    root = (pki / "ca.pem").read_bytes()
    if kind == "no certificate":
        return grpc.ssl_channel_credentials(root_certificates=root)
    if kind == "foreign CA":
        issued = make_client_cert(make_ca("a stranger's CA"), "operator-cmcc")
    else:
        ca = load_issued(pki / "ca.pem", pki / "ca.key")
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        issued = make_client_cert(ca, "regulator", days=1, now=past)
    return grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=key_pem(issued.key),
        certificate_chain=cert_pem(issued.cert),
    )


@pytest.mark.parametrize("kind", ["no certificate", "foreign CA", "expired certificate"])
def test_strangers_are_refused_at_the_handshake(
    server: tuple[ServerProcess, Path], kind: str
) -> None:
    process, pki = server
    methods = served_methods(process.address, pki)
    time.sleep(LOG_FLUSH_SECONDS)  # the server flushes its log lines in batches
    before = len(re.findall(r'"event":"rpc"', process.log()))
    codes: set[grpc.StatusCode] = set()
    credentials = _stranger_credentials(pki, kind)
    with grpc.secure_channel(process.address, credentials, GRPC_TEST_OPTIONS) as ch:
        for method in methods:
            codes.add(call(ch, method)[0])
    time.sleep(LOG_FLUSH_SECONDS)
    assert codes == {grpc.StatusCode.UNAVAILABLE}
    # No handler ran: not one RPC line was logged for these calls.
    assert len(re.findall(r'"event":"rpc"', process.log())) == before
