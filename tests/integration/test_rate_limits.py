"""Rate limits per principal and per document: token buckets, RESOURCE_EXHAUSTED with RetryInfo.

The buckets are unit-tested with a fake monotonic clock; the limits are tested through real mTLS
servers on SQLite and PostgreSQL, in process and as `realname serve --workers 2`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from services.app import App
from services.domain.pseudonym import Pseudonymizer
from services.domain.ratelimit import (
    RateLimit,
    RateLimiter,
)
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.rpc.server import TlsFiles, create_server
from services.storage.database import Database
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.server import GrpcHarness


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- the bucket, with a fake clock --------------------------------------------------------------


# --- through real servers -------------------------------------------------------------------------


@dataclass
class Refusal:
    """A RESOURCE_EXHAUSTED answer's details, read from the trailing google.rpc.Status."""

    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    metadata: dict[str, str]
    retry_delay: float


def refusal(exc: grpc.RpcError) -> Refusal:
    """Decodes ErrorInfo and RetryInfo from the call's status details."""
    assert isinstance(exc, grpc.Call)
    status = rpc_status.from_call(exc)
    assert status is not None, f"no rich status: {exc.code()} {exc.details()}"
    info = error_details_pb2.ErrorInfo()
    retry = error_details_pb2.RetryInfo()
    found = set()
    for detail in status.details:
        if detail.Unpack(info):
            found.add("info")
        elif detail.Unpack(retry):
            found.add("retry")
    assert found == {"info", "retry"}, f"details present: {found}"
    return Refusal(
        exc.code(),
        exc.details() or "",
        info.reason,
        info.domain,
        dict(info.metadata),
        retry.retry_delay.ToTimedelta().total_seconds(),
    )


def doc(seq: int) -> cpb.Document:
    return cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(seq))


def eligibility(document: cpb.Document) -> vpb.CheckEligibilityRequest:
    return vpb.CheckEligibilityRequest(document=document, card_type=cpb.CARD_TYPE_PERSONAL)


def activation(seq: int, document: cpb.Document, request_id: str) -> vpb.ActivateCardRequest:
    return vpb.ActivateCardRequest(
        request_id=request_id,
        document=document,
        msisdn=msisdn("138", seq),
        iccid=iccid(700_000 + seq),
        card_type=cpb.CARD_TYPE_PERSONAL,
        channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id="agent-1")),
    )


def limited_server(
    db: Database,
    pki_dir: Path,
    pseudonymizer: Pseudonymizer,
    *,
    principal: RateLimit | None = None,
    document: RateLimit | None = None,
) -> GrpcHarness:
    """An in-process mTLS server with the given limits."""
    doc_limiter = None if document is None else RateLimiter(document, "document")
    app = App.build(db, pseudonymizer, document_limiter=doc_limiter)
    running = create_server(
        app.bindings(),
        "127.0.0.1:0",
        tls=TlsFiles.in_pki_dir(pki_dir),
        principal_limiter=None if principal is None else RateLimiter(principal, "principal"),
    )
    return GrpcHarness(running, f"127.0.0.1:{running.port}", pki_dir, app.cards)


@pytest.fixture
def principal_limited(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer
) -> Iterator[GrpcHarness]:
    """A server allowing each principal a burst of 3 calls and 1 more per second."""
    harness = limited_server(db, pki_dir, pseudonymizer, principal=RateLimit(rate=1, burst=3))
    yield harness
    harness.close()


@pytest.fixture
def document_limited(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer
) -> Iterator[GrpcHarness]:
    """A server allowing each (operator, document) a burst of 3 calls and 1 more per second."""
    harness = limited_server(db, pki_dir, pseudonymizer, document=RateLimit(rate=1, burst=3))
    yield harness
    harness.close()


def test_principal_over_its_limit_gets_resource_exhausted_with_retry_info(
    principal_limited: GrpcHarness,
) -> None:
    cmcc = principal_limited.verification("operator-cmcc")
    for seq in range(3):
        assert cmcc.CheckEligibility(eligibility(doc(seq)), timeout=10).eligible
    with pytest.raises(grpc.RpcError) as info:
        cmcc.CheckEligibility(eligibility(doc(3)), timeout=10)
    refused = refusal(info.value)
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (refused.reason, refused.domain) == ("RATE_LIMITED", "realname")
    assert refused.metadata == {"scope": "principal"}
    # One token comes every second; the calls before took some of that time already.
    assert 0 < refused.retry_delay <= 1.0
    assert resident_id(3) not in refused.message

    # Another principal has its own bucket; health is never throttled.
    cucc = principal_limited.verification("operator-cucc")
    for seq in range(3):
        assert cucc.CheckEligibility(eligibility(doc(seq)), timeout=10).eligible
    health = health_pb2_grpc.HealthStub(principal_limited.channel("operator-cmcc"))
    for _ in range(5):
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    # Waiting as told is enough.
    time.sleep(refused.retry_delay)
    assert cmcc.CheckEligibility(eligibility(doc(3)), timeout=10).eligible


def test_principal_limit_applies_before_the_role_check(principal_limited: GrpcHarness) -> None:
    courier = principal_limited.verification("courier-demo")
    codes = []
    for seq in range(4):
        with pytest.raises(grpc.RpcError) as info:
            courier.CheckEligibility(eligibility(doc(seq)), timeout=10)
        codes.append(info.value.code())
    assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]


def test_document_limit_counts_each_document_per_operator(document_limited: GrpcHarness) -> None:
    cmcc = document_limited.verification("operator-cmcc")
    hot = doc(1)
    assert cmcc.CheckEligibility(eligibility(hot), timeout=10).eligible
    assert cmcc.ActivateCard(activation(1, hot, "rl-1"), timeout=10).card.msisdn
    assert len(cmcc.ListCards(vpb.ListCardsRequest(document=hot), timeout=10).cards) == 1
    with pytest.raises(grpc.RpcError) as info:
        cmcc.ActivateCard(activation(2, hot, "rl-2"), timeout=10)
    refused = refusal(info.value)
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (refused.reason, refused.metadata) == ("RATE_LIMITED", {"scope": "document"})
    assert 0 < refused.retry_delay <= 1.0
    assert resident_id(1) not in refused.message

    # Other documents of the same operator, and the same document at another operator, pass.
    assert cmcc.CheckEligibility(eligibility(doc(2)), timeout=10).eligible
    cucc = document_limited.verification("operator-cucc")
    assert cucc.CheckEligibility(eligibility(hot), timeout=10).active_cards == 0

    # The refused activation changed nothing: after the delay, the same request id activates.
    time.sleep(refused.retry_delay)
    card = cmcc.ActivateCard(activation(2, hot, "rl-2"), timeout=10).card
    assert card.msisdn == msisdn("138", 2)
    time.sleep(1.0)
    listed = cmcc.ListCards(vpb.ListCardsRequest(document=hot), timeout=10).cards
    assert sorted(c.msisdn for c in listed) == [msisdn("138", 1), msisdn("138", 2)]


def test_calls_without_a_document_are_not_document_limited(document_limited: GrpcHarness) -> None:
    cmcc = document_limited.verification("operator-cmcc")
    hot = doc(1)
    cmcc.ActivateCard(activation(1, hot, "nd-1"), timeout=10)
    for _ in range(6):
        got = cmcc.GetCard(vpb.GetCardRequest(msisdn=msisdn("138", 1)), timeout=10)
        assert got.card.msisdn == msisdn("138", 1)
