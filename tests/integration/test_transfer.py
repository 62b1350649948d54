"""VerificationService/TransferCard over real mTLS, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import grpc
import pytest

from registry.subscribers import DocumentType
from services.domain.documents import Document
from services.domain.errors import ErrorKind, RealnameError
from services.domain.pseudonym import Pseudonymizer
from services.features.cards import CardDesk, TransferCard
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import proofing_pb2 as ppb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage.database import Database
from services.storage.rawsql import Probe, Tx
from tests.integration.test_industry import doc, industry_card, personal_card, register
from tests.support.identities import resident_id
from tests.support.proofing import proofing_stub
from tests.support.rpc import rich_error
from tests.support.server import GrpcHarness

OLD, NEW = 1, 2


def transfer(
    harness: GrpcHarness, msisdn: str, to: int, request_id: str = "t-1"
) -> vpb.TransferCardResponse:
    return harness.verification().TransferCard(
        vpb.TransferCardRequest(request_id=request_id, msisdn=msisdn, new_document=doc(to)),
        timeout=60,
    )


def refused(
    harness: GrpcHarness, msisdn: str, to: int, request_id: str = "t-1"
) -> tuple[object, str | None]:
    with pytest.raises(grpc.RpcError) as info:
        transfer(harness, msisdn, to, request_id)
    err = rich_error(info.value)
    assert resident_id(to) not in err.message
    return err.code, err.reason


def held(harness: GrpcHarness, seq: int) -> int:
    answer = harness.verification().CheckEligibility(
        vpb.CheckEligibilityRequest(document=doc(seq), card_type=cpb.CARD_TYPE_PERSONAL)
    )
    return answer.active_cards


def test_a_card_moves_to_its_new_holder(grpc_server: GrpcHarness) -> None:
    stub = grpc_server.verification()
    card = stub.ActivateCard(personal_card(1, doc(OLD))).card
    moved = transfer(grpc_server, card.msisdn, NEW).card
    assert (moved.msisdn, moved.iccid, moved.state) == (
        card.msisdn,
        card.iccid,
        vpb.CARD_STATE_ACTIVE,
    )
    assert moved.document_masked == resident_id(NEW)[:4] + "*" * 10 + resident_id(NEW)[-4:]
    assert (held(grpc_server, OLD), held(grpc_server, NEW)) == (0, 1)
    assert [c.msisdn for c in stub.ListCards(vpb.ListCardsRequest(document=doc(NEW))).cards] == [
        card.msisdn
    ]
    assert list(stub.ListCards(vpb.ListCardsRequest(document=doc(OLD))).cards) == []
    # Idempotent: the retry returns the card without moving anything twice.
    assert transfer(grpc_server, card.msisdn, NEW).card == moved
    assert (held(grpc_server, OLD), held(grpc_server, NEW)) == (0, 1)
    assert refused(grpc_server, card.msisdn, 3) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REQUEST_ID_REUSED",
    )
    # The freed slot is usable by the old holder again; the same holder is refused.
    assert refused(grpc_server, card.msisdn, NEW, "t-2")[1] == "SAME_HOLDER"
    back = transfer(grpc_server, card.msisdn, OLD, "t-3").card
    assert back.document_masked.endswith(resident_id(OLD)[-4:])
    assert (held(grpc_server, OLD), held(grpc_server, NEW)) == (1, 0)


def test_the_new_holders_cap_is_checked(grpc_server: GrpcHarness) -> None:
    stub = grpc_server.verification()
    card = stub.ActivateCard(personal_card(1, doc(OLD))).card
    for i in range(5):
        stub.ActivateCard(personal_card(10 + i, doc(NEW)))
    for _ in range(2):  # the refusal is recorded and replayed
        assert refused(grpc_server, card.msisdn, NEW) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "CARD_LIMIT_REACHED",
        )
    assert (held(grpc_server, OLD), held(grpc_server, NEW)) == (1, 5)
    kept = stub.GetCard(vpb.GetCardRequest(msisdn=card.msisdn)).card
    assert kept.document_masked.endswith(resident_id(OLD)[-4:])
    stub.DeactivateCard(
        vpb.DeactivateCardRequest(request_id="d", msisdn=personal_card(10, doc(NEW)).msisdn)
    )
    assert refused(grpc_server, card.msisdn, NEW)[1] == "CARD_LIMIT_REACHED"  # replayed
    transfer(grpc_server, card.msisdn, NEW, "t-2")
    assert (held(grpc_server, OLD), held(grpc_server, NEW)) == (0, 5)


def test_industry_cards_may_not_be_resold(grpc_server: GrpcHarness) -> None:
    register(grpc_server, 1)
    card = grpc_server.verification().ActivateCard(industry_card(1)).card
    assert refused(grpc_server, card.msisdn, NEW) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESALE_PROHIBITED",
    )
    assert held(grpc_server, NEW) == 0


def test_unverified_suspended_and_unknown_cards_are_refused(
    grpc_server: GrpcHarness, db: Database
) -> None:
    stub = grpc_server.verification()
    legacy = stub.ActivateCard(personal_card(1, doc(OLD))).card
    disputed = stub.ActivateCard(personal_card(2, doc(OLD))).card

    def simulate(tx: Tx) -> None:
        # What a legacy import leaves: an unverified card that holds no slot.
        tx.execute("UPDATE cards SET verified = 0 WHERE msisdn = ?", (legacy.msisdn,))
        tx.execute("UPDATE holdings SET active = active - 1")
        tx.execute(
            "UPDATE cards SET state = 'SUSPENDED', suspension = 'DISPUTED' WHERE msisdn = ?",
            (disputed.msisdn,),
        )

    db.run_tx(simulate)
    assert refused(grpc_server, legacy.msisdn, NEW) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REGISTRATION_INCOMPLETE",
    )
    assert refused(grpc_server, disputed.msisdn, NEW, "t-2") == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CARD_NOT_ACTIVE",
    )
    assert refused(grpc_server, "13800000999", NEW, "t-3") == (
        grpc.StatusCode.NOT_FOUND,
        "CARD_NOT_FOUND",
    )
    assert held(grpc_server, NEW) == 0
    with pytest.raises(grpc.RpcError) as info:
        stub.TransferCard(
            vpb.TransferCardRequest(
                request_id="bad id!",
                msisdn=legacy.msisdn,
                new_document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number="1101"),
            )
        )
    err = rich_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in err.field_violations] == ["request_id", "new_document.number"]


def test_concurrent_transfers_to_one_holder_never_exceed_the_cap(grpc_server: GrpcHarness) -> None:
    stub = grpc_server.verification()
    for i in range(3):
        stub.ActivateCard(personal_card(100 + i, doc(NEW)))
    donors = list(range(10, 22))
    cards = {d: stub.ActivateCard(personal_card(d, doc(d))).card for d in donors}
    outcomes: dict[int, str] = {}
    start = threading.Barrier(len(donors))

    def worker(donor: int) -> None:
        start.wait()
        try:
            transfer(grpc_server, cards[donor].msisdn, NEW, f"t-{donor}")
            outcomes[donor] = "ok"
        except grpc.RpcError as exc:
            outcomes[donor] = rich_error(exc).reason or exc.code().name

    threads = [threading.Thread(target=worker, args=(d,)) for d in donors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [d for d, o in outcomes.items() if o == "ok"]
    assert len(winners) == 2
    assert sorted(o for o in outcomes.values() if o != "ok") == ["CARD_LIMIT_REACHED"] * 10
    assert held(grpc_server, NEW) == 5
    for donor in donors:
        assert held(grpc_server, donor) == (0 if donor in winners else 1)


def test_transfers_racing_deactivations_keep_every_count_exact(grpc_server: GrpcHarness) -> None:
    stub = grpc_server.verification()
    cards = [stub.ActivateCard(personal_card(i, doc(OLD))).card for i in range(5)]
    start = threading.Barrier(len(cards) * 2)
    unexpected: list[str] = []

    def move(i: int) -> None:
        start.wait()
        try:
            transfer(grpc_server, cards[i].msisdn, NEW, f"t-{i}")
        except grpc.RpcError as exc:  # the deactivation came first
            if rich_error(exc).reason != "CARD_NOT_FOUND":
                unexpected.append(f"transfer {i}: {rich_error(exc)}")

    def cancel(i: int) -> None:
        start.wait()
        try:
            stub.DeactivateCard(
                vpb.DeactivateCardRequest(request_id=f"d-{i}", msisdn=cards[i].msisdn), timeout=60
            )
        except grpc.RpcError as exc:
            unexpected.append(f"deactivate {i}: {rich_error(exc)}")

    threads = [threading.Thread(target=f, args=(i,)) for i in range(5) for f in (move, cancel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert unexpected == []
    # Every card ended deactivated, and whichever holder had it last got the slot back.
    for card in cards:
        got = stub.GetCard(vpb.GetCardRequest(msisdn=card.msisdn)).card
        assert got.state == vpb.CARD_STATE_DEACTIVATED
    assert (held(grpc_server, OLD), held(grpc_server, NEW)) == (0, 0)


def test_the_transfer_transaction_itself_refuses_a_blocked_new_holder(
    grpc_server: GrpcHarness, db: Database, pseudonymizer: Pseudonymizer
) -> None:
    # A desk without the proofing screen: what a block racing the screen meets in the transaction.
    card = grpc_server.verification().ActivateCard(personal_card(1, doc(OLD))).card
    proofing_stub(grpc_server, "regulator").BlockDocument(
        ppb.BlockDocumentRequest(document=doc(NEW), reason=ppb.BLOCK_REASON_STOLEN)
    )
    bare = CardDesk(db, pseudonymizer)
    new_holder = Document(DocumentType.RESIDENT_ID_CARD, resident_id(NEW))
    for _ in range(2):  # recorded, and replayed
        with pytest.raises(RealnameError) as info:
            bare.transfer("cmcc", TransferCard("race-1", card.msisdn, new_holder))
        assert (info.value.kind, info.value.reason) == (
            ErrorKind.FAILED_PRECONDITION,
            "DOCUMENT_BLOCKED",
        )
        assert resident_id(NEW) not in info.value.message
    assert (held(grpc_server, OLD), held(grpc_server, NEW)) == (1, 0)


def test_a_transfer_keeps_the_sale_time_and_starts_the_new_holders_interval(
    grpc_server: GrpcHarness, db: Database
) -> None:
    # The agent's sales count from activated_at; the new holder's interval from the transfer.
    card = grpc_server.verification().ActivateCard(personal_card(1, doc(OLD))).card
    sold = card.activated_at.ToDatetime(dt.UTC)
    moved = transfer(grpc_server, card.msisdn, NEW).card
    assert moved.activated_at.ToDatetime(dt.UTC) == sold

    def holder_since(tx: Tx) -> object:
        return tx.probe(Probe("SELECT holder_since FROM cards WHERE msisdn = ?", (card.msisdn,)))

    assert db.run_tx(holder_since) is not None
