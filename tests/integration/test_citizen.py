"""CitizenService and DisputeService over real mTLS, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from services.proto.realname.v1 import citizen_pb2 as zpb
from services.proto.realname.v1 import citizen_pb2_grpc as zgrpc
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import industry_pb2 as ipb
from services.proto.realname.v1 import industry_pb2_grpc as igrpc
from services.proto.realname.v1 import proofing_pb2 as ppb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage.database import Database
from services.storage.rawsql import Tx
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.proofing import proofing_stub
from tests.support.rpc import rich_error
from tests.support.server import GrpcHarness

ID = cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD
AGENT = "shop-citizen"
PREFIX = {"operator-cmcc": "138", "operator-cucc": "186", "operator-vno1": "1700"}


def doc(seq: int) -> cpb.Document:
    return cpb.Document(type=ID, number=resident_id(seq))


def activate(server: GrpcHarness, principal: str, seq: int, holder: int) -> vpb.Card:
    prefix = PREFIX[principal]
    return (
        server.verification(principal)
        .ActivateCard(
            vpb.ActivateCardRequest(
                request_id=f"cit-{prefix}-{seq}",
                document=doc(holder),
                msisdn=msisdn(prefix, seq),
                iccid=iccid(int(prefix) * 1000 + seq),
                card_type=cpb.CARD_TYPE_PERSONAL,
                channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id=AGENT)),
            )
        )
        .card
    )


def citizen(server: GrpcHarness) -> zgrpc.CitizenServiceStub:
    return zgrpc.CitizenServiceStub(server.channel("citizen-portal"))


def disputes(server: GrpcHarness, principal: str = "operator-cmcc") -> zgrpc.DisputeServiceStub:
    return zgrpc.DisputeServiceStub(server.channel(principal))


def my_cards(server: GrpcHarness, holder: int) -> list[zpb.MyCard]:
    return list(citizen(server).ListMyCards(zpb.ListMyCardsRequest(document=doc(holder))).cards)


def card_state(server: GrpcHarness, principal: str, number: str) -> vpb.Card:
    return server.verification(principal).GetCard(vpb.GetCardRequest(msisdn=number)).card


def active_cards(server: GrpcHarness, holder: int, principal: str = "operator-cmcc") -> int:
    answer = server.verification(principal).CheckEligibility(
        vpb.CheckEligibilityRequest(document=doc(holder), card_type=cpb.CARD_TYPE_PERSONAL)
    )
    return answer.active_cards


@pytest.fixture
def served(grpc_server: GrpcHarness) -> GrpcHarness:
    from tests.support.agents import register_agents

    for principal in PREFIX:
        register_agents(grpc_server.channel(principal), [AGENT])
    return grpc_server


def test_lists_every_card_of_the_document_across_operators_masked(served: GrpcHarness) -> None:
    a1 = activate(served, "operator-cmcc", 1, holder=1)
    activate(served, "operator-cmcc", 2, holder=1)
    activate(served, "operator-cucc", 3, holder=1)
    activate(served, "operator-vno1", 4, holder=1)
    activate(served, "operator-cmcc", 5, holder=2)  # someone else's
    served.verification().DeactivateCard(
        vpb.DeactivateCardRequest(request_id="cit-off-1", msisdn=a1.msisdn)
    )

    cards = my_cards(served, 1)
    assert len(cards) == 4
    assert {c.operator for c in cards} == {"cmcc", "cucc", "vno1"}
    assert {c.operator_name for c in cards} >= {"China Mobile", "China Unicom"}
    # Live cards first; the deactivated one last.
    assert [c.state for c in cards][-1] == vpb.CARD_STATE_DEACTIVATED
    assert all(c.state == vpb.CARD_STATE_ACTIVE for c in cards[:-1])
    assert all(c.channel.agent.agent_id == AGENT for c in cards)
    for c in cards:
        assert "****" in c.msisdn_masked and len(c.msisdn_masked) == 11
        assert c.card_ref and not c.open_dispute_id
    # Only masked numbers leave the service: no full MSISDN anywhere in the answer.
    wire = b"".join(c.SerializeToString() for c in cards)
    for seq, prefix in ((1, "138"), (2, "138"), (3, "186"), (4, "1700")):
        assert msisdn(prefix, seq).encode() not in wire
    assert my_cards(served, 3) == []


def test_only_the_citizen_portal_may_look_up(served: GrpcHarness) -> None:
    stub = zgrpc.CitizenServiceStub(served.channel("operator-cmcc"))
    with pytest.raises(grpc.RpcError) as info:
        stub.ListMyCards(zpb.ListMyCardsRequest(document=doc(1)))
    assert rich_error(info.value).reason == "ROLE_NOT_ALLOWED"
    with pytest.raises(grpc.RpcError) as info:
        zgrpc.DisputeServiceStub(served.channel("citizen-portal")).ListDisputes(
            zpb.ListDisputesRequest()
        )
    assert rich_error(info.value).code == grpc.StatusCode.PERMISSION_DENIED


def test_dispute_suspends_the_card_and_reaches_its_operator_only(served: GrpcHarness) -> None:
    card = activate(served, "operator-cmcc", 10, holder=4)
    activate(served, "operator-cucc", 11, holder=4)
    before = active_cards(served, 4)
    ref = next(c.card_ref for c in my_cards(served, 4) if c.operator == "cmcc")

    opened = (
        citizen(served)
        .DisputeCard(
            zpb.DisputeCardRequest(
                document=doc(4), card_ref=ref, reason=zpb.DISPUTE_REASON_NOT_MINE
            )
        )
        .dispute
    )
    assert opened.state == zpb.DISPUTE_STATE_OPEN and opened.operator == "cmcc"
    assert (
        opened.msisdn == "" and opened.msisdn_masked == card.msisdn[:3] + "****" + card.msisdn[7:]
    )
    assert opened.agent_id == AGENT

    suspended = card_state(served, "operator-cmcc", card.msisdn)
    assert suspended.state == vpb.CARD_STATE_SUSPENDED and suspended.suspension == "DISPUTED"
    # Still live: the slot stays taken until the operator resolves the dispute.
    assert active_cards(served, 4) == before
    listed = next(c for c in my_cards(served, 4) if c.card_ref == ref)
    assert listed.open_dispute_id == opened.dispute_id
    assert listed.state == vpb.CARD_STATE_SUSPENDED

    # Disputing again returns the open dispute instead of a second one.
    again = (
        citizen(served)
        .DisputeCard(
            zpb.DisputeCardRequest(
                document=doc(4), card_ref=ref, reason=zpb.DISPUTE_REASON_NOT_NEEDED
            )
        )
        .dispute
    )
    assert again.dispute_id == opened.dispute_id

    own = disputes(served).ListDisputes(zpb.ListDisputesRequest(state=zpb.DISPUTE_STATE_OPEN))
    assert [d.dispute_id for d in own.disputes] == [opened.dispute_id]
    assert own.disputes[0].msisdn == card.msisdn  # the owning operator sees its number
    other = disputes(served, "operator-cucc").ListDisputes(zpb.ListDisputesRequest())
    assert list(other.disputes) == []


def test_reverified_restores_the_card(served: GrpcHarness) -> None:
    card = activate(served, "operator-cmcc", 20, holder=5)
    ref = my_cards(served, 5)[0].card_ref
    opened = (
        citizen(served)
        .DisputeCard(
            zpb.DisputeCardRequest(
                document=doc(5), card_ref=ref, reason=zpb.DISPUTE_REASON_NOT_MINE
            )
        )
        .dispute
    )

    with pytest.raises(grpc.RpcError) as info:  # another operator cannot see it
        disputes(served, "operator-cucc").ResolveDispute(
            zpb.ResolveDisputeRequest(
                dispute_id=opened.dispute_id, resolution=zpb.DISPUTE_RESOLUTION_REVERIFIED
            )
        )
    assert rich_error(info.value).code == grpc.StatusCode.NOT_FOUND
    assert card_state(served, "operator-cmcc", card.msisdn).state == vpb.CARD_STATE_SUSPENDED

    done = (
        disputes(served)
        .ResolveDispute(
            zpb.ResolveDisputeRequest(
                dispute_id=opened.dispute_id,
                resolution=zpb.DISPUTE_RESOLUTION_REVERIFIED,
                note="holder re-verified in store",
            )
        )
        .dispute
    )
    assert done.state == zpb.DISPUTE_STATE_RESOLVED
    assert done.resolution == zpb.DISPUTE_RESOLUTION_REVERIFIED and done.resolved_at.seconds
    restored = card_state(served, "operator-cmcc", card.msisdn)
    assert restored.state == vpb.CARD_STATE_ACTIVE and restored.suspension == ""

    with pytest.raises(grpc.RpcError) as info:
        disputes(served).ResolveDispute(
            zpb.ResolveDisputeRequest(
                dispute_id=opened.dispute_id, resolution=zpb.DISPUTE_RESOLUTION_DEACTIVATED
            )
        )
    err = rich_error(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "DISPUTE_NOT_OPEN")
    assert card_state(served, "operator-cmcc", card.msisdn).state == vpb.CARD_STATE_ACTIVE


def test_deactivated_resolution_frees_the_slot(served: GrpcHarness) -> None:
    for seq in range(30, 35):
        activate(served, "operator-cmcc", seq, holder=6)
    assert active_cards(served, 6) == 5
    ref = my_cards(served, 6)[0].card_ref
    opened = (
        citizen(served)
        .DisputeCard(
            zpb.DisputeCardRequest(
                document=doc(6), card_ref=ref, reason=zpb.DISPUTE_REASON_NOT_MINE
            )
        )
        .dispute
    )
    disputes(served).ResolveDispute(
        zpb.ResolveDisputeRequest(
            dispute_id=opened.dispute_id, resolution=zpb.DISPUTE_RESOLUTION_DEACTIVATED
        )
    )
    assert active_cards(served, 6) == 4
    states = {c.card_ref: c.state for c in my_cards(served, 6)}
    assert states[ref] == vpb.CARD_STATE_DEACTIVATED
    # The freed slot can be used again.
    activate(served, "operator-cmcc", 35, holder=6)
    assert active_cards(served, 6) == 5


def test_deactivating_a_disputed_card_closes_its_dispute(served: GrpcHarness) -> None:
    card = activate(served, "operator-cmcc", 80, holder=12)
    ref = my_cards(served, 12)[0].card_ref
    opened = (
        citizen(served)
        .DisputeCard(
            zpb.DisputeCardRequest(
                document=doc(12), card_ref=ref, reason=zpb.DISPUTE_REASON_NOT_MINE
            )
        )
        .dispute
    )
    served.verification().DeactivateCard(
        vpb.DeactivateCardRequest(request_id="cit-off-80", msisdn=card.msisdn)
    )
    # The dispute is closed by the deactivation, and says so; nothing is left open to resolve.
    stub = disputes(served)
    assert stub.ListDisputes(zpb.ListDisputesRequest(state=zpb.DISPUTE_STATE_OPEN)).disputes == []
    [closed] = stub.ListDisputes(zpb.ListDisputesRequest()).disputes
    assert (closed.dispute_id, closed.state, closed.resolution) == (
        opened.dispute_id,
        zpb.DISPUTE_STATE_RESOLVED,
        zpb.DISPUTE_RESOLUTION_DEACTIVATED,
    )
    assert "DeactivateCard" in closed.note and closed.HasField("resolved_at")
    assert not my_cards(served, 12)[0].open_dispute_id
    with pytest.raises(grpc.RpcError) as info:
        stub.ResolveDispute(
            zpb.ResolveDisputeRequest(
                dispute_id=opened.dispute_id, resolution=zpb.DISPUTE_RESOLUTION_REVERIFIED
            )
        )
    assert rich_error(info.value).reason == "DISPUTE_NOT_OPEN"
    assert card_state(served, "operator-cmcc", card.msisdn).state == vpb.CARD_STATE_DEACTIVATED


def test_bad_and_foreign_references_change_nothing(served: GrpcHarness) -> None:
    activate(served, "operator-cmcc", 40, holder=7)
    activate(served, "operator-cmcc", 41, holder=8)
    foreign = my_cards(served, 8)[0].card_ref
    stub = citizen(served)

    with pytest.raises(grpc.RpcError) as info:  # someone else's card: as if it did not exist
        stub.DisputeCard(
            zpb.DisputeCardRequest(
                document=doc(7), card_ref=foreign, reason=zpb.DISPUTE_REASON_NOT_MINE
            )
        )
    err = rich_error(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "CARD_NOT_FOUND")

    for bad in ("x1", "", "-3", "9" * 40):
        with pytest.raises(grpc.RpcError) as info:
            stub.DisputeCard(
                zpb.DisputeCardRequest(
                    document=doc(7), card_ref=bad, reason=zpb.DISPUTE_REASON_NOT_MINE
                )
            )
        assert rich_error(info.value).code == grpc.StatusCode.INVALID_ARGUMENT, bad
    with pytest.raises(grpc.RpcError) as info:
        stub.DisputeCard(zpb.DisputeCardRequest(document=doc(7), card_ref="1", reason=7))  # type: ignore[arg-type]
    err = rich_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.field_violations[0][0] == "reason"
    with pytest.raises(grpc.RpcError) as info:
        stub.ListMyCards(zpb.ListMyCardsRequest(document=cpb.Document(type=ID, number="123")))
    err = rich_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "123" not in err.message

    assert all(not c.open_dispute_id for c in my_cards(served, 7) + my_cards(served, 8))
    assert disputes(served).ListDisputes(zpb.ListDisputesRequest()).disputes == []


def test_card_refs_are_opaque_and_round_trip(served: GrpcHarness) -> None:
    cards = [activate(served, "operator-cmcc", 70 + n, holder=11) for n in range(3)]
    mine = my_cards(served, 11)
    refs = [c.card_ref for c in mine]
    # Not the row ids, nor anything counted: no digits-only ref, no two alike, none guessable
    # from another (they share no prefix beyond chance).
    assert len(set(refs)) == 3 and not any(r.isdigit() for r in refs)
    assert all(len(r) >= 22 for r in refs)
    assert len({r[:4] for r in refs}) == 3
    stub = citizen(served)
    # The row id the old ref was is refused as malformed, and a ref one character off is no card.
    for bad in ("1", "2", "3"):
        with pytest.raises(grpc.RpcError) as info:
            stub.DisputeCard(
                zpb.DisputeCardRequest(
                    document=doc(11), card_ref=bad, reason=zpb.DISPUTE_REASON_NOT_MINE
                )
            )
        assert rich_error(info.value).code == grpc.StatusCode.INVALID_ARGUMENT
    tampered = refs[0][:-1] + ("A" if refs[0][-1] != "A" else "B")
    with pytest.raises(grpc.RpcError) as info:
        stub.DisputeCard(
            zpb.DisputeCardRequest(
                document=doc(11), card_ref=tampered, reason=zpb.DISPUTE_REASON_NOT_MINE
            )
        )
    err = rich_error(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "CARD_NOT_FOUND")
    # The ref the portal listed names that card, and is stable across lookups.
    chosen = next(
        c for c in mine if c.msisdn_masked == cards[1].msisdn[:3] + "****" + cards[1].msisdn[7:]
    )
    opened = stub.DisputeCard(
        zpb.DisputeCardRequest(
            document=doc(11), card_ref=chosen.card_ref, reason=zpb.DISPUTE_REASON_NOT_MINE
        )
    ).dispute
    assert opened.msisdn_masked == chosen.msisdn_masked
    again = {c.card_ref: c for c in my_cards(served, 11)}
    assert set(again) == set(refs) and again[chosen.card_ref].open_dispute_id == opened.dispute_id
    assert card_state(served, "operator-cmcc", cards[1].msisdn).state == vpb.CARD_STATE_SUSPENDED
    assert card_state(served, "operator-cmcc", cards[0].msisdn).state == vpb.CARD_STATE_ACTIVE


def test_a_deactivated_card_cannot_be_disputed(served: GrpcHarness) -> None:
    card = activate(served, "operator-cmcc", 50, holder=9)
    served.verification().DeactivateCard(
        vpb.DeactivateCardRequest(request_id="cit-off-50", msisdn=card.msisdn)
    )
    ref = my_cards(served, 9)[0].card_ref
    with pytest.raises(grpc.RpcError) as info:
        citizen(served).DisputeCard(
            zpb.DisputeCardRequest(
                document=doc(9), card_ref=ref, reason=zpb.DISPUTE_REASON_NOT_NEEDED
            )
        )
    err = rich_error(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CARD_NOT_LIVE")


def test_concurrent_disputes_of_one_card_open_one_dispute(served: GrpcHarness) -> None:
    activate(served, "operator-cmcc", 60, holder=10)
    ref = my_cards(served, 10)[0].card_ref
    request = zpb.DisputeCardRequest(
        document=doc(10), card_ref=ref, reason=zpb.DISPUTE_REASON_NOT_MINE
    )
    with ThreadPoolExecutor(8) as pool:
        ids = set(
            pool.map(lambda _: citizen(served).DisputeCard(request).dispute.dispute_id, range(16))
        )
    assert len(ids) == 1
    assert len(disputes(served).ListDisputes(zpb.ListDisputesRequest()).disputes) == 1


def block(server: GrpcHarness, holder: int) -> int:
    """The regulator blocks the holder's document as stolen; returns the cards flagged."""
    reply = proofing_stub(server, "regulator").BlockDocument(
        ppb.BlockDocumentRequest(document=doc(holder), reason=ppb.BLOCK_REASON_STOLEN)
    )
    return reply.cards_flagged


def voice_allowed(server: GrpcHarness, principal: str, number: str) -> bool:
    answer = igrpc.NetworkServiceStub(server.channel(principal)).AuthorizeService(
        ipb.AuthorizeServiceRequest(
            msisdn=number,
            service=ipb.SERVICE_TYPE_VOICE,
            direction=ipb.SESSION_DIRECTION_OUTGOING,
        )
    )
    return answer.allowed


def test_a_disputed_card_of_a_blocked_document_stays_out_of_service(served: GrpcHarness) -> None:
    """Dispute, then block, then REVERIFIED: the card goes to REVERIFICATION, not ACTIVE."""
    card = activate(served, "operator-cucc", 50, holder=9)
    ref = my_cards(served, 9)[0].card_ref
    opened = (
        citizen(served)
        .DisputeCard(
            zpb.DisputeCardRequest(
                document=doc(9), card_ref=ref, reason=zpb.DISPUTE_REASON_NOT_MINE
            )
        )
        .dispute
    )
    assert block(served, 9) == 1  # the disputed card is flagged too
    disputes(served, "operator-cucc").ResolveDispute(
        zpb.ResolveDisputeRequest(
            dispute_id=opened.dispute_id, resolution=zpb.DISPUTE_RESOLUTION_REVERIFIED
        )
    )
    after = card_state(served, "operator-cucc", card.msisdn)
    assert (after.state, after.suspension) == (vpb.CARD_STATE_SUSPENDED, "REVERIFICATION")
    assert not voice_allowed(served, "operator-cucc", card.msisdn)


def test_no_restore_puts_a_blocked_documents_card_in_service(
    served: GrpcHarness, db: Database
) -> None:
    """The shared rule holds even for a dispute whose remembered state is still ACTIVE."""
    card = activate(served, "operator-cmcc", 51, holder=10)
    ref = my_cards(served, 10)[0].card_ref
    opened = (
        citizen(served)
        .DisputeCard(
            zpb.DisputeCardRequest(
                document=doc(10), card_ref=ref, reason=zpb.DISPUTE_REASON_NOT_MINE
            )
        )
        .dispute
    )
    block(served, 10)

    def forget(tx: Tx) -> None:  # as a block racing the dispute would leave it
        tx.execute("UPDATE disputes SET previous_state = 'ACTIVE', previous_suspension = NULL")

    db.run_tx(forget)
    disputes(served).ResolveDispute(
        zpb.ResolveDisputeRequest(
            dispute_id=opened.dispute_id, resolution=zpb.DISPUTE_RESOLUTION_REVERIFIED
        )
    )
    after = card_state(served, "operator-cmcc", card.msisdn)
    assert (after.state, after.suspension) == (vpb.CARD_STATE_SUSPENDED, "REVERIFICATION")
    assert not voice_allowed(served, "operator-cmcc", card.msisdn)
