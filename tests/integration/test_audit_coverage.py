"""Every RPC that reads or changes subscriber data leaves an audit record, found by the regulator.

Which methods touch subscriber data is declared on each service binding; the first test walks
every RPC of every service descriptor and fails for one that is not declared either way. The
others call RPCs that once left no record and look for it through SupervisionService/QueryAudit.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.descriptor import ServiceDescriptor

import services.proto.realname.v1 as proto_package
from services.app import App
from services.domain.pseudonym import Pseudonymizer
from services.features.transparency import TransparencyLog
from services.proto.realname.v1 import agents_pb2 as apb
from services.proto.realname.v1 import citizen_pb2 as zpb
from services.proto.realname.v1 import citizen_pb2_grpc as zgrpc
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import delivery_pb2 as dpb
from services.proto.realname.v1 import industry_pb2 as ipb
from services.proto.realname.v1 import industry_pb2_grpc as igrpc
from services.proto.realname.v1 import legacy_pb2 as lpb
from services.proto.realname.v1 import proofing_pb2 as ppb
from services.proto.realname.v1 import proofing_pb2_grpc as pgrpc
from services.proto.realname.v1 import supervision_pb2 as spb
from services.proto.realname.v1 import supervision_pb2_grpc as sgrpc
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage.database import Database, DatabaseConfig
from tests.integration.test_delivery_rpc import confirm, desk, new_store, sell, token_for, verify
from tests.integration.test_industry import credit_code, register
from tests.support.agents import agent_stub, register_agents
from tests.support.databases import SqliteDatabases
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.legacy_rows import good_rows, import_rows
from tests.support.logdata import log_signer
from tests.support.registry import RegistryHarness, registry_server
from tests.support.server import GrpcHarness

ID = cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD
AGENT = "shop-audit-cov"
OPERATORS = {"operator-cmcc": "138", "operator-cucc": "186"}


def services_of_every_descriptor() -> Iterator[ServiceDescriptor]:
    """Every service of every generated ``*_pb2`` module of realname.v1."""
    for module in pkgutil.iter_modules(proto_package.__path__):
        if module.name.endswith("_pb2"):
            loaded = importlib.import_module(f"{proto_package.__name__}.{module.name}")
            yield from loaded.DESCRIPTOR.services_by_name.values()


def test_every_rpc_is_declared_as_touching_subscriber_data_or_not(
    sqlite_databases: SqliteDatabases, tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    """A new RPC must be declared in its ServiceBinding: recorded in the audit trail, or not."""
    db = Database(DatabaseConfig(sqlite_databases.new(tmp_path / "db")))
    try:
        app = App.build(db, pseudonymizer, log=TransparencyLog.create(db, log_signer()))
        bindings = {b.name: b for b in app.bindings()}
    finally:
        db.dispose()
    problems = []
    for service in services_of_every_descriptor():
        binding = bindings.get(service.full_name)
        if binding is None:
            problems.append(f"{service.full_name}: no ServiceBinding serves this service")
            continue
        methods = {m.name for m in service.methods}
        for name in sorted(methods):
            touches = name in binding.subscriber_data
            if touches == (name in binding.no_subscriber_data):
                where = "both" if touches else "neither"
                problems.append(
                    f"{service.full_name}/{name}: in {where} of subscriber_data and "
                    f"no_subscriber_data of its ServiceBinding; declare it in exactly one"
                )
        for name in sorted((binding.subscriber_data | binding.no_subscriber_data) - methods):
            problems.append(f"{service.full_name}/{name}: declared but the service has no such RPC")
    assert not problems, "\n".join(problems)


@pytest.fixture
def served(grpc_server: GrpcHarness) -> GrpcHarness:
    for principal in OPERATORS:
        register_agents(grpc_server.channel(principal), [AGENT])
    return grpc_server


def doc(seq: int) -> cpb.Document:
    return cpb.Document(type=ID, number=resident_id(seq))


def activate(
    server: GrpcHarness, seq: int, holder: int, principal: str = "operator-cmcc"
) -> vpb.Card:
    prefix = OPERATORS[principal]
    return (
        server.verification(principal)
        .ActivateCard(
            vpb.ActivateCardRequest(
                request_id=f"cov-{prefix}-{seq}",
                document=doc(holder),
                msisdn=msisdn(prefix, 4000 + seq),
                iccid=iccid(int(prefix) * 10_000 + 4000 + seq),
                card_type=cpb.CARD_TYPE_PERSONAL,
                channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id=AGENT)),
            )
        )
        .card
    )


def recorded(server: GrpcHarness, holder: cpb.Document) -> list[str]:
    """The RPC names the regulator finds in the audit trail for a document, oldest first."""
    assert server.app is not None and server.app.audit is not None
    server.app.audit.flush()
    found = sgrpc.SupervisionServiceStub(server.channel("regulator")).QueryAudit(
        spb.QueryAuditRequest(document=holder, limit=1000)
    )
    return [e.method.rsplit("/", 1)[1] for e in reversed(found.entries)]


def recorded_for(server: GrpcHarness, principal: str) -> list[tuple[str, str]]:
    """(RPC name, subject) of a principal's audit records, oldest first."""
    assert server.app is not None and server.app.audit is not None
    server.app.audit.flush()
    found = sgrpc.SupervisionServiceStub(server.channel("regulator")).QueryAudit(
        spb.QueryAuditRequest(principal=principal, limit=1000)
    )
    return [(e.method.rsplit("/", 1)[1], e.subject) for e in reversed(found.entries)]


def test_listing_and_reverifying_a_dispute_are_recorded(served: GrpcHarness) -> None:
    card = activate(served, 1, holder=901, principal="operator-cucc")
    [mine] = (
        zgrpc.CitizenServiceStub(served.channel("citizen-portal"))
        .ListMyCards(zpb.ListMyCardsRequest(document=doc(901)))
        .cards
    )
    opened = zgrpc.CitizenServiceStub(served.channel("citizen-portal")).DisputeCard(
        zpb.DisputeCardRequest(
            document=doc(901), card_ref=mine.card_ref, reason=zpb.DISPUTE_REASON_NOT_MINE
        )
    )
    disputes = zgrpc.DisputeServiceStub(served.channel("operator-cucc"))
    listed = disputes.ListDisputes(zpb.ListDisputesRequest())
    assert [d.msisdn for d in listed.disputes] == [card.msisdn]  # full numbers: an access
    disputes.ResolveDispute(
        zpb.ResolveDisputeRequest(
            dispute_id=opened.dispute.dispute_id, resolution=zpb.DISPUTE_RESOLUTION_REVERIFIED
        )
    )
    got = served.verification("operator-cucc").GetCard(vpb.GetCardRequest(msisdn=card.msisdn))
    assert got.card.state == vpb.CARD_STATE_ACTIVE  # back from SUSPENDED: a change of the card
    methods = recorded(served, doc(901))
    assert methods[-3:] == ["ListDisputes", "ResolveDispute", "GetCard"], methods


def test_a_legacy_import_is_recorded_under_the_documents_it_carries(served: GrpcHarness) -> None:
    rows = good_rows(3)
    rows[1] = (rows[1][0], rows[1][1], "VERIFIED", "resident-id-card", resident_id(902))
    done = import_rows(served.channel("operator-cmcc"), rows, "c0" * 32)
    assert done.legacy_import.state == lpb.IMPORT_STATE_COMPLETED
    assert recorded(served, doc(902)) == ["ImportLegacy"]
    # The validation pass reads the file's documents too: recorded, without a subject.
    imports = [s for m, s in recorded_for(served, "operator-cmcc") if m == "ImportLegacy"]
    assert imports[0] == "" and imports[1] != "", imports


def test_listing_agent_signals_is_recorded_under_their_documents(served: GrpcHarness) -> None:
    for seq in range(5):  # the fifth fills the cap: a DOCUMENT_AT_CAP signal names the document
        activate(served, 10 + seq, holder=903)
    stub = agent_stub(served.channel("operator-cmcc"))
    signals = stub.ListAgentSignals(apb.ListAgentSignalsRequest()).signals
    assert [s.kind for s in signals] == ["DOCUMENT_AT_CAP"]
    assert recorded(served, doc(903))[-1] == "ListAgentSignals"


def test_authorizing_a_session_is_recorded(served: GrpcHarness) -> None:
    card = activate(served, 20, holder=904)
    answer = igrpc.NetworkServiceStub(served.channel("operator-cmcc")).AuthorizeService(
        ipb.AuthorizeServiceRequest(
            msisdn=card.msisdn,
            service=ipb.SERVICE_TYPE_VOICE,
            direction=ipb.SESSION_DIRECTION_OUTGOING,
        )
    )
    assert answer.allowed
    assert recorded(served, doc(904))[-1] == "AuthorizeService"


def test_reading_enterprises_is_recorded_under_the_responsible_person(
    served: GrpcHarness,
) -> None:
    register(served, 7)  # the responsible person is resident_id(40)
    stub = igrpc.EnterpriseServiceStub(served.channel("operator-cmcc"))
    stub.GetEnterprise(ipb.GetEnterpriseRequest(credit_code=credit_code(7)))
    stub.ListEnterprises(ipb.ListEnterprisesRequest())
    stub.UpdateScenarios(
        ipb.UpdateScenariosRequest(
            credit_code=credit_code(7), scenarios=[ipb.Scenario(name="meter", apns=["meter.iot"])]
        )
    )
    methods = recorded(served, doc(40))
    assert methods == [
        "RegisterEnterprise", "GetEnterprise", "ListEnterprises", "UpdateScenarios"
    ], methods  # fmt: skip


def test_a_subscriber_data_call_naming_no_document_is_still_recorded(served: GrpcHarness) -> None:
    """ListDisputes with nothing to list still read the operator's disputes: one record."""
    zgrpc.DisputeServiceStub(served.channel("operator-cucc")).ListDisputes(
        zpb.ListDisputesRequest()
    )
    # A method declared free of subscriber data leaves none.
    pgrpc.ProofingServiceStub(served.channel("operator-cucc")).GetProofingPolicy(
        ppb.GetProofingPolicyRequest()
    )
    assert recorded_for(served, "operator-cucc") == [("ListDisputes", "")]


@pytest.fixture
def registry(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> Iterator[RegistryHarness]:
    with registry_server(db, pki_dir, pseudonymizer, tmp_path / "data") as harness:
        yield harness


def test_courier_checks_handovers_and_unlocks_are_recorded(registry: RegistryHarness) -> None:
    store = new_store(registry, "audit-door")
    card = sell(registry, store, 31, number=resident_id(905))
    token = token_for(store, card, number=resident_id(905))
    assert verify(registry, token, resident_id(905)) == "OK"
    digest = (
        desk(registry)
        .VerifyDelivery(dpb.VerifyDeliveryRequest(token=token, presented_document=doc(905)))
        .verdict.token_digest
    )
    desk(registry, "operator-cmcc").UnlockShipment(dpb.UnlockShipmentRequest(token_digest=digest))
    assert confirm(registry, token, resident_id(905)).delivery.courier_staff_id == "staff-7"
    methods = recorded(registry, doc(905))
    assert methods == [
        "ActivateCard", "VerifyDelivery", "VerifyDelivery", "UnlockShipment", "ConfirmDelivery"
    ], methods  # fmt: skip
