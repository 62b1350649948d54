"""DeliveryService through gRPC: the door check, the handover, the lock, and expiry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from registry.delivery import DEFAULT_MAX_AGE, commit, decode_token, new_shipment, sign_shipment
from registry.delivery.commitment import Kdf, KdfParams
from registry.subscribers import DocumentType
from services.cli.main import build_parser
from services.domain.pseudonym import Pseudonymizer
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import delivery_pb2 as dpb
from services.proto.realname.v1 import delivery_pb2_grpc as dgrpc
from services.proto.realname.v1 import proofing_pb2 as ppb
from services.proto.realname.v1 import registry_pb2 as rpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage.database import Database
from services.storage.schema import shipments
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.proofing import proofing_stub
from tests.support.registry import (
    RegistryHarness,
    authorize,
    csr_for,
    registry_server,
    store_key,
    verify_shop,
)
from tests.support.rpc import rich_error
from tests.support.tokens import as_version_1, with_params

RECIPIENT = resident_id(21)
STRANGER = resident_id(22)


@pytest.fixture
def server(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> Iterator[RegistryHarness]:
    with registry_server(db, pki_dir, pseudonymizer, tmp_path / "data") as harness:
        yield harness


@dataclass
class Store:
    """A store with its key and authorization serial."""

    key: ec.EllipticCurvePrivateKey
    serial: str
    certificate: x509.Certificate


def new_store(server: RegistryHarness, shop_id: str, operator: str = "cmcc") -> Store:
    key = store_key()
    issued = authorize(server, operator=operator, shop_id=shop_id, csr=csr_for(key))
    return Store(key, issued.serial, x509.load_der_x509_certificate(issued.certificate))


def document(number: str = RECIPIENT) -> cpb.Document:
    return cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=number)


def sell(server: RegistryHarness, store: Store, seq: int, number: str = RECIPIENT) -> vpb.Card:
    request = vpb.ActivateCardRequest(
        request_id=f"sale-{seq}",
        document=document(number),
        msisdn=msisdn("138", seq),
        iccid=iccid(700_000 + seq),
        card_type=cpb.CARD_TYPE_PERSONAL,
        channel=vpb.SalesChannel(online=vpb.OnlineChannel(store_authorization_serial=store.serial)),
    )
    return server.verification("operator-cmcc").ActivateCard(request).card


def token_for(
    store: Store,
    card: vpb.Card,
    *,
    number: str = RECIPIENT,
    courier: str = "demo",
    issued_at: dt.datetime | None = None,
    valid_for: dt.timedelta = dt.timedelta(days=15),
    operator: str = "cmcc",
    key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    fields = new_shipment(
        order_id=f"order-{card.iccid[-6:]}",
        waybill=f"SF{card.iccid[-10:]}",
        courier=courier,
        iccid=card.iccid,
        msisdn=card.msisdn,
        operator=operator,
        store_serial=int(store.serial, 16),
        document_type=DocumentType.RESIDENT_ID_CARD,
        document_number=number,
        issued_at=issued_at or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
        valid_for=valid_for,
    )
    return sign_shipment(fields, key or store.key)


def desk(server: RegistryHarness, principal: str = "courier-demo") -> dgrpc.DeliveryServiceStub:
    return dgrpc.DeliveryServiceStub(server.channel(principal))


def verify(
    server: RegistryHarness, token: bytes, number: str = RECIPIENT, principal: str = "courier-demo"
) -> str:
    response = desk(server, principal).VerifyDelivery(
        dpb.VerifyDeliveryRequest(token=token, presented_document=document(number))
    )
    return dpb.DeliveryReason.Name(response.verdict.reason).removeprefix("DELIVERY_REASON_")


def confirm(
    server: RegistryHarness, token: bytes, number: str = RECIPIENT
) -> dpb.ConfirmDeliveryResponse:
    return desk(server).ConfirmDelivery(
        dpb.ConfirmDeliveryRequest(
            token=token, presented_document=document(number), courier_staff_id="staff-7"
        )
    )


def card_state(server: RegistryHarness, card: vpb.Card) -> int:
    got = server.verification("operator-cmcc").GetCard(vpb.GetCardRequest(msisdn=card.msisdn))
    return got.card.state


def held(server: RegistryHarness, number: str = RECIPIENT) -> int:
    answer = server.verification("operator-cmcc").CheckEligibility(
        vpb.CheckEligibilityRequest(document=document(number), card_type=cpb.CARD_TYPE_PERSONAL)
    )
    return answer.active_cards


def test_a_valid_handover_activates_the_pending_card(server: RegistryHarness) -> None:
    store = new_store(server, "door-1")
    card = sell(server, store, 1)
    assert card.state == vpb.CARD_STATE_PENDING_DELIVERY
    assert held(server) == 1
    token = token_for(store, card)
    assert verify(server, token) == "OK"
    done = confirm(server, token)
    assert done.verdict.reason == dpb.DELIVERY_REASON_OK
    assert done.delivery.courier_staff_id == "staff-7"
    assert done.delivery.msisdn_masked == card.msisdn[:3] + "****" + card.msisdn[7:]
    assert card_state(server, card) == vpb.CARD_STATE_ACTIVE
    # Idempotent: the same confirmation returns the first record, delivered_at kept.
    again = confirm(server, token)
    assert again.verdict.reason == dpb.DELIVERY_REASON_OK
    assert again.delivery.delivered_at == done.delivery.delivered_at
    # A replayed check after delivery says so.
    assert verify(server, token) == "ALREADY_DELIVERED"
    assert held(server) == 1


def test_wrong_person_forged_token_and_wrong_courier(server: RegistryHarness) -> None:
    store = new_store(server, "door-2")
    card = sell(server, store, 2)
    token = token_for(store, card)
    assert verify(server, token, STRANGER) == "RECIPIENT_MISMATCH"
    forged = token_for(store, card, key=store_key())
    assert verify(server, forged) == "BAD_SIGNATURE"
    assert verify(server, token[:-1] + bytes([token[-1] ^ 1])) == "BAD_SIGNATURE"
    assert verify(server, token_for(store, card, courier="other")) == "WRONG_COURIER"
    refused = confirm(server, token, STRANGER)
    assert refused.verdict.reason == dpb.DELIVERY_REASON_RECIPIENT_MISMATCH
    assert not refused.HasField("delivery")
    assert card_state(server, card) == vpb.CARD_STATE_PENDING_DELIVERY


def test_revoked_unauthorized_and_expired_tokens(server: RegistryHarness) -> None:
    store = new_store(server, "door-3")
    card = sell(server, store, 3)
    expired = token_for(
        store,
        card,
        issued_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2),
        valid_for=dt.timedelta(days=1),
    )
    assert verify(server, expired) == "TOKEN_EXPIRED"
    # Another operator's store cannot sign for a cmcc card.
    foreign = new_store(server, "door-3-cucc", operator="cucc")
    assert verify(server, token_for(foreign, card, operator="cmcc")) == "SELLER_NOT_AUTHORIZED"
    # A serial the operator never issued.
    never = Store(store_key(), "7abcdef1", store.certificate)
    assert verify(server, token_for(never, card)) == "SELLER_NOT_AUTHORIZED"
    server.registry_service("operator-cmcc").RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(serial=store.serial)
    )
    assert verify(server, token_for(store, card)) == "SELLER_REVOKED"


def test_old_and_weak_commitments_are_refused_with_their_reason(
    server: RegistryHarness, db: Database
) -> None:
    store = new_store(server, "door-kdf")
    card = sell(server, store, 8)
    genuine = token_for(store, card)
    stub = desk(server)
    # Version 1, signed by the store's own key: its commitment is one guessable SHA-256.
    old = as_version_1(genuine, store.key, doc_type=1, number=RECIPIENT)
    request = dpb.VerifyDeliveryRequest(token=old, presented_document=document())
    answer = stub.VerifyDelivery(request)
    assert answer.verdict.reason == dpb.DELIVERY_REASON_BAD_SIGNATURE
    assert "version 1 is no longer accepted" in answer.verdict.detail
    # Version 2 under the floor, confirmed with the matching commitment as a synced courier would.
    cheap = KdfParams(Kdf.ARGON2ID, memory_kib=64, iterations=1, parallelism=1)
    weak = with_params(genuine, store.key, cheap, doc_type=1, number=RECIPIENT)
    salt = decode_token(genuine).fields.salt
    refused = stub.ConfirmDelivery(
        dpb.ConfirmDeliveryRequest(
            token=weak,
            presented_commitment=commit(1, RECIPIENT, salt, cheap),
            courier_staff_id="staff-7",
        )
    )
    assert refused.verdict.reason == dpb.DELIVERY_REASON_BAD_SIGNATURE
    assert "under the floor" in refused.verdict.detail
    assert not refused.HasField("delivery")
    assert card_state(server, card) == vpb.CARD_STATE_PENDING_DELIVERY
    # The genuine token goes through; the proof kept is the presented document's commitment.
    assert confirm(server, genuine).verdict.reason == dpb.DELIVERY_REASON_OK
    digest = decode_token(genuine).digest
    stored = db.read(
        lambda conn: conn.execute(
            select(shipments.c.presented_commitment).where(shipments.c.token_digest == digest)
        ).scalar_one()
    )
    assert bytes(stored) == decode_token(genuine).fields.commitment


def test_lock_after_three_mismatches_until_the_operator_unlocks(server: RegistryHarness) -> None:
    store = new_store(server, "door-4")
    card = sell(server, store, 4)
    token = token_for(store, card)
    for _ in range(3):
        assert verify(server, token, STRANGER) == "RECIPIENT_MISMATCH"
    assert verify(server, token) == "LOCKED"
    digest = (
        desk(server)
        .VerifyDelivery(dpb.VerifyDeliveryRequest(token=token, presented_document=document()))
        .verdict.token_digest
    )
    with pytest.raises(grpc.RpcError) as info:
        desk(server, "operator-cucc").UnlockShipment(dpb.UnlockShipmentRequest(token_digest=digest))
    assert rich_error(info.value).code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:
        desk(server).UnlockShipment(dpb.UnlockShipmentRequest(token_digest=digest))
    assert rich_error(info.value).code == grpc.StatusCode.PERMISSION_DENIED
    desk(server, "operator-cmcc").UnlockShipment(dpb.UnlockShipmentRequest(token_digest=digest))
    assert verify(server, token) == "OK"


def test_only_couriers_check_and_unknown_cards_are_not_found(server: RegistryHarness) -> None:
    store = new_store(server, "door-5")
    card = sell(server, store, 5)
    with pytest.raises(grpc.RpcError) as info:
        verify(server, token_for(store, card), principal="operator-cmcc")
    assert rich_error(info.value).code == grpc.StatusCode.PERMISSION_DENIED
    ghost = vpb.Card(iccid=iccid(799_999), msisdn=msisdn("138", 999))
    with pytest.raises(grpc.RpcError) as info:
        verify(server, token_for(store, ghost))
    err = rich_error(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "SHIPMENT_NOT_FOUND")
    with pytest.raises(grpc.RpcError) as info:
        desk(server).VerifyDelivery(
            dpb.VerifyDeliveryRequest(token=token_for(store, card), presented_document=document(""))
        )
    assert rich_error(info.value).code == grpc.StatusCode.INVALID_ARGUMENT


def test_expiry_of_an_undelivered_card_frees_its_slot(server: RegistryHarness) -> None:
    store = new_store(server, "door-6")
    card = sell(server, store, 6)
    assert held(server) == 1
    assert server.app is not None and server.app.deliveries is not None
    deliveries = server.app.deliveries
    assert deliveries.expire() == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=16)
    assert deliveries.expire(later) == 1
    assert deliveries.expire(later) == 0
    assert held(server) == 0
    assert card_state(server, card) == vpb.CARD_STATE_DEACTIVATED
    # A late token finds no card awaiting it.
    with pytest.raises(grpc.RpcError) as info:
        verify(server, token_for(store, card))
    assert rich_error(info.value).code == grpc.StatusCode.NOT_FOUND
    again = sell(server, store, 6 + 1000)
    assert again.state == vpb.CARD_STATE_PENDING_DELIVERY


def test_delivery_expire_command_releases_as_of_a_date(
    server: RegistryHarness,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def main(argv: list[str]) -> int:
        parsed = build_parser().parse_args(argv)
        return int(parsed.func(parsed))

    store = new_store(server, "door-7")
    sell(server, store, 7)
    monkeypatch.setenv("REALNAME_DATABASE_URL", database_url)
    monkeypatch.setenv("REALNAME_DELIVERY_DAYS", "3")
    args = ["delivery", "expire", "--data-dir", str(server.data_dir), "--at"]
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    assert main([*args, soon]) == 0
    assert "released 0 undelivered cards" in capsys.readouterr().out
    assert held(server) == 1
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=4)).isoformat()
    assert main([*args, later]) == 0
    assert "released 1 undelivered cards" in capsys.readouterr().out
    assert held(server) == 0


def test_a_handover_under_a_blocked_document_does_not_put_the_card_in_service(
    server: RegistryHarness,
) -> None:
    """Sold online, then the document is blocked: the delivered card waits for re-verification."""
    number = resident_id(23)
    store = new_store(server, "door-blocked")
    card = sell(server, store, 30, number)
    flagged = proofing_stub(server, "regulator").BlockDocument(
        ppb.BlockDocumentRequest(document=document(number), reason=ppb.BLOCK_REASON_STOLEN)
    )
    assert flagged.cards_flagged == 1  # the pending card counts: it will not enter service
    done = confirm(server, token_for(store, card, number=number), number)
    assert done.verdict.reason == dpb.DELIVERY_REASON_OK  # the handover itself is recorded
    got = server.verification("operator-cmcc").GetCard(vpb.GetCardRequest(msisdn=card.msisdn))
    assert (got.card.state, got.card.suspension) == (vpb.CARD_STATE_SUSPENDED, "REVERIFICATION")
    assert held(server, number) == 1  # still live: the slot stays taken


@dataclass
class TurnedBack:
    """A clock a fixed offset from real time; tests move it forward."""

    offset: dt.timedelta

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


def confirm_at(
    server: RegistryHarness, token: bytes, delivered_at: dt.datetime, number: str = RECIPIENT
) -> dpb.ConfirmDeliveryResponse:
    request = dpb.ConfirmDeliveryRequest(
        token=token, presented_document=document(number), courier_staff_id="staff-7"
    )
    request.delivered_at.FromDatetime(delivered_at)
    return desk(server).ConfirmDelivery(request)


def test_a_synced_handover_from_before_a_revocation_does_not_revive_the_store(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> None:
    # The README flow: the store is certified and sells; the courier checks offline and queues
    # the handover; the store is revoked; then the queue is synced with the handover's time.
    clock = TurnedBack(-dt.timedelta(hours=1))
    with registry_server(db, pki_dir, pseudonymizer, tmp_path / "data", clock=clock) as server:
        store = new_store(server, "door-8")
        first = sell(server, store, 8)
        other_number = resident_id(23)
        second = sell(server, store, 9, number=other_number)
        issued = clock() + dt.timedelta(minutes=1)
        token = token_for(store, first, issued_at=issued)
        clock.offset = dt.timedelta(0)
        handed_over = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
        server.registry_service("operator-cmcc").RevokeAuthorization(
            rpb.RevokeAuthorizationRequest(
                serial=store.serial, reason=rpb.REVOCATION_REASON_CESSATION_OF_OPERATION
            )
        )
        assert verify_shop(server, "door-8").reason == rpb.VERDICT_REASON_REVOKED
        synced = confirm_at(server, token, handed_over)
        assert synced.verdict.reason == dpb.DELIVERY_REASON_OK
        assert card_state(server, first) == vpb.CARD_STATE_ACTIVE
        # The verdict about the handover's moment answers for no other moment.
        assert verify_shop(server, "door-8").reason == rpb.VERDICT_REASON_REVOKED
        with pytest.raises(grpc.RpcError) as info:
            sell(server, store, 10, number=resident_id(24))
        err = rich_error(info.value)
        assert (err.code, err.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "SELLER_NOT_AUTHORIZED",
        )
        assert err.metadata["verdict"] == "REVOKED"
        again = token_for(store, second, number=other_number)
        assert verify(server, again, other_number) == "SELLER_REVOKED"


def test_a_handover_time_outside_the_offline_window_is_refused(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> None:
    # A store certified two days ago; its token was issued then and is valid for 15 days.
    clock = TurnedBack(-dt.timedelta(days=2))
    with registry_server(db, pki_dir, pseudonymizer, tmp_path / "data", clock=clock) as server:
        store = new_store(server, "door-9")
        card = sell(server, store, 11)
        token = token_for(store, card, issued_at=clock() + dt.timedelta(minutes=1))
        clock.offset = dt.timedelta(0)
        assert server.app is not None and server.app.seller_checks is not None
        server.app.seller_checks.refresh_crls()  # what the server's refresher does meanwhile
        now = dt.datetime.now(dt.UTC)
        for delivered_at in (
            now - DEFAULT_MAX_AGE - dt.timedelta(minutes=5),  # older than a bundle may be
            now + dt.timedelta(hours=1),  # in the future
        ):
            with pytest.raises(grpc.RpcError) as info:
                confirm_at(server, token, delivered_at)
            err = rich_error(info.value)
            assert err.code == grpc.StatusCode.INVALID_ARGUMENT
            assert [name for name, _ in err.field_violations] == ["delivered_at"]
            assert card_state(server, card) == vpb.CARD_STATE_PENDING_DELIVERY
        # Nothing was recorded: the shipment is still waiting, and a handover within the
        # window is accepted.
        assert verify(server, token) == "OK"
        done = confirm_at(server, token, now - DEFAULT_MAX_AGE + dt.timedelta(minutes=5))
        assert done.verdict.reason == dpb.DELIVERY_REASON_OK
        assert card_state(server, card) == vpb.CARD_STATE_ACTIVE
