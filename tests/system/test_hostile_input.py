"""Hostile input against a running server over mTLS: only documented status codes come back.

Every method of every gRPC service in the generated descriptors (``services/proto/realname/v1``,
plus health and reflection) is called with requests built by Hypothesis from the request's
message descriptor (tests/support/hostile.py): huge strings, control characters, NUL, RTL marks,
astral characters, non-ASCII digits, invalid UTF-8 in bytes fields, integer limits, unknown enum
values, oneofs, many repeated entries, metadata around the 16 KiB limit and 1 ms deadlines, and
with malformed wire bytes. A service added later is covered by the same tests as soon as its
``*_pb2`` module exists; a served service missing from the descriptors fails
``test_every_served_method_is_covered``.

Each request goes once as a caller the access matrix allows (so validation runs, not the role
check) and once as one it refuses. The codes allowed back are:

- OK, INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ALREADY_EXISTS, PERMISSION_DENIED,
  RESOURCE_EXHAUSTED (size and metadata limits, rate limits, caps), DEADLINE_EXCEEDED,
  OUT_OF_RANGE, UNAUTHENTICATED and ABORTED;
- UNIMPLEMENTED only from upstream servicers that lack a method (grpc.health.v1.Health/List);
- CANCELLED only for calls with a 1 ms deadline (the client gives up);
- a refused caller gets PERMISSION_DENIED (or RESOURCE_EXHAUSTED / a deadline code as above).

UNKNOWN, INTERNAL and UNAVAILABLE never come back, the server stays up and SERVING, and its log
never holds an identity number or MSISDN that was sent. One server per database (SQLite and
PostgreSQL) serves the whole module; runs are derandomized so CI is reproducible.
``REALNAME_HOSTILE_EXAMPLES`` raises the number of examples per method (default 10).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import services.proto.realname.v1 as realname_protos
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.rpc.server import MAX_MESSAGE_BYTES, MAX_METADATA_BYTES
from tests.support.databases import PostgresDatabases
from tests.support.hostile import Hostile, hostile_calls, mask
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.pki import channel
from tests.support.rpc import rich_error
from tests.support.server import ServerProcess, dev_init, start_server_process

EXAMPLES = int(os.environ.get("REALNAME_HOSTILE_EXAMPLES", "10"))
MATRIX = Path(__file__).resolve().parents[2] / "docs" / "access-matrix.md"
ROLES = ("operator", "marketplace", "courier", "regulator", "citizen-portal")
CALLER_OF_ROLE = {
    "operator": "operator-cmcc",
    "marketplace": "marketplace-demo",
    "courier": "courier-demo",
    "regulator": "regulator",
    "citizen-portal": "citizen-portal",
}
ONE_MS = 0.001
ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.ABORTED,
    }
)
UPSTREAM_UNIMPLEMENTED = frozenset({"grpc.health.v1.Health/List"})
# Streams that never end by design: read one reply, then hang up.
ENDLESS_STREAMS = frozenset({"grpc.health.v1.Health/Watch"})
RELAXED = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
    HealthCheck.function_scoped_fixture,
]
ID_OR_MSISDN = re.compile(r"(?<![0-9])(?:\d{17}[0-9Xx]|1[3-9]\d{9})(?![0-9])")


def _described_methods() -> dict[str, MethodDescriptor]:
    """Every method of every service in the generated modules, plus health and reflection."""
    files = [health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR]
    for info in pkgutil.iter_modules(realname_protos.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"{realname_protos.__name__}.{info.name}")
            files.append(module.DESCRIPTOR)
    return {
        f"{service.full_name}/{method.name}": method
        for file in files
        for service in file.services_by_name.values()
        for method in service.methods
    }


METHODS = _described_methods()


def _documented_access() -> dict[str, set[str]]:
    """The roles docs/access-matrix.md allows for each RPC."""
    rows: dict[str, set[str]] = {}
    for line in MATRIX.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 1 + len(ROLES) and "/" in cells[0]:
            rows[cells[0]] = {r for r, c in zip(ROLES, cells[1:], strict=True) if c == "✓"}
    return rows


@dataclass
class Served:
    """The server under test, its PKI, what it serves and the sensitive values sent to it."""

    process: ServerProcess
    pki: Path
    services: set[str]
    channels: dict[str, grpc.Channel] = field(default_factory=dict, repr=False)
    sent: set[str] = field(default_factory=set, repr=False)  # clear numbers: never printed

    def channel(self, caller: str) -> grpc.Channel:
        """A cached mTLS channel as ``caller``."""
        if caller not in self.channels:
            self.channels[caller] = channel(self.process.address, self.pki, caller)
        return self.channels[caller]

    def close(self) -> None:
        """Closes the channels."""
        for ch in self.channels.values():
            ch.close()


def _served_services(address: str, pki: Path) -> set[str]:
    with channel(address, pki, "regulator") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = stub.ServerReflectionInfo(iter([request]), timeout=10)
        return {s.name for r in replies for s in r.list_services_response.service}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pki_dir: Path
) -> Iterator[Served]:
    """One `realname serve` process per database for the whole module."""
    data_dir = tmp_path_factory.mktemp(f"hostile-{request.param}") / "data"
    url: str | None = None
    pg: PostgresDatabases | None = None
    if request.param == "postgresql":
        pg = request.getfixturevalue("pg_databases")
        url = pg.new()
    env = dict(os.environ)
    env.pop("REALNAME_DATABASE_URL", None)
    if url is not None:
        env["REALNAME_DATABASE_URL"] = url
    # The session's dev PKI, in dev-init's layout: dev-init keeps it instead of minting another.
    shutil.copytree(pki_dir, data_dir / "dev-pki")
    dev_init(data_dir, env=env)
    process = start_server_process(data_dir, database_url=url)
    pki = data_dir / "dev-pki"
    state = Served(process, pki, _served_services(process.address, pki))
    yield state
    state.close()
    assert process.stop() == 0, process.log()[-4000:]
    if pg is not None and url is not None:
        pg.drop(url)


def _callers(served: Served, name: str) -> tuple[str, str | None]:
    """A caller the access rules allow for ``name`` and one they refuse (None if all may)."""
    allowed_roles = _documented_access().get(name)
    if allowed_roles is None:  # not documented yet: the access-matrix test fails for it
        allowed_roles = {r for r in ROLES if _role_reaches(served, name, r)}
    allowed = [CALLER_OF_ROLE[r] for r in ROLES if r in allowed_roles]
    refused = [CALLER_OF_ROLE[r] for r in ROLES if r not in allowed_roles]
    assert allowed, f"{name}: no role may call it"
    return allowed[0], (refused[0] if refused else None)


def _role_reaches(served: Served, name: str, role: str) -> bool:
    method = METHODS[name]
    empty = Hostile((GetMessageClass(method.input_type)(),), 10.0)
    code, reason = invoke(served.channel(CALLER_OF_ROLE[role]), method, empty)
    return not (code == grpc.StatusCode.PERMISSION_DENIED and reason == "ROLE_NOT_ALLOWED")


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def invoke(
    ch: grpc.Channel,
    method: MethodDescriptor,
    call: Hostile,
    serialize: object = None,
) -> tuple[grpc.StatusCode, str | None]:
    """Makes the call (streams sent and read in full); returns its code and ErrorInfo reason."""
    ser = serialize or GetMessageClass(method.input_type).SerializeToString
    de = GetMessageClass(method.output_type).FromString
    path, name = _path(method), _path(method).strip("/")
    kwargs = {"timeout": call.timeout, "metadata": call.metadata or None}
    requests: tuple[Message | bytes, ...] = call.requests
    try:
        if not method.client_streaming and not method.server_streaming:
            ch.unary_unary(path, ser, de)(requests[0], **kwargs)  # type: ignore[arg-type]
        elif not method.client_streaming:
            replies = ch.unary_stream(path, ser, de)(requests[0], **kwargs)  # type: ignore[arg-type]
            _drain(replies, endless=name in ENDLESS_STREAMS)
        elif not method.server_streaming:
            ch.stream_unary(path, ser, de)(iter(requests), **kwargs)  # type: ignore[arg-type]
        else:
            replies = ch.stream_stream(path, ser, de)(iter(requests), **kwargs)  # type: ignore[arg-type]
            _drain(replies, endless=name in ENDLESS_STREAMS)
    except grpc.RpcError as exc:
        err = rich_error(exc)
        return err.code, err.reason
    return grpc.StatusCode.OK, None


def _drain(replies: Iterator[Message], *, endless: bool) -> None:
    if endless:
        next(replies, None)
        replies.cancel()  # type: ignore[attr-defined]
        return
    for _ in replies:
        pass


def acceptable(name: str, code: grpc.StatusCode, timeout: float) -> bool:
    """Whether ``code`` is one the module docstring documents for a permitted caller."""
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return name in UPSTREAM_UNIMPLEMENTED
    if code == grpc.StatusCode.CANCELLED:
        return timeout <= ONE_MS
    return code in ALLOWED


def refused_acceptable(code: grpc.StatusCode, reason: str | None, timeout: float) -> bool:
    """Whether ``code`` is a proper refusal of a caller whose role may not call the method."""
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return reason == "ROLE_NOT_ALLOWED"
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return timeout <= ONE_MS or code == grpc.StatusCode.DEADLINE_EXCEEDED
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED


def assert_healthy(served: Served) -> None:
    """The server process is alive and reports SERVING."""
    assert served.process.proc.poll() is None, served.process.log()[-4000:]
    stub = health_pb2_grpc.HealthStub(served.channel("regulator"))
    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _require_served(served: Served, name: str) -> MethodDescriptor:
    method = METHODS[name]
    if method.containing_service.full_name not in served.services:
        pytest.skip(f"{method.containing_service.full_name} has a descriptor but is not served")
    return method


def _settings(examples: int = EXAMPLES) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=RELAXED,
        print_blob=False,
    )


def test_every_served_method_is_covered(served: Served) -> None:
    served_methods = {n for n in METHODS if n.split("/")[0] in served.services}
    missing = served.services - {m.containing_service.full_name for m in METHODS.values()}
    assert missing == set(), f"served without a descriptor in services/proto: {missing}"
    assert served_methods, "reflection listed nothing"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_hostile_requests_get_documented_codes(served: Served, name: str) -> None:
    method = _require_served(served, name)
    allowed, refused = _callers(served, name)
    streaming = method.client_streaming

    @_settings()
    @given(call=hostile_calls(method.input_type, streaming=streaming))
    def run(call: Hostile) -> None:
        served.sent.update(ID_OR_MSISDN.findall(" ".join(call.sent_text())))
        code, reason = invoke(served.channel(allowed), method, call)
        assert acceptable(name, code, call.timeout), f"{name} as {allowed}: {code.name}/{reason}"
        if refused is not None:
            code, reason = invoke(served.channel(refused), method, call)
            assert refused_acceptable(code, reason, call.timeout), (
                f"{name} as {refused} (role not allowed): {code.name}/{reason}"
            )

    run()
    assert_healthy(served)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string_fields(descriptor: Descriptor) -> list[int]:
    return [f.number for f in descriptor.fields if f.type == FieldDescriptor.TYPE_STRING]


def malformed_wire(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Bytes that are not a valid encoding of ``descriptor``: bad UTF-8 in strings, corruption."""
    bad_utf8 = st.sampled_from((b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"abc\xf4\x90\x80\x80"))
    strategies = [
        st.binary(min_size=1, max_size=64),
        st.sampled_from((b"\xff\xff\xff\xff", b"\x0a\x10abc", b"\x08", b"\x0f", b"\x80" * 11)),
    ]
    numbers = _string_fields(descriptor)
    if numbers:
        strategies.append(st.builds(_length_delimited, st.sampled_from(numbers), bad_utf8))
    return st.one_of(strategies)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_malformed_wire_bytes_are_refused_cleanly(served: Served, name: str) -> None:
    method = _require_served(served, name)
    allowed, _ = _callers(served, name)

    @_settings(max(3, EXAMPLES // 3))
    @given(raw=malformed_wire(method.input_type))
    def run(raw: bytes) -> None:
        call = Hostile((raw,), 10.0)  # type: ignore[arg-type]
        code, reason = invoke(served.channel(allowed), method, call, serialize=bytes)
        assert acceptable(name, code, call.timeout), (
            f"{name} as {allowed} with malformed bytes {mask(raw.decode('latin-1'))}: "
            f"{code.name}/{reason}"
        )

    run()
    assert_healthy(served)


def _padded(method: MethodDescriptor, size: int) -> bytes:
    # An unknown field carries the bulk: valid on the wire for every request type.
    empty = GetMessageClass(method.input_type)().SerializeToString()
    tag_and_length = len(_varint((2**29 - 1) << 3 | 2)) + len(_varint(size))
    return empty + _length_delimited(2**29 - 1, b"\x00" * (size - len(empty) - tag_and_length))


def _unary_of_each_service(served: Served) -> list[MethodDescriptor]:
    chosen: dict[str, MethodDescriptor] = {}
    for name in sorted(METHODS):
        method = METHODS[name]
        service = method.containing_service.full_name
        if service in served.services and service not in chosen and name not in ENDLESS_STREAMS:
            chosen[service] = method
    return list(chosen.values())


def test_messages_at_the_size_limit(served: Served) -> None:
    for method in _unary_of_each_service(served):
        name = _path(method).strip("/")
        caller, _ = _callers(served, name)
        ch = served.channel(caller)
        over = Hostile((_padded(method, MAX_MESSAGE_BYTES + 1),), 30.0)  # type: ignore[arg-type]
        assert invoke(ch, method, over, serialize=bytes)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        near = Hostile((_padded(method, MAX_MESSAGE_BYTES - 64),), 30.0)  # type: ignore[arg-type]
        code, reason = invoke(ch, method, near, serialize=bytes)
        assert acceptable(name, code, 30.0), f"{name} near the size limit: {code.name}/{reason}"
    assert_healthy(served)


def test_metadata_around_the_size_limit(served: Served) -> None:
    method = METHODS["realname.v1.VerificationService/GetCard"]
    ch = served.channel("operator-cmcc")
    request = GetMessageClass(method.input_type)()
    near = Hostile((request,), 10.0, (("x-hostile", "a" * (MAX_METADATA_BYTES - 2048)),))
    assert invoke(ch, method, near)[0] == grpc.StatusCode.INVALID_ARGUMENT
    for size in (MAX_METADATA_BYTES + 512, MAX_METADATA_BYTES * 4):
        over = Hostile((request,), 10.0, (("x-hostile", "a" * size),))
        codes = {invoke(ch, method, over)[0] for _ in range(5)}
        assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}, size
    assert_healthy(served)


def test_one_millisecond_deadlines(served: Served) -> None:
    codes: set[grpc.StatusCode] = set()
    for name, method in sorted(METHODS.items()):
        if method.containing_service.full_name not in served.services:
            continue
        caller, _ = _callers(served, name)
        call = Hostile((GetMessageClass(method.input_type)(),), ONE_MS)
        code, reason = invoke(served.channel(caller), method, call)
        assert acceptable(name, code, ONE_MS), f"{name} with 1 ms: {code.name}/{reason}"
        codes.add(code)
    assert codes, "no method was called"
    assert_healthy(served)


def test_the_log_never_holds_the_numbers_sent(served: Served) -> None:
    # Valid numbers of its own too, so the check never runs on an empty set.
    own = (resident_id(7, birth="19800229"), msisdn("138", 4242), iccid(4242))
    request = vpb.ActivateCardRequest(
        request_id="hostile-log-check",
        document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=own[0]),
        msisdn=own[1],
        iccid=own[2],
        card_type=cpb.CARD_TYPE_PERSONAL,
        channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id="shop-0042")),
    )
    method = METHODS["realname.v1.VerificationService/ActivateCard"]
    code, reason = invoke(served.channel("operator-cmcc"), method, Hostile((request,), 10.0))
    assert acceptable(method.full_name, code, 10.0), f"{code.name}/{reason}"
    time.sleep(0.5)  # the server flushes its log lines in batches
    log = served.process.log()
    assert '"event":"rpc"' in log
    leaked = sorted(n for n in {*served.sent, own[0], own[1]} if n in log)
    assert leaked == [], f"{len(leaked)} sent numbers in the log, e.g. {mask(leaked[0])}"
    unhandled = sorted(set(re.findall(r"unhandled error in (\S+?)\"", log)))
    assert unhandled == [], f"the server logged unhandled errors in {unhandled}"
