"""Lifting suspensions through the gRPC API, on SQLite and PostgreSQL: ReverifyHolder after a
document's block is lifted, RebindDevice after a device-binding breach; each audited."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from registry.subscribers import DocumentType
from services.domain.documents import Document
from services.domain.errors import ErrorKind, RealnameError
from services.domain.holder_names import HolderNames
from services.domain.pseudonym import Pseudonymizer
from services.features.cards import CardDesk, ReverifyHolder
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import industry_pb2 as ipb
from services.proto.realname.v1 import proofing_pb2 as ppb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.runtime.identity_authority import load_identity_records
from services.storage.database import Database
from tests.integration.test_authorize_service import ask, set_card
from tests.integration.test_industry import (
    RESPONSIBLE,
    enterprises,
    imei,
    industry_card,
    personal_card,
    register,
)
from tests.support.identities import resident_id
from tests.support.proofing import enable_policy, proofing_stub, public_pem, record, signed_records
from tests.support.rpc import rich_error
from tests.support.server import GrpcHarness

ID = cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD
HOLDER, OTHER = 301, 302
NAME = "Lin Xiaoming"
VOICE, OUT = ipb.SERVICE_TYPE_VOICE, ipb.SESSION_DIRECTION_OUTGOING


def doc(seq: int) -> cpb.Document:
    return cpb.Document(type=ID, number=resident_id(seq))


def key(pseudonymizer: Pseudonymizer, seq: int) -> bytes:
    return pseudonymizer.document_key(Document(DocumentType.RESIDENT_ID_CARD, resident_id(seq)))


def refusal(call: object, request: object, *hidden: int) -> tuple[grpc.StatusCode, str | None]:
    """The call's refusal (code, reason); the numbers of ``hidden`` are never in the message."""
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)  # type: ignore[operator]
    err = rich_error(info.value)
    assert all(resident_id(seq) not in err.message for seq in hidden)
    return err.code, err.reason


def block(server: GrpcHarness, seq: int) -> None:
    proofing_stub(server, "regulator").BlockDocument(
        ppb.BlockDocumentRequest(document=doc(seq), reason=ppb.BLOCK_REASON_STOLEN), timeout=10
    )


def unblock(server: GrpcHarness, seq: int) -> None:
    proofing_stub(server, "regulator").UnblockDocument(
        ppb.UnblockDocumentRequest(document=doc(seq)), timeout=10
    )


def state(server: GrpcHarness, msisdn: str) -> tuple[int, str]:
    card = server.verification().GetCard(vpb.GetCardRequest(msisdn=msisdn), timeout=10).card
    return card.state, card.suspension


def audited(server: GrpcHarness, subject: bytes, method: str) -> list[str]:
    """The outcomes of the audit records of ``method`` calls on the subject."""
    assert server.app is not None and server.app.audit is not None
    server.app.audit.flush()
    return [
        r.outcome
        for r in server.app.audit.query(subject=subject)
        if r.method.endswith(f"/{method}")
    ]


def reverify(
    request_id: str, msisdn: str, seq: int = HOLDER, name: str = ""
) -> vpb.ReverifyHolderRequest:
    return vpb.ReverifyHolderRequest(
        request_id=request_id, msisdn=msisdn, document=doc(seq), holder_name=name
    )


def test_a_reverified_holder_is_back_in_service_after_the_unblock(
    grpc_server: GrpcHarness, db: Database, pseudonymizer: Pseudonymizer
) -> None:
    stub = grpc_server.verification()
    card = stub.ActivateCard(personal_card(1, doc(HOLDER)), timeout=10).card
    # Only a card suspended for re-verification can be re-verified.
    assert refusal(stub.ReverifyHolder, reverify("r-0", card.msisdn), HOLDER) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOT_SUSPENDED_FOR_REVERIFICATION",
    )
    block(grpc_server, HOLDER)
    assert state(grpc_server, card.msisdn) == (vpb.CARD_STATE_SUSPENDED, "REVERIFICATION")
    assert refusal(stub.ReverifyHolder, reverify("r-1", card.msisdn), HOLDER) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "DOCUMENT_BLOCKED",
    )
    unblock(grpc_server, HOLDER)
    # Another person's document does not re-verify the card.
    assert refusal(stub.ReverifyHolder, reverify("r-2", card.msisdn, OTHER), OTHER) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOT_THE_HOLDER",
    )
    # With a policy that checks identities, the holder's name must match the authority's record.
    enable_policy(proofing_stub(grpc_server), attestation=False, identity=True)
    loader = ed25519.Ed25519PrivateKey.generate()
    data, signature = signed_records([record(resident_id(HOLDER), NAME)], loader)
    load_identity_records(
        db,
        pseudonymizer,
        HolderNames.from_pepper(pseudonymizer),
        data=data,
        signature=signature,
        loader_key_pem=public_pem(loader).encode(),
        now=dt.datetime.now(dt.UTC),
    )
    assert refusal(stub.ReverifyHolder, reverify("r-3", card.msisdn), HOLDER) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "HOLDER_NAME_REQUIRED",
    )
    assert refusal(stub.ReverifyHolder, reverify("r-4", card.msisdn, name="Chen Jing"), HOLDER) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "IDENTITY_MISMATCH",
    )
    assert state(grpc_server, card.msisdn) == (vpb.CARD_STATE_SUSPENDED, "REVERIFICATION")
    assert ask(grpc_server, card.msisdn, VOICE, OUT) == (False, "REVERIFICATION")

    back = stub.ReverifyHolder(reverify("r-5", card.msisdn, name=NAME), timeout=10).card
    assert (back.state, back.suspension) == (vpb.CARD_STATE_ACTIVE, "")
    assert ask(grpc_server, card.msisdn, VOICE, OUT) == (True, "")
    # Idempotent: the retry answers the same card; the request id is not reusable for another.
    assert stub.ReverifyHolder(reverify("r-5", card.msisdn, name=NAME), timeout=10).card == back
    other = reverify("r-5", "13800000999", name=NAME)
    assert refusal(stub.ReverifyHolder, other, HOLDER) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REQUEST_ID_REUSED",
    )
    # Every call is in the holder's audit trail, refusals included.
    outcomes = audited(grpc_server, key(pseudonymizer, HOLDER), "ReverifyHolder")
    assert outcomes.count("OK") == 2 and "FAILED_PRECONDITION" in outcomes


def test_the_transaction_itself_refuses_a_blocked_document(
    grpc_server: GrpcHarness, db: Database, pseudonymizer: Pseudonymizer
) -> None:
    # A desk without the proofing screen: what a block racing the screen meets in the transaction.
    card = grpc_server.verification().ActivateCard(personal_card(2, doc(HOLDER)), timeout=10).card
    block(grpc_server, HOLDER)
    bare = CardDesk(db, pseudonymizer)
    holder = Document(DocumentType.RESIDENT_ID_CARD, resident_id(HOLDER))
    for _ in range(2):  # recorded, and replayed
        with pytest.raises(RealnameError) as info:
            bare.reverify("cmcc", ReverifyHolder("race-1", card.msisdn, holder))
        assert (info.value.kind, info.value.reason) == (
            ErrorKind.FAILED_PRECONDITION,
            "DOCUMENT_BLOCKED",
        )
    assert state(grpc_server, card.msisdn) == (vpb.CARD_STATE_SUSPENDED, "REVERIFICATION")


def rebind(request_id: str, msisdn: str, device: str) -> ipb.RebindDeviceRequest:
    return ipb.RebindDeviceRequest(request_id=request_id, msisdn=msisdn, imei=device)


def test_an_industry_card_is_rebound_to_its_new_device(
    grpc_server: GrpcHarness, db: Database, pseudonymizer: Pseudonymizer
) -> None:
    register(grpc_server, 1)
    stub = enterprises(grpc_server)
    card = grpc_server.verification().ActivateCard(industry_card(1, device=imei(7))).card
    assert ask(grpc_server, card.msisdn, device=imei(8), apn="bus.iot") == (
        False,
        "DEVICE_MISMATCH",
    )
    assert state(grpc_server, card.msisdn) == (vpb.CARD_STATE_SUSPENDED, "DEVICE_MISMATCH")
    code, reason = refusal(stub.RebindDevice, rebind("b-0", card.msisdn, "12345"))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    personal = grpc_server.verification().ActivateCard(personal_card(3, doc(OTHER))).card
    assert refusal(stub.RebindDevice, rebind("b-1", personal.msisdn, imei(8))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOT_AN_INDUSTRY_CARD",
    )

    moved = stub.RebindDevice(rebind("b-2", card.msisdn, imei(8)), timeout=10).card
    assert (moved.state, moved.suspension, moved.industry.imei) == (
        vpb.CARD_STATE_ACTIVE,
        "",
        imei(8),
    )
    assert stub.RebindDevice(rebind("b-2", card.msisdn, imei(8)), timeout=10).card == moved
    assert ask(grpc_server, card.msisdn, device=imei(8), apn="bus.iot") == (True, "")
    # The old device is now the other one: it suspends the card again.
    assert ask(grpc_server, card.msisdn, device=imei(7), apn="bus.iot")[1] == "DEVICE_MISMATCH"
    # A card suspended for another reason keeps its suspension.
    set_card(db, card.msisdn, suspension="DISPUTED")
    assert refusal(stub.RebindDevice, rebind("b-3", card.msisdn, imei(9))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CARD_NOT_REBINDABLE",
    )
    # Lifting a breach never puts a card back in service under a blocked document.
    set_card(db, card.msisdn, suspension="DEVICE_MISMATCH")
    block(grpc_server, RESPONSIBLE)
    assert refusal(stub.RebindDevice, rebind("b-4", card.msisdn, imei(9))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "DOCUMENT_BLOCKED",
    )
    assert state(grpc_server, card.msisdn) == (vpb.CARD_STATE_SUSPENDED, "DEVICE_MISMATCH")
    outcomes = audited(grpc_server, key(pseudonymizer, RESPONSIBLE), "RebindDevice")
    assert outcomes.count("OK") == 2 and outcomes.count("FAILED_PRECONDITION") == 2
