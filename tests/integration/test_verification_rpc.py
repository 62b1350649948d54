"""VerificationService over real mTLS, on SQLite and PostgreSQL: cap, idempotency, validation."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from services.domain.pseudonym import Pseudonymizer
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage.database import Database
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.registry import authorize, registry_server
from tests.support.rpc import rich_error
from tests.support.server import GrpcHarness

ID = cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD


def doc(seq: int = 1) -> cpb.Document:
    return cpb.Document(type=ID, number=resident_id(seq))


def activate(
    seq: int,
    *,
    document: cpb.Document | None = None,
    prefix: str = "138",
    request_id: str | None = None,
    agent: str = "agent-1",
    serial: str | None = None,
) -> vpb.ActivateCardRequest:
    channel = (
        vpb.SalesChannel(online=vpb.OnlineChannel(store_authorization_serial=serial))
        if serial
        else vpb.SalesChannel(agent=vpb.AgentChannel(agent_id=agent))
    )
    return vpb.ActivateCardRequest(
        request_id=request_id or f"req-{prefix}-{seq}",
        document=document or doc(),
        msisdn=msisdn(prefix, seq),
        iccid=iccid(int(prefix) * 100000 + seq),
        card_type=cpb.CARD_TYPE_PERSONAL,
        channel=channel,
    )


def check(
    server: GrpcHarness, document: cpb.Document, principal: str = "operator-cmcc"
) -> vpb.CheckEligibilityResponse:
    return server.verification(principal).CheckEligibility(
        vpb.CheckEligibilityRequest(document=document, card_type=cpb.CARD_TYPE_PERSONAL)
    )


def test_cap_of_five_per_operator(grpc_server: GrpcHarness) -> None:
    stub = grpc_server.verification()
    assert check(grpc_server, doc()).eligible
    for i in range(5):
        card = stub.ActivateCard(activate(i)).card
        assert card.state == vpb.CARD_STATE_ACTIVE
        assert card.operator == "cmcc"
        assert card.document_masked == resident_id(1)[:4] + "*" * 10 + resident_id(1)[-4:]
    answer = check(grpc_server, doc())
    assert (answer.eligible, answer.active_cards, answer.limit, answer.reason) == (
        False, 5, 5, "CARD_LIMIT_REACHED",
    )  # fmt: skip
    with pytest.raises(grpc.RpcError) as info:
        stub.ActivateCard(activate(5))
    err = rich_error(info.value)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.reason == "CARD_LIMIT_REACHED" and err.domain == "realname"
    assert err.quota_violations and "at most 5" in err.quota_violations[0][1]
    assert resident_id(1) not in err.message


def test_cap_is_per_operator_and_virtual_operators_count_alike(grpc_server: GrpcHarness) -> None:
    for i in range(5):
        grpc_server.verification().ActivateCard(activate(i))
    # The same document still has five slots with another basic operator and a virtual one.
    for principal, prefix in (("operator-cucc", "186"), ("operator-vno1", "1700")):
        stub = grpc_server.verification(principal)
        for i in range(5):
            stub.ActivateCard(activate(i, prefix=prefix))
        with pytest.raises(grpc.RpcError) as info:
            stub.ActivateCard(activate(9, prefix=prefix))
        assert rich_error(info.value).reason == "CARD_LIMIT_REACHED"
        assert check(grpc_server, doc(), principal).active_cards == 5


def test_deactivation_frees_a_slot(grpc_server: GrpcHarness) -> None:
    stub = grpc_server.verification()
    for i in range(5):
        stub.ActivateCard(activate(i))
    gone = stub.DeactivateCard(vpb.DeactivateCardRequest(request_id="d-1", msisdn=msisdn("138", 2)))
    assert gone.card.state == vpb.CARD_STATE_DEACTIVATED
    assert gone.card.deactivated_at.seconds > 0
    assert check(grpc_server, doc()).active_cards == 4
    # The freed number can be sold again, even to someone else.
    stub.ActivateCard(activate(2, document=doc(2), request_id="again"))
    stub.ActivateCard(activate(7))
    assert check(grpc_server, doc()).active_cards == 5
    listed = stub.ListCards(vpb.ListCardsRequest(document=doc())).cards
    assert len(listed) == 6
    assert sum(c.state == vpb.CARD_STATE_ACTIVE for c in listed) == 5
    # Deactivating twice with a new request id finds nothing live.
    with pytest.raises(grpc.RpcError) as info:
        stub.DeactivateCard(
            vpb.DeactivateCardRequest(request_id="d-2", msisdn=msisdn("138", 3 + 100))
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_idempotent_retry_returns_the_original_card(grpc_server: GrpcHarness) -> None:
    stub = grpc_server.verification()
    first = stub.ActivateCard(activate(1)).card
    again = stub.ActivateCard(activate(1)).card
    assert first == again
    assert check(grpc_server, doc()).active_cards == 1
    d1 = stub.DeactivateCard(vpb.DeactivateCardRequest(request_id="d", msisdn=first.msisdn))
    d2 = stub.DeactivateCard(vpb.DeactivateCardRequest(request_id="d", msisdn=first.msisdn))
    assert d1 == d2 and check(grpc_server, doc()).active_cards == 0


def test_refusals_are_replayed_too(grpc_server: GrpcHarness) -> None:
    stub = grpc_server.verification()
    for i in range(5):
        stub.ActivateCard(activate(i))
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as info:
            stub.ActivateCard(activate(9, request_id="over"))
        assert rich_error(info.value).reason == "CARD_LIMIT_REACHED"
    # Even once a slot is free, the refused request id keeps its outcome; a new id succeeds.
    stub.DeactivateCard(vpb.DeactivateCardRequest(request_id="d", msisdn=msisdn("138", 0)))
    with pytest.raises(grpc.RpcError) as info:
        stub.ActivateCard(activate(9, request_id="over"))
    assert rich_error(info.value).reason == "CARD_LIMIT_REACHED"
    stub.ActivateCard(activate(9, request_id="over-2"))


def test_reused_request_id_with_other_content_is_refused(grpc_server: GrpcHarness) -> None:
    stub = grpc_server.verification()
    stub.ActivateCard(activate(1, request_id="same"))
    for changed in (activate(2, request_id="same"), activate(1, request_id="same", agent="other")):
        with pytest.raises(grpc.RpcError) as info:
            stub.ActivateCard(changed)
        err = rich_error(info.value)
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        assert err.reason == "REQUEST_ID_REUSED"
    with pytest.raises(grpc.RpcError) as info:
        stub.DeactivateCard(vpb.DeactivateCardRequest(request_id="same", msisdn=msisdn("138", 1)))
    assert rich_error(info.value).reason == "REQUEST_ID_REUSED"
    assert check(grpc_server, doc()).active_cards == 1


def test_live_msisdn_and_iccid_are_unique(grpc_server: GrpcHarness) -> None:
    stub = grpc_server.verification()
    stub.ActivateCard(activate(1))
    taken_number = activate(1, document=doc(2), request_id="x1")
    taken_number.iccid = iccid(424242)
    taken_sim = activate(2, document=doc(2), request_id="x2")
    taken_sim.iccid = activate(1).iccid
    for request, reason in ((taken_number, "MSISDN_IN_USE"), (taken_sim, "ICCID_IN_USE")):
        with pytest.raises(grpc.RpcError) as info:
            stub.ActivateCard(request)
        err = rich_error(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, reason)
    assert check(grpc_server, doc(2)).active_cards == 0


def test_another_operators_number_is_denied(grpc_server: GrpcHarness) -> None:
    with pytest.raises(grpc.RpcError) as info:
        grpc_server.verification("operator-cmcc").ActivateCard(activate(1, prefix="186"))
    err = rich_error(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NUMBER_NOT_OPERATORS")
    assert msisdn("186", 1) not in err.message
    # A virtual operator's segment belongs to it, not to the basic operator whose network it uses.
    with pytest.raises(grpc.RpcError) as info:
        grpc_server.verification("operator-ctcc").ActivateCard(activate(1, prefix="1700"))
    assert rich_error(info.value).reason == "NUMBER_NOT_OPERATORS"
    grpc_server.verification("operator-vno1").ActivateCard(activate(1, prefix="1700"))


def test_operators_see_only_their_own_cards(grpc_server: GrpcHarness) -> None:
    grpc_server.verification("operator-cmcc").ActivateCard(activate(1))
    other = grpc_server.verification("operator-cucc")
    with pytest.raises(grpc.RpcError) as info:
        other.GetCard(vpb.GetCardRequest(msisdn=msisdn("138", 1)))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert other.ListCards(vpb.ListCardsRequest(document=doc())).cards == []
    assert check(grpc_server, doc(), "operator-cucc").active_cards == 0
    with pytest.raises(grpc.RpcError) as info:
        other.DeactivateCard(vpb.DeactivateCardRequest(request_id="z", msisdn=msisdn("138", 1)))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    own = grpc_server.verification("operator-cmcc").GetCard(
        vpb.GetCardRequest(msisdn=msisdn("138", 1))
    )
    assert own.card.state == vpb.CARD_STATE_ACTIVE


@pytest.mark.parametrize(
    "principal", ["marketplace-demo", "courier-demo", "regulator", "citizen-portal"]
)
def test_other_roles_are_denied(grpc_server: GrpcHarness, principal: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        check(grpc_server, doc(), principal)
    err = rich_error(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")


def test_online_channel_serial_is_stored(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> None:
    with registry_server(db, pki_dir, pseudonymizer, tmp_path / "data") as server:
        serial = authorize(server, shop_id="shop-online").serial
        card = server.verification().ActivateCard(activate(1, serial=serial.upper())).card
        assert card.channel.online.store_authorization_serial == serial
        fetched = server.verification().GetCard(vpb.GetCardRequest(msisdn=card.msisdn)).card
        assert fetched.channel.online.store_authorization_serial == serial


def test_bad_input_lists_every_field_and_changes_nothing(grpc_server: GrpcHarness) -> None:
    bad = vpb.ActivateCardRequest(
        request_id="has space",
        document=cpb.Document(type=ID, number="110105194912310021"),
        msisdn="12345",
        iccid="8986001234567890121",
        card_type=cpb.CARD_TYPE_UNSPECIFIED,
    )
    with pytest.raises(grpc.RpcError) as info:
        grpc_server.verification().ActivateCard(bad)
    err = rich_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = {f for f, _ in err.field_violations}
    assert fields == {"request_id", "document.number", "msisdn", "iccid", "card_type", "channel"}
    assert "110105194912310021" not in str(err)
    assert grpc_server.verification().ListCards(vpb.ListCardsRequest(document=doc())).cards == []


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (cpb.Document(type=cpb.DOCUMENT_TYPE_UNSPECIFIED, number="E12345678"), "document.type"),
        (cpb.Document(type=77, number="E12345678"), "document.type"),
        (cpb.Document(type=cpb.DOCUMENT_TYPE_PASSPORT, number=""), "document.number"),
        (cpb.Document(type=cpb.DOCUMENT_TYPE_PASSPORT, number="x" * 10_000), "document.number"),
        (cpb.Document(type=cpb.DOCUMENT_TYPE_HK_MACAO_PERMIT, number="X1234"), "document.number"),
    ],
)
def test_bad_documents_on_check(
    grpc_server: GrpcHarness, document: cpb.Document, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        check(grpc_server, document)
    err = rich_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in err.field_violations] == [field]


def test_industry_cards_are_not_personal_activations(grpc_server: GrpcHarness) -> None:
    request = activate(1)
    request.card_type = cpb.CARD_TYPE_INDUSTRY
    with pytest.raises(grpc.RpcError) as info:
        grpc_server.verification().ActivateCard(request)
    err = rich_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field_violations[0][0] == "card_type"


def test_other_document_types_have_their_own_caps(grpc_server: GrpcHarness) -> None:
    passport = cpb.Document(type=cpb.DOCUMENT_TYPE_PASSPORT, number="e12345678")
    stub = grpc_server.verification()
    for i in range(5):
        stub.ActivateCard(activate(i, document=passport))
    normalised = cpb.Document(type=cpb.DOCUMENT_TYPE_PASSPORT, number="E1234 5678")
    assert check(grpc_server, normalised).active_cards == 5
    assert check(grpc_server, doc()).active_cards == 0


def test_expired_deadline_is_refused_before_work(grpc_server: GrpcHarness) -> None:
    with pytest.raises(grpc.RpcError) as info:
        grpc_server.verification().ActivateCard(activate(1), timeout=0.000001)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_malformed_request_bytes_are_invalid_argument(grpc_server: GrpcHarness) -> None:
    # Found by tests/system/test_hostile_input.py: gRPC answers INTERNAL when a request does
    # not decode (bad UTF-8 in a string field, corrupt wire format); the interceptor refuses it.
    path = "/realname.v1.VerificationService/GetCard"
    call = grpc_server.channel("operator-cmcc").unary_unary(path, bytes, bytes)
    for raw in (b"\x0a\x03\xff\xfe\xfd", b"\xff\xff\xff\xff", b"\x0a\x10abc"):
        with pytest.raises(grpc.RpcError) as info:
            call(raw, timeout=10)
        err = rich_error(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
    with pytest.raises(grpc.RpcError) as info:  # the role check still comes first
        grpc_server.channel("courier-demo").unary_unary(path, bytes, bytes)(b"\xff", timeout=10)
    assert rich_error(info.value).reason == "ROLE_NOT_ALLOWED"
