"""SupervisionService: enforcement records, the activation suspension, audit queries."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import grpc
import pytest

from registry.authz import authorities
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import supervision_pb2 as spb
from services.proto.realname.v1 import supervision_pb2_grpc as sgrpc
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage.database import Database, DatabaseConfig, sqlite_url
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.rpc import rich_error
from tests.support.server import GrpcHarness, realname_bin

ID = cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD
AGENT = "shop-sup"


@pytest.fixture
def served(grpc_server: GrpcHarness) -> GrpcHarness:
    from tests.support.agents import register_agents

    for principal in ("operator-vno1", "operator-cmcc"):
        register_agents(grpc_server.channel(principal), [AGENT])
    return grpc_server


def regulator(server: GrpcHarness, principal: str = "regulator") -> sgrpc.SupervisionServiceStub:
    return sgrpc.SupervisionServiceStub(server.channel(principal))


def activate(server: GrpcHarness, principal: str, prefix: str, seq: int) -> vpb.Card:
    return (
        server.verification(principal)
        .ActivateCard(
            vpb.ActivateCardRequest(
                request_id=f"sup-{prefix}-{seq}",
                document=cpb.Document(type=ID, number=resident_id(seq)),
                msisdn=msisdn(prefix, seq),
                iccid=iccid(int(prefix) * 100 + seq),
                card_type=cpb.CARD_TYPE_PERSONAL,
                channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id=AGENT)),
            )
        )
        .card
    )


def record(server: GrpcHarness, operator: str, kind: int, amount: int = 0, reason: str = "x"):  # type: ignore[no-untyped-def]
    return regulator(server).RecordEnforcement(
        spb.RecordEnforcementRequest(
            operator=operator,
            kind=kind,  # type: ignore[arg-type]
            amount_yuan=amount,
            reason=reason,
        )
    )


def test_suspended_operator_cannot_activate_until_lifted(served: GrpcHarness) -> None:
    activate(served, "operator-vno1", "1700", 1)
    answer = record(
        served, "vno1", spb.ENFORCEMENT_KIND_SUSPEND_ACTIVATION, reason="false registrations"
    )
    assert answer.standing.activation_suspended
    assert answer.standing.licence_status == "SUSPENDED" and answer.standing.kind == "virtual"

    with pytest.raises(grpc.RpcError) as info:
        activate(served, "operator-vno1", "1700", 2)
    err = rich_error(info.value)
    assert (err.code, err.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "OPERATOR_SUSPENDED_BY_REGULATOR",
    )
    # Other operators are unaffected, and the suspended one still serves its existing cards.
    activate(served, "operator-cmcc", "138", 3)
    served.verification("operator-vno1").GetCard(vpb.GetCardRequest(msisdn=msisdn("1700", 1)))

    lifted = regulator(served).LiftSuspension(
        spb.LiftSuspensionRequest(action_id=answer.action.action_id)
    )
    assert lifted.action.lifted_at.seconds and not lifted.standing.activation_suspended
    assert lifted.standing.licence_status == "ON_RECORD"
    activate(served, "operator-vno1", "1700", 4)

    with pytest.raises(grpc.RpcError) as info:  # lifting twice
        regulator(served).LiftSuspension(
            spb.LiftSuspensionRequest(action_id=answer.action.action_id)
        )
    assert rich_error(info.value).reason == "NOT_A_LIVE_SUSPENSION"


def eligibility(server: GrpcHarness, principal: str, seq: int) -> vpb.CheckEligibilityResponse:
    return server.verification(principal).CheckEligibility(
        vpb.CheckEligibilityRequest(
            document=cpb.Document(type=ID, number=resident_id(seq)),
            card_type=cpb.CARD_TYPE_PERSONAL,
        )
    )


def test_a_suspended_operator_is_answered_not_eligible(served: GrpcHarness) -> None:
    activate(served, "operator-vno1", "1700", 1)
    answer = record(served, "vno1", spb.ENFORCEMENT_KIND_SUSPEND_ACTIVATION, reason="audit")
    # The answer an activation would get: not eligible, with the suspension as the reason.
    suspended = eligibility(served, "operator-vno1", 1)
    assert (suspended.eligible, suspended.reason) == (False, "OPERATOR_SUSPENDED_BY_REGULATOR")
    assert (suspended.active_cards, suspended.limit) == (1, 5)
    assert eligibility(served, "operator-cmcc", 1).eligible  # other operators are unaffected
    regulator(served).LiftSuspension(spb.LiftSuspensionRequest(action_id=answer.action.action_id))
    lifted = eligibility(served, "operator-vno1", 1)
    assert (lifted.eligible, lifted.reason) == (True, "")


def test_fines_are_validated_to_the_regulations_range(served: GrpcHarness) -> None:
    for amount in (9_999, 30_001, 0, -5):
        with pytest.raises(grpc.RpcError) as info:
            record(served, "cmcc", spb.ENFORCEMENT_KIND_FINE, amount)
        err = rich_error(info.value)
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert err.field_violations[0][0] == "amount_yuan"
    with pytest.raises(grpc.RpcError) as info:
        record(served, "cmcc", spb.ENFORCEMENT_KIND_WARNING, 10_000)
    assert rich_error(info.value).field_violations[0][0] == "amount_yuan"
    with pytest.raises(grpc.RpcError) as info:
        record(served, "cmcc", spb.ENFORCEMENT_KIND_WARNING, reason="")
    assert rich_error(info.value).field_violations[0][0] == "reason"
    with pytest.raises(grpc.RpcError) as info:
        record(served, "nosuch", spb.ENFORCEMENT_KIND_WARNING)
    assert rich_error(info.value).code == grpc.StatusCode.NOT_FOUND

    record(served, "cmcc", spb.ENFORCEMENT_KIND_FINE, 10_000, "late real-name checks")
    record(served, "cmcc", spb.ENFORCEMENT_KIND_FINE, 30_000, "batch registrations")
    record(served, "cmcc", spb.ENFORCEMENT_KIND_WARNING, reason="incomplete reports")
    listed = regulator(served).ListEnforcements(spb.ListEnforcementsRequest(operator="cmcc"))
    assert [a.kind for a in listed.actions] == [
        spb.ENFORCEMENT_KIND_WARNING,
        spb.ENFORCEMENT_KIND_FINE,
        spb.ENFORCEMENT_KIND_FINE,
    ]
    (standing,) = listed.standings
    assert (standing.fines, standing.fines_total_yuan, standing.warnings) == (2, 40_000, 1)
    assert standing.licence_status == "ON_RECORD"
    everyone = regulator(served).ListEnforcements(spb.ListEnforcementsRequest())
    assert {s.operator: s.licence_status for s in everyone.standings}["ctcc"] == "GOOD"


def test_only_the_regulator_supervises(served: GrpcHarness) -> None:
    for principal in ("operator-cmcc", "marketplace-demo", "citizen-portal"):
        with pytest.raises(grpc.RpcError) as info:
            regulator(served, principal).ListEnforcements(spb.ListEnforcementsRequest())
        assert rich_error(info.value).reason == "ROLE_NOT_ALLOWED"


def test_the_regulator_queries_the_audit_trail_by_document(served: GrpcHarness) -> None:
    card = activate(served, "operator-cmcc", "138", 7)
    served.verification().GetCard(vpb.GetCardRequest(msisdn=card.msisdn))
    assert served.app is not None and served.app.audit is not None
    served.app.audit.flush()
    found = regulator(served).QueryAudit(
        spb.QueryAuditRequest(document=cpb.Document(type=ID, number=resident_id(7)))
    )
    methods = [e.method.rsplit("/", 1)[1] for e in found.entries]
    assert methods == ["GetCard", "ActivateCard"]
    assert {e.principal for e in found.entries} == {"operator-cmcc"}
    assert all(len(e.subject) == 16 for e in found.entries)
    assert resident_id(7) not in str(found)
    by_principal = regulator(served).QueryAudit(
        spb.QueryAuditRequest(principal="operator-cmcc", limit=1)
    )
    assert len(by_principal.entries) == 1
    with pytest.raises(grpc.RpcError) as info:
        regulator(served).QueryAudit(spb.QueryAuditRequest())
    assert rich_error(info.value).code == grpc.StatusCode.INVALID_ARGUMENT


def test_enforce_cli_suspends_and_revokes_the_authorization_ca(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    def realname(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [realname_bin(), *args], capture_output=True, text=True, check=False, timeout=120
        )

    init = realname("dev-init", "--data-dir", str(data_dir))
    assert init.returncode == 0, init.stderr
    at = ("--data-dir", str(data_dir))
    done = realname(
        "enforce", "record", *at, "--operator", "vno1", "--kind", "suspend-activation",
        "--reason", "batch registrations through unregistered agents", "--revoke-ca",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["action"]["ca_revoked"] and answer["standing"]["licence_status"] == "CA_REVOKED"
    assert answer["standing"]["activation_suspended"]

    db = Database(DatabaseConfig(sqlite_url(data_dir)))
    try:
        generations = db.read(lambda conn: authorities.ca_generations(conn, "vno1"))
    finally:
        db.dispose()
    assert generations and all(ca.revoked_at is not None for ca in generations)

    bad = realname(
        "enforce", "record", *at, "--operator", "cmcc", "--kind", "fine", "--amount", "5000",
        "--reason", "too small",
    )  # fmt: skip
    assert bad.returncode == 1 and "between 10,000 and 30,000" in bad.stderr
    listed = json.loads(realname("enforce", "list", *at, "--operator", "vno1").stdout)
    assert [a["kind"] for a in listed["actions"]] == ["SUSPEND_ACTIVATION"]


def test_the_bench_switch_drops_the_guards(served: GrpcHarness) -> None:
    """REALNAME_LAYERS_OFF=guards (the layer bench's switch) removes the suspension's rule."""
    record(served, "vno1", spb.ENFORCEMENT_KIND_SUSPEND_ACTIVATION, reason="bench")
    assert eligibility(served, "operator-vno1", 2).reason == "OPERATOR_SUSPENDED_BY_REGULATOR"
    assert served.app is not None
    served.app.cards.drop_guards()
    assert eligibility(served, "operator-vno1", 2).eligible
