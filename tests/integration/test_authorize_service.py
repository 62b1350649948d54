"""NetworkService/AuthorizeService over real mTLS, on SQLite and PostgreSQL: every rule."""

from __future__ import annotations

import grpc
import pytest

from services.proto.realname.v1 import industry_pb2 as ipb
from services.proto.realname.v1 import industry_pb2_grpc as igrpc
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage.database import Database
from services.storage.rawsql import Tx
from tests.integration.test_industry import doc, imei, industry_card, personal_card, register
from tests.support.identities import iccid
from tests.support.rpc import rich_error
from tests.support.server import GrpcHarness

VOICE, SMS, DATA = ipb.SERVICE_TYPE_VOICE, ipb.SERVICE_TYPE_SMS, ipb.SERVICE_TYPE_DATA
OUT, IN = ipb.SESSION_DIRECTION_OUTGOING, ipb.SESSION_DIRECTION_INCOMING


def network(harness: GrpcHarness, principal: str = "operator-cmcc") -> igrpc.NetworkServiceStub:
    return igrpc.NetworkServiceStub(harness.channel(principal))


def ask(
    harness: GrpcHarness,
    msisdn: str = "",
    service: int = DATA,
    direction: int = OUT,
    *,
    iccid: str = "",
    device: str = "",
    apn: str = "",
    principal: str = "operator-cmcc",
) -> tuple[bool, str]:
    request = ipb.AuthorizeServiceRequest(
        service=service, direction=direction, imei=device, apn=apn
    )
    if iccid:
        request.iccid = iccid
    else:
        request.msisdn = msisdn
    answer = network(harness, principal).AuthorizeService(request)
    assert answer.allowed == (answer.reason == "")
    return answer.allowed, answer.reason


def every_session(harness: GrpcHarness, msisdn: str, apn: str = "") -> dict[str, tuple[bool, str]]:
    return {
        f"{name}-{way}": ask(harness, msisdn, service, direction, apn=apn)
        for name, service in (("voice", VOICE), ("sms", SMS), ("data", DATA))
        for way, direction in (("out", OUT), ("in", IN))
    }


def set_card(db: Database, msisdn: str, **columns: object) -> None:
    """Changes a live card's columns directly, as another feature (sweep, dispute) would."""
    names = ", ".join(f"{c} = ?" for c in columns)

    def work(tx: Tx) -> None:
        changed = tx.execute(
            f"UPDATE cards SET {names} WHERE msisdn = ? AND state <> 'DEACTIVATED'",
            (*columns.values(), msisdn),
        )
        assert changed == 1

    db.run_tx(work)


def test_an_active_personal_card_may_use_everything(grpc_server: GrpcHarness) -> None:
    card = grpc_server.verification().ActivateCard(personal_card(1, doc(1))).card
    assert set(every_session(grpc_server, card.msisdn).values()) == {(True, "")}
    assert ask(grpc_server, iccid=card.iccid, service=VOICE) == (True, "")
    # Lower-case or not, an APN does not restrict a personal card.
    assert ask(grpc_server, card.msisdn, apn="CMNET") == (True, "")


def test_unknown_and_foreign_cards_are_not_found_deactivated_are_refused(
    grpc_server: GrpcHarness,
) -> None:
    for kwargs in ({"msisdn": "13800000999"}, {"iccid": iccid(999_999)}):
        request = ipb.AuthorizeServiceRequest(service=DATA, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(grpc.RpcError) as info:
            network(grpc_server).AuthorizeService(request)
        err = rich_error(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "CARD_NOT_FOUND")
    card = grpc_server.verification().ActivateCard(personal_card(1, doc(1))).card
    # Another operator's card does not exist for the caller.
    with pytest.raises(grpc.RpcError) as info:
        ask(grpc_server, card.msisdn, principal="operator-cucc")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    grpc_server.verification().DeactivateCard(
        vpb.DeactivateCardRequest(request_id="d", msisdn=card.msisdn)
    )
    assert ask(grpc_server, card.msisdn, VOICE, IN) == (False, "DEACTIVATED")
    assert ask(grpc_server, iccid=card.iccid) == (False, "DEACTIVATED")


def test_undelivered_and_suspended_cards_are_refused(
    grpc_server: GrpcHarness, db: Database
) -> None:
    stub = grpc_server.verification()
    pending = stub.ActivateCard(personal_card(1, doc(1))).card
    disputed = stub.ActivateCard(personal_card(2, doc(1))).card
    set_card(db, pending.msisdn, state="PENDING_DELIVERY")
    set_card(db, disputed.msisdn, state="SUSPENDED", suspension="DISPUTED")
    assert set(every_session(grpc_server, pending.msisdn).values()) == {(False, "NOT_DELIVERED")}
    assert set(every_session(grpc_server, disputed.msisdn).values()) == {(False, "DISPUTED")}


def test_deadline_stages_are_honoured(grpc_server: GrpcHarness, db: Database) -> None:
    stub = grpc_server.verification()
    outgoing = stub.ActivateCard(personal_card(1, doc(1))).card
    everything = stub.ActivateCard(personal_card(2, doc(1))).card
    set_card(db, outgoing.msisdn, service_stage="OUTGOING_BARRED")
    set_card(db, everything.msisdn, service_stage="ALL_BARRED")
    assert every_session(grpc_server, outgoing.msisdn) == {
        "voice-out": (False, "OUTGOING_BARRED"),
        "voice-in": (True, ""),
        "sms-out": (False, "OUTGOING_BARRED"),
        "sms-in": (True, ""),
        "data-out": (False, "OUTGOING_BARRED"),
        "data-in": (False, "OUTGOING_BARRED"),
    }
    # An unspecified direction is treated as outgoing.
    unspecified = ipb.SESSION_DIRECTION_UNSPECIFIED
    assert ask(grpc_server, outgoing.msisdn, VOICE, unspecified) == (False, "OUTGOING_BARRED")
    assert set(every_session(grpc_server, everything.msisdn).values()) == {(False, "ALL_BARRED")}


def test_industry_cards_get_data_only_on_their_scenario_apns(grpc_server: GrpcHarness) -> None:
    register(grpc_server, 1)
    card = grpc_server.verification().ActivateCard(industry_card(1)).card
    sessions = every_session(grpc_server, card.msisdn, apn="bus.iot")
    assert sessions == {
        "voice-out": (False, "INDUSTRY_DATA_ONLY"),
        "voice-in": (False, "INDUSTRY_DATA_ONLY"),
        "sms-out": (False, "INDUSTRY_DATA_ONLY"),
        "sms-in": (False, "INDUSTRY_DATA_ONLY"),
        "data-out": (True, ""),
        "data-in": (True, ""),
    }
    assert ask(grpc_server, card.msisdn, apn="TICKET.bus.cmiot") == (True, "")
    assert ask(grpc_server, iccid=card.iccid, apn="bus.iot") == (True, "")
    # The meter scenario's APN, the internet APN and no APN at all are refused.
    for apn in ("meter.iot", "cmnet", ""):
        assert ask(grpc_server, card.msisdn, apn=apn) == (False, "APN_NOT_ALLOWED")


def test_a_bound_card_in_another_device_is_suspended(grpc_server: GrpcHarness) -> None:
    register(grpc_server, 1)
    stub = grpc_server.verification()
    card = stub.ActivateCard(industry_card(1, device=imei(7))).card
    assert ask(grpc_server, card.msisdn, device=imei(7), apn="bus.iot") == (True, "")
    # An IMEISV carries the same TAC and serial (first 14 digits) plus a software version.
    imeisv = imei(7)[:14] + "03"
    assert ask(grpc_server, card.msisdn, device=imeisv, apn="bus.iot") == (True, "")
    # Without an IMEI the binding cannot be checked: refused, but nothing is suspended.
    assert ask(grpc_server, card.msisdn, apn="bus.iot") == (False, "IMEI_REQUIRED")
    assert stub.GetCard(vpb.GetCardRequest(msisdn=card.msisdn)).card.state == vpb.CARD_STATE_ACTIVE
    assert ask(grpc_server, card.msisdn, device=imei(8), apn="bus.iot") == (
        False,
        "DEVICE_MISMATCH",
    )
    suspended = stub.GetCard(vpb.GetCardRequest(msisdn=card.msisdn)).card
    assert (suspended.state, suspended.suspension) == (vpb.CARD_STATE_SUSPENDED, "DEVICE_MISMATCH")
    # Suspended: even the bound device is refused now.
    assert ask(grpc_server, card.msisdn, device=imei(7), apn="bus.iot") == (
        False,
        "DEVICE_MISMATCH",
    )
    # An unbound industry card is not suspended by any device.
    free = stub.ActivateCard(industry_card(2)).card
    assert ask(grpc_server, free.msisdn, device=imei(9), apn="bus.iot") == (True, "")


def test_bad_questions_are_invalid_arguments(grpc_server: GrpcHarness) -> None:
    card = grpc_server.verification().ActivateCard(personal_card(1, doc(1))).card
    cases = [
        (ipb.AuthorizeServiceRequest(service=DATA), ["card"]),
        (ipb.AuthorizeServiceRequest(msisdn=card.msisdn), ["service"]),
        (ipb.AuthorizeServiceRequest(msisdn="12345", service=VOICE), ["msisdn"]),
        (ipb.AuthorizeServiceRequest(iccid="8986", service=VOICE), ["iccid"]),
        (
            ipb.AuthorizeServiceRequest(msisdn=card.msisdn, service=DATA, imei="12ab", apn="a..b"),
            ["imei", "apn"],
        ),
        (ipb.AuthorizeServiceRequest(msisdn=card.msisdn, service=DATA, direction=7), ["direction"]),  # type: ignore[arg-type]
    ]
    for request, fields in cases:
        with pytest.raises(grpc.RpcError) as info:
            network(grpc_server).AuthorizeService(request)
        err = rich_error(info.value)
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT, request
        assert [f for f, _ in err.field_violations] == fields
