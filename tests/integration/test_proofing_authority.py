"""The identity authority behind its deadline and circuit breaker, against a real HTTP server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

from services.domain.holder_names import HolderNames, normalise_name
from services.domain.pseudonym import Pseudonymizer
from services.features.proofing import ProofingConfig
from services.proto.realname.v1 import proofing_pb2 as ppb
from services.runtime.identity_authority import BreakerSettings, GuardedAuthority, HttpAuthority
from services.storage.database import Database
from services.storage.rawsql import Tx
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.proofing import (
    Reader,
    activation,
    enable_policy,
    proofing_stub,
    resident,
    start_proofing_harness,
)
from tests.support.rpc import rich_error
from tests.support.server import GrpcHarness

NAME = "Wang Fang"


@dataclass
class AuthorityStub:
    """A local HTTP identity authority: answers from ``people`` after ``delay`` seconds."""

    people: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    broken: bool = False
    requests: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/verify"


def _handler(stub: AuthorityStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            stub.requests += 1
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(stub.delay)
            if stub.broken:
                self.send_response(500)
                self.end_headers()
                return
            known = stub.people.get(body["document_number"])
            if known is None:
                verdict = "UNKNOWN"
            else:
                same = normalise_name(known) == normalise_name(body["name"])
                verdict = "MATCH" if same else "MISMATCH"
            reply = json.dumps({"verdict": verdict}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the request line would not hold personal data, but nothing is needed."""

    return Handler


@pytest.fixture
def authority_stub() -> Iterator[AuthorityStub]:
    stub = AuthorityStub()
    stub.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    stub.server.daemon_threads = True
    thread = threading.Thread(target=stub.server.serve_forever, daemon=True)
    thread.start()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


@dataclass
class Setup:
    harness: GrpcHarness
    authority: GuardedAuthority
    reader: Reader
    db: Database
    clock: list[float]


@pytest.fixture
def setup(
    db: Database,
    pki_dir: Path,
    pseudonymizer: Pseudonymizer,
    authority_stub: AuthorityStub,
) -> Iterator[Setup]:
    clock = [1000.0]
    authority = GuardedAuthority(
        HttpAuthority(authority_stub.url, timeout=5),
        BreakerSettings(timeout_seconds=0.3, failures_to_open=2, open_seconds=30),
        monotonic=lambda: clock[0],
    )
    config = ProofingConfig(names=HolderNames.from_pepper(pseudonymizer), authority=authority)
    harness, _app = start_proofing_harness(db, pki_dir, pseudonymizer, config)
    enable_policy(proofing_stub(harness))
    reader = Reader("RDR-HTTP", "shop-0042")
    reader.register(proofing_stub(harness))
    yield Setup(harness, authority, reader, db, clock)
    harness.close()
    authority.close()


def _nonce(setup: Setup) -> str:
    stub = proofing_stub(setup.harness)
    return stub.GetAttestationNonce(ppb.GetAttestationNonceRequest(), timeout=10).nonce


def _count(db: Database, sql: str) -> int:
    def work(tx: Tx) -> int:
        row = tx.one(sql)
        assert row is not None
        return int(row[0])

    return db.run_tx(work, readonly=True)


def test_slow_authority_fails_closed_and_writes_nothing(
    setup: Setup, authority_stub: AuthorityStub
) -> None:
    doc = resident(resident_id(301))
    authority_stub.people[doc.number] = NAME
    authority_stub.delay = 2.0
    nonce = _nonce(setup)
    request = activation(
        "slow-1", doc, msisdn("138", 9301), iccid(9301), name=NAME,
        attestation=setup.reader.attest(nonce, doc, NAME),
    )  # fmt: skip
    verification = setup.harness.verification()
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            verification.ActivateCard(request, timeout=10)
        err = rich_error(info.value)
        assert (err.code, err.reason) == (
            grpc.StatusCode.UNAVAILABLE, "IDENTITY_AUTHORITY_UNAVAILABLE",
        )  # fmt: skip
        assert err.metadata == {"cause": "timeout"}
        assert time.monotonic() - started < 1.5  # the deadline, not the authority's 2 s
    # Nothing written: no card, no recorded outcome, the nonce still unused, no attestation.
    assert _count(setup.db, "SELECT COUNT(*) FROM cards") == 0
    assert _count(setup.db, "SELECT COUNT(*) FROM requests") == 0
    assert _count(setup.db, "SELECT COUNT(*) FROM proofing_nonces WHERE used_at IS NULL") == 1
    assert _count(setup.db, "SELECT COUNT(*) FROM proofing_attestations") == 0
    # Two failures opened the circuit: the next call is refused at once, without a request.
    assert setup.authority.circuit_open
    seen = authority_stub.requests
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        verification.ActivateCard(request, timeout=10)
    err = rich_error(info.value)
    assert (err.code, err.reason, err.metadata) == (
        grpc.StatusCode.UNAVAILABLE, "IDENTITY_AUTHORITY_UNAVAILABLE", {"circuit": "open"},
    )  # fmt: skip
    assert time.monotonic() - started < 0.5
    assert authority_stub.requests == seen
    # After the open period one probe goes through; the authority is fast again, so the circuit
    # closes and the very same request (its nonce unspent) activates the card.
    authority_stub.delay = 0.0
    setup.clock[0] += 31
    card = verification.ActivateCard(request, timeout=10).card
    assert card.msisdn == msisdn("138", 9301)
    assert not setup.authority.circuit_open


def test_http_authority_verdicts(setup: Setup, authority_stub: AuthorityStub) -> None:
    doc = resident(resident_id(302))
    authority_stub.people[doc.number] = NAME
    verification = setup.harness.verification()
    wrong = activation(
        "http-wrong", doc, msisdn("138", 9302), iccid(9302), name="Li Lei",
        attestation=setup.reader.attest(_nonce(setup), doc, "Li Lei"),
    )  # fmt: skip
    with pytest.raises(grpc.RpcError) as info:
        verification.ActivateCard(wrong, timeout=10)
    assert rich_error(info.value).reason == "IDENTITY_MISMATCH"
    authority_stub.broken = True
    broken = activation(
        "http-500", doc, msisdn("138", 9303), iccid(9303), name=NAME,
        attestation=setup.reader.attest(_nonce(setup), doc, NAME),
    )  # fmt: skip
    with pytest.raises(grpc.RpcError) as info:
        verification.ActivateCard(broken, timeout=10)
    err = rich_error(info.value)
    assert (err.code, err.metadata) == (grpc.StatusCode.UNAVAILABLE, {"cause": "AuthorityError"})
    authority_stub.broken = False
    card = verification.ActivateCard(broken, timeout=10).card
    assert card.msisdn == msisdn("138", 9303)
