"""Enterprises and industry cards over mTLS, on SQLite and PostgreSQL: quota, rules, scenarios."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from registry.pki.uscc import check_character
from services.domain.numbers import luhn_complete
from services.domain.pseudonym import Pseudonymizer
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import industry_pb2 as ipb
from services.proto.realname.v1 import industry_pb2_grpc as igrpc
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage.database import Database
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.registry import RegistryHarness, authorize, registry_server
from tests.support.rpc import rich_error
from tests.support.server import GrpcHarness

ID = cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD
RESPONSIBLE = 40  # resident_id sequence of the enterprises' responsible person


def credit_code(seq: int) -> str:
    """A valid unified social credit code (GB 32100 check character)."""
    first17 = f"91110108MA{seq:07d}"
    return first17 + check_character(first17)


def imei(seq: int) -> str:
    """A valid 15-digit IMEI (Luhn check digit)."""
    return luhn_complete(f"35{seq:012d}")


def doc(seq: int = RESPONSIBLE) -> cpb.Document:
    return cpb.Document(type=ID, number=resident_id(seq))


def enterprises(
    harness: GrpcHarness, principal: str = "operator-cmcc"
) -> igrpc.EnterpriseServiceStub:
    return igrpc.EnterpriseServiceStub(harness.channel(principal))


def register(
    harness: GrpcHarness,
    seq: int = 1,
    *,
    quota: int = 3,
    principal: str = "operator-cmcc",
    scenarios: dict[str, list[str]] | None = None,
) -> ipb.Enterprise:
    """Registers enterprise ``seq`` with a bus-card and a meter scenario by default."""
    declared = scenarios or {"bus-card": ["bus.iot", "Ticket.Bus.CMIOT"], "meter": ["meter.iot"]}
    request = ipb.RegisterEnterpriseRequest(
        credit_code=credit_code(seq),
        name=f"Demo Transit Co. {seq}",
        responsible_person=doc(),
        scenarios=[ipb.Scenario(name=n, apns=a) for n, a in declared.items()],
        card_quota=quota,
    )
    return enterprises(harness, principal).RegisterEnterprise(request).enterprise


def industry_card(
    seq: int,
    *,
    enterprise: int = 1,
    scenario: str = "bus-card",
    device: str = "",
    document: cpb.Document | None = None,
    prefix: str = "138",
    request_id: str | None = None,
) -> vpb.ActivateCardRequest:
    """An ActivateCard request for an industry card of ``enterprise``."""
    return vpb.ActivateCardRequest(
        request_id=request_id or f"iot-{prefix}-{seq}",
        document=document or doc(),
        msisdn=msisdn(prefix, 50_000 + seq),
        iccid=iccid(int(prefix) * 100_000 + 50_000 + seq),
        card_type=cpb.CARD_TYPE_INDUSTRY,
        channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id="agent-1")),
        industry=vpb.IndustryBinding(
            enterprise_id=credit_code(enterprise), scenario=scenario, imei=device
        ),
    )


def personal_card(seq: int, document: cpb.Document, prefix: str = "138") -> vpb.ActivateCardRequest:
    return vpb.ActivateCardRequest(
        request_id=f"p-{prefix}-{seq}",
        document=document,
        msisdn=msisdn(prefix, seq),
        iccid=iccid(int(prefix) * 100_000 + seq),
        card_type=cpb.CARD_TYPE_PERSONAL,
        channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id="agent-1")),
    )


def eligibility(
    harness: GrpcHarness,
    *,
    enterprise: int = 1,
    scenario: str = "bus-card",
    document: int = RESPONSIBLE,
) -> vpb.CheckEligibilityResponse:
    return harness.verification().CheckEligibility(
        vpb.CheckEligibilityRequest(
            document=doc(document),
            card_type=cpb.CARD_TYPE_INDUSTRY,
            industry=vpb.IndustryBinding(enterprise_id=credit_code(enterprise), scenario=scenario),
        )
    )


def failure(call: object, *args: object) -> tuple[grpc.StatusCode, str | None, str]:
    """Calls ``call(*args)``, which must fail; returns (code, reason, message)."""
    with pytest.raises(grpc.RpcError) as info:
        call(*args)  # type: ignore[operator]
    err = rich_error(info.value)
    assert err.domain == "realname"
    return err.code, err.reason, err.message


def active_of(harness: GrpcHarness, seq: int = 1, principal: str = "operator-cmcc") -> int:
    got = enterprises(harness, principal).GetEnterprise(
        ipb.GetEnterpriseRequest(credit_code=credit_code(seq))
    )
    return got.enterprise.active_cards


def test_register_get_and_list_enterprises_per_operator(grpc_server: GrpcHarness) -> None:
    first = register(grpc_server, 1)
    assert first.credit_code == credit_code(1)
    assert first.card_quota == 3 and first.active_cards == 0
    assert (
        first.responsible_document_masked
        == resident_id(RESPONSIBLE)[:4] + "*" * 10 + resident_id(RESPONSIBLE)[-4:]
    )
    assert resident_id(RESPONSIBLE) not in str(first)
    scenarios = {s.name: list(s.apns) for s in first.scenarios}
    # APNs are case-insensitive: stored lower-case, sorted.
    assert scenarios == {"bus-card": ["bus.iot", "ticket.bus.cmiot"], "meter": ["meter.iot"]}
    for seq in (3, 2):
        register(grpc_server, seq)
    stub = enterprises(grpc_server)
    page = stub.ListEnterprises(ipb.ListEnterprisesRequest(page_size=2))
    assert [e.credit_code for e in page.enterprises] == [credit_code(1), credit_code(2)]
    rest = stub.ListEnterprises(ipb.ListEnterprisesRequest(page_token=page.next_page_token))
    assert [e.credit_code for e in rest.enterprises] == [credit_code(3)]
    assert rest.next_page_token == ""
    # The credit code is case-insensitive on the way in.
    lower = ipb.GetEnterpriseRequest(credit_code=credit_code(1).lower())
    assert stub.GetEnterprise(lower).enterprise.name == "Demo Transit Co. 1"
    # Another operator neither sees nor finds them, and may register the same enterprise itself.
    cucc = enterprises(grpc_server, "operator-cucc")
    assert list(cucc.ListEnterprises(ipb.ListEnterprisesRequest()).enterprises) == []
    code, reason, _ = failure(
        cucc.GetEnterprise, ipb.GetEnterpriseRequest(credit_code=credit_code(1))
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "ENTERPRISE_NOT_FOUND")
    assert register(grpc_server, 1, principal="operator-cucc", quota=9).card_quota == 9
    code, reason, _ = failure(register, grpc_server, 1)
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "ENTERPRISE_EXISTS")
    assert active_of(grpc_server, 1) == 0


def test_bad_registrations_list_every_bad_field_and_store_nothing(grpc_server: GrpcHarness) -> None:
    bad_check = credit_code(1)[:-1] + ("0" if credit_code(1)[-1] != "0" else "1")
    request = ipb.RegisterEnterpriseRequest(
        credit_code=bad_check,
        name="",
        responsible_person=cpb.Document(type=ID, number="110105199003070001"),
        scenarios=[
            ipb.Scenario(name="Bus Card", apns=["bus.iot"]),
            ipb.Scenario(name="meter", apns=[]),
            ipb.Scenario(name="pos", apns=["-bad-.apn"]),
        ],
        card_quota=0,
    )
    with pytest.raises(grpc.RpcError) as info:
        enterprises(grpc_server).RegisterEnterprise(request)
    err = rich_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = [f for f, _ in err.field_violations]
    assert fields == [
        "credit_code", "name", "responsible_person.number", "scenarios[0].name",
        "scenarios[1].apns", "scenarios[2].apns[0]", "card_quota",
    ]  # fmt: skip
    assert "check character" in dict(err.field_violations)["credit_code"]
    assert "110105199003070001" not in err.message
    empty = enterprises(grpc_server).ListEnterprises(ipb.ListEnterprisesRequest())
    assert list(empty.enterprises) == []
    dup = ipb.RegisterEnterpriseRequest(
        credit_code=credit_code(1), name="x", responsible_person=doc(), card_quota=1,
        scenarios=[ipb.Scenario(name="pos", apns=["a"]), ipb.Scenario(name="pos", apns=["b"])],
    )  # fmt: skip
    code, _, message = failure(enterprises(grpc_server).RegisterEnterprise, dup)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "declared twice" in message


def test_industry_cards_count_under_the_enterprise_quota_not_the_personal_cap(
    grpc_server: GrpcHarness,
) -> None:
    register(grpc_server, 1, quota=3)
    stub = grpc_server.verification()
    # The responsible person's own five personal cards do not stop the enterprise's cards.
    for i in range(5):
        stub.ActivateCard(personal_card(i, doc()))
    answer = eligibility(grpc_server)
    assert (answer.eligible, answer.active_cards, answer.limit, answer.reason) == (True, 0, 3, "")
    cards = [
        stub.ActivateCard(industry_card(i, device=imei(i) if i else "")).card for i in range(3)
    ]
    assert all(c.card_type == cpb.CARD_TYPE_INDUSTRY for c in cards)
    assert cards[0].industry.enterprise_id == credit_code(1)
    assert cards[0].industry.scenario == "bus-card" and cards[0].industry.imei == ""
    assert cards[1].industry.imei == imei(1)
    assert active_of(grpc_server) == 3
    code, reason, message = failure(stub.ActivateCard, industry_card(3))
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "ENTERPRISE_QUOTA_REACHED")
    assert "quota of 3" in message
    with pytest.raises(grpc.RpcError) as info:
        stub.ActivateCard(industry_card(3))
    err = rich_error(info.value)
    assert err.quota_violations[0][0] == f"enterprise:{credit_code(1)}/operator:cmcc"
    answer = eligibility(grpc_server)
    assert (answer.eligible, answer.active_cards, answer.limit) == (False, 3, 3)
    assert answer.reason == "ENTERPRISE_QUOTA_REACHED"
    personal = stub.CheckEligibility(
        vpb.CheckEligibilityRequest(document=doc(), card_type=cpb.CARD_TYPE_PERSONAL)
    )
    assert (personal.active_cards, personal.reason) == (5, "CARD_LIMIT_REACHED")
    # Deactivating an industry card gives back enterprise quota, not a personal slot.
    stub.DeactivateCard(vpb.DeactivateCardRequest(request_id="d-iot", msisdn=cards[0].msisdn))
    assert active_of(grpc_server) == 2
    personal = stub.CheckEligibility(
        vpb.CheckEligibilityRequest(document=doc(), card_type=cpb.CARD_TYPE_PERSONAL)
    )
    assert personal.active_cards == 5
    stub.ActivateCard(industry_card(4))
    assert active_of(grpc_server) == 3
    # Deactivating a personal card frees a personal slot and leaves the quota alone.
    stub.DeactivateCard(vpb.DeactivateCardRequest(request_id="d-p", msisdn=msisdn("138", 0)))
    assert active_of(grpc_server) == 3
    personal = stub.CheckEligibility(
        vpb.CheckEligibilityRequest(document=doc(), card_type=cpb.CARD_TYPE_PERSONAL)
    )
    assert personal.active_cards == 4


def test_industry_refusals_change_nothing_and_are_replayed(grpc_server: GrpcHarness) -> None:
    register(grpc_server, 1)
    register(grpc_server, 2, principal="operator-cucc")
    stub = grpc_server.verification()
    cases = [
        (industry_card(1, enterprise=9), "ENTERPRISE_NOT_REGISTERED"),
        # Registered, but with another operator.
        (industry_card(2, enterprise=2), "ENTERPRISE_NOT_REGISTERED"),
        (industry_card(3, scenario="vehicle"), "SCENARIO_NOT_DECLARED"),
        (industry_card(4, document=doc(41)), "NOT_RESPONSIBLE_PERSON"),
    ]
    for request, expected in cases:
        for _ in range(2):  # the retry replays the recorded refusal
            code, reason, message = failure(stub.ActivateCard, request)
            assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, expected)
            assert resident_id(41) not in message and resident_id(RESPONSIBLE) not in message
    assert active_of(grpc_server) == 0
    assert active_of(grpc_server, 2, "operator-cucc") == 0
    # The numbers were not taken: a good request with them succeeds.
    assert (
        stub.ActivateCard(industry_card(3, request_id="ok-3")).card.state == vpb.CARD_STATE_ACTIVE
    )
    for request, expected in (
        (industry_card(9, enterprise=9), "ENTERPRISE_NOT_REGISTERED"),
        (industry_card(9, scenario="vehicle"), "SCENARIO_NOT_DECLARED"),
        (industry_card(9, document=doc(41)), "NOT_RESPONSIBLE_PERSON"),
    ):
        binding = request.industry
        answer = stub.CheckEligibility(
            vpb.CheckEligibilityRequest(
                document=request.document, card_type=cpb.CARD_TYPE_INDUSTRY, industry=binding
            )
        )
        assert (answer.eligible, answer.reason) == (False, expected)


def test_industry_requests_are_validated(grpc_server: GrpcHarness) -> None:
    register(grpc_server, 1)
    stub = grpc_server.verification()
    missing = industry_card(1)
    missing.ClearField("industry")
    bad_binding = industry_card(2)
    bad_binding.industry.enterprise_id = credit_code(1)[:-1] + "I"
    bad_binding.industry.scenario = "Bus Card"
    bad_binding.industry.imei = imei(1)[:-1] + str((int(imei(1)[-1]) + 1) % 10)
    personal_with_binding = industry_card(3)
    personal_with_binding.card_type = cpb.CARD_TYPE_PERSONAL
    for request, fields in (
        (missing, ["card_type"]),
        (bad_binding, ["industry.enterprise_id", "industry.scenario", "industry.imei"]),
        (personal_with_binding, ["industry"]),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.ActivateCard(request)
        err = rich_error(info.value)
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in err.field_violations] == fields
    no_binding = vpb.CheckEligibilityRequest(document=doc(), card_type=cpb.CARD_TYPE_INDUSTRY)
    code, _, _ = failure(stub.CheckEligibility, no_binding)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert active_of(grpc_server) == 0


def test_concurrent_industry_activations_never_exceed_the_quota(grpc_server: GrpcHarness) -> None:
    register(grpc_server, 1, quota=7)
    stub = grpc_server.verification()
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def worker(w: int) -> None:
        start.wait()
        for i in range(4):
            try:
                stub.ActivateCard(industry_card(w * 10 + i), timeout=60)
                result = "ok"
            except grpc.RpcError as exc:
                result = rich_error(exc).reason or exc.code().name
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 7
    assert outcomes.count("ENTERPRISE_QUOTA_REACHED") == 12 * 4 - 7
    assert active_of(grpc_server) == 7


def test_scenarios_can_change_but_not_under_live_cards(grpc_server: GrpcHarness) -> None:
    register(grpc_server, 1)
    stub = grpc_server.verification()
    card = stub.ActivateCard(industry_card(1, scenario="meter")).card
    desk = enterprises(grpc_server)
    only_bus = ipb.UpdateScenariosRequest(
        credit_code=credit_code(1), scenarios=[ipb.Scenario(name="bus-card", apns=["bus.iot"])]
    )
    code, reason, message = failure(desk.UpdateScenarios, only_bus)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SCENARIO_IN_USE")
    assert "meter" in message
    more = ipb.UpdateScenariosRequest(
        credit_code=credit_code(1),
        scenarios=[
            ipb.Scenario(name="meter", apns=["meter.iot"]),
            ipb.Scenario(name="vehicle", apns=["car.iot", "car2.iot"]),
        ],
    )
    updated = desk.UpdateScenarios(more).enterprise
    assert [s.name for s in updated.scenarios] == ["meter", "vehicle"]
    assert (
        stub.ActivateCard(industry_card(2, scenario="vehicle")).card.industry.scenario == "vehicle"
    )
    code, reason, _ = failure(stub.ActivateCard, industry_card(3, scenario="bus-card"))
    assert reason == "SCENARIO_NOT_DECLARED"
    stub.DeactivateCard(vpb.DeactivateCardRequest(request_id="d", msisdn=card.msisdn))
    only_vehicle = ipb.UpdateScenariosRequest(
        credit_code=credit_code(1), scenarios=[ipb.Scenario(name="vehicle", apns=["car.iot"])]
    )
    assert [s.name for s in desk.UpdateScenarios(only_vehicle).enterprise.scenarios] == ["vehicle"]
    unknown = ipb.UpdateScenariosRequest(
        credit_code=credit_code(8), scenarios=only_vehicle.scenarios
    )
    assert failure(desk.UpdateScenarios, unknown)[1] == "ENTERPRISE_NOT_FOUND"


@pytest.fixture
def registry_harness(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> Iterator[RegistryHarness]:
    with registry_server(db, pki_dir, pseudonymizer, tmp_path / "data") as harness:
        yield harness


def test_an_undelivered_industry_card_gives_back_enterprise_quota(
    registry_harness: RegistryHarness,
) -> None:
    h = registry_harness
    register(h, 1, quota=1)
    serial = authorize(h, shop_id="iot-store", card_types=(cpb.CARD_TYPE_INDUSTRY,)).serial
    request = industry_card(1)
    request.channel.online.store_authorization_serial = serial
    card = h.verification().ActivateCard(request).card
    assert card.state == vpb.CARD_STATE_PENDING_DELIVERY
    assert active_of(h) == 1
    assert failure(h.verification().ActivateCard, industry_card(2))[1] == "ENTERPRISE_QUOTA_REACHED"
    assert h.app is not None and h.app.deliveries is not None
    released = h.app.deliveries.expire(dt.datetime.now(dt.UTC) + dt.timedelta(days=60))
    assert released == 1
    assert active_of(h) == 0
    personal = h.verification().CheckEligibility(
        vpb.CheckEligibilityRequest(document=doc(), card_type=cpb.CARD_TYPE_PERSONAL)
    )
    assert personal.active_cards == 0  # the person's holdings were never touched
    assert (
        h.verification().ActivateCard(industry_card(2, request_id="again")).card.state
        == vpb.CARD_STATE_ACTIVE
    )
