"""Online-channel activation needs a valid store authorization of the calling operator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from services.domain.pseudonym import Pseudonymizer
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import registry_pb2 as rpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage.database import Database
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.registry import RegistryHarness, authorize, registry_server
from tests.support.rpc import rich_error


@pytest.fixture
def server(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> Iterator[RegistryHarness]:
    with registry_server(db, pki_dir, pseudonymizer, tmp_path / "data") as harness:
        yield harness


def online(seq: int, serial: str, *, prefix: str = "138") -> vpb.ActivateCardRequest:
    return vpb.ActivateCardRequest(
        request_id=f"online-{seq}",
        document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(7)),
        msisdn=msisdn(prefix, seq),
        iccid=iccid(900_000 + seq),
        card_type=cpb.CARD_TYPE_PERSONAL,
        channel=vpb.SalesChannel(online=vpb.OnlineChannel(store_authorization_serial=serial)),
    )


def refused(server: RegistryHarness, request: vpb.ActivateCardRequest, verdict: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        server.verification("operator-cmcc").ActivateCard(request)
    err = rich_error(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SELLER_NOT_AUTHORIZED")
    assert err.metadata["verdict"] == verdict


def cards(server: RegistryHarness) -> list[vpb.Card]:
    document = cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(7))
    listed = server.verification("operator-cmcc").ListCards(vpb.ListCardsRequest(document=document))
    return list(listed.cards)


def test_a_valid_authorization_is_accepted_and_recorded(server: RegistryHarness) -> None:
    serial = authorize(server, shop_id="seller").serial
    card = server.verification("operator-cmcc").ActivateCard(online(1, "0x" + serial)).card
    assert card.channel.online.store_authorization_serial == serial
    # The retry replays the card even after the authorization is revoked.
    server.registry_service("operator-cmcc").RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(serial=serial)
    )
    again = server.verification("operator-cmcc").ActivateCard(online(1, "0x" + serial)).card
    assert again.msisdn == card.msisdn
    refused(server, online(2, serial), "REVOKED")


def test_revoked_foreign_unknown_and_out_of_scope_authorizations_are_refused(
    server: RegistryHarness,
) -> None:
    revoked = authorize(server, shop_id="gone").serial
    server.registry_service("operator-cmcc").RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(serial=revoked)
    )
    refused(server, online(1, revoked), "REVOKED")
    foreign = authorize(server, operator="cucc", shop_id="elsewhere").serial
    refused(server, online(2, foreign), "FOREIGN_OPERATOR")
    refused(server, online(3, "0abc0def"), "UNKNOWN_STORE")
    industry = authorize(server, shop_id="iot-only", card_types=(cpb.CARD_TYPE_INDUSTRY,)).serial
    refused(server, online(4, industry), "OUT_OF_SCOPE")
    assert cards(server) == []
    # Nothing was written: the slot is free, the MSISDN too.
    eligibility = server.verification("operator-cmcc").CheckEligibility(
        vpb.CheckEligibilityRequest(
            document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(7)),
            card_type=cpb.CARD_TYPE_PERSONAL,
        )
    )
    assert eligibility.active_cards == 0
