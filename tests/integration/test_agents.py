"""Agents through the gRPC API: registration, suspension, refusals and fraud signals."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect

from registry.subscribers import DocumentType
from services.cli import main as cli
from services.domain.documents import Document
from services.domain.pseudonym import Pseudonymizer
from services.features.agents import flag_agent
from services.proto.realname.v1 import agents_pb2 as apb
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage import agents_schema, schema
from services.storage.database import Database
from services.storage.rawsql import Tx
from tests.support.agents import agent_stub, register_agents
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.rpc import rich_error
from tests.support.server import (
    GrpcHarness,
    start_harness,
)

CMCC = "operator-cmcc"
CUCC = "operator-cucc"
VNO1 = "operator-vno1"

StartServer = Callable[..., GrpcHarness]


@pytest.fixture
def start_server(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StartServer]:
    """Starts a server whose agent policy comes from the given REALNAME_AGENT_* settings."""
    started: list[GrpcHarness] = []

    def start(**policy: str) -> GrpcHarness:
        for name, value in policy.items():
            monkeypatch.setenv(f"REALNAME_AGENT_{name.upper()}", value)
        harness = start_harness(db, pki_dir, pseudonymizer)
        started.append(harness)
        return harness

    yield start
    for harness in started:
        harness.close()


class Seller:
    """Activations as one operator, with fresh numbers each time."""

    def __init__(self, server: GrpcHarness, principal: str = CMCC, prefix: str = "138") -> None:
        self.stub = server.verification(principal)
        self.prefix = prefix
        self.seq = 0

    def request(self, doc: int, agent: str) -> vpb.ActivateCardRequest:
        self.seq += 1
        return vpb.ActivateCardRequest(
            request_id=f"agents-{self.prefix}-{self.seq}",
            document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(doc)),
            msisdn=msisdn(self.prefix, self.seq),
            iccid=iccid(int(self.prefix) * 1000 + self.seq),
            card_type=cpb.CARD_TYPE_PERSONAL,
            channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id=agent)),
        )

    def sell(self, doc: int, agent: str) -> vpb.Card:
        return self.stub.ActivateCard(self.request(doc, agent), timeout=10).card

    def refused(self, doc: int, agent: str) -> tuple[grpc.StatusCode, str | None, str]:
        request = self.request(doc, agent)
        with pytest.raises(grpc.RpcError) as caught:
            self.stub.ActivateCard(request, timeout=10)
        with pytest.raises(grpc.RpcError) as missing:
            self.stub.GetCard(vpb.GetCardRequest(msisdn=request.msisdn), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # nothing was written
        err = rich_error(caught.value)
        return err.code, err.reason, err.message


def signals(server: GrpcHarness, principal: str = CMCC, **query: str) -> list[apb.AgentSignal]:
    reply = agent_stub(server.channel(principal)).ListAgentSignals(
        apb.ListAgentSignalsRequest(**query), timeout=10
    )
    return list(reply.signals)


def kinds(server: GrpcHarness, principal: str = CMCC) -> list[str]:
    return sorted(s.kind for s in signals(server, principal))


def error_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    err = rich_error(caught.value)
    return err.code, err.reason


def test_register_get_list(start_server: StartServer) -> None:
    server = start_server()
    stub = agent_stub(server.channel(CMCC))
    parent = stub.RegisterAgent(
        apb.RegisterAgentRequest(agent_id="north", name="North Franchise", kind=apb.AGENT_KIND_SHOP)
    ).agent
    assert (parent.operator, parent.status, parent.parent_agent_id) == (
        "cmcc",
        apb.AGENT_STATUS_ACTIVE,
        "",
    )
    child_request = apb.RegisterAgentRequest(
        agent_id="north-7", parent_agent_id="north", kind=apb.AGENT_KIND_SALES_POINT
    )
    child = stub.RegisterAgent(child_request).agent
    assert child.parent_agent_id == "north" and child.name == "north-7"
    # The same registration again is idempotent; another under the same id is refused.
    assert stub.RegisterAgent(child_request).agent == child
    assert error_of(
        lambda: stub.RegisterAgent(apb.RegisterAgentRequest(agent_id="north-7", name="Other"))
    ) == (grpc.StatusCode.ALREADY_EXISTS, "AGENT_EXISTS")
    assert error_of(
        lambda: stub.RegisterAgent(
            apb.RegisterAgentRequest(agent_id="south-1", parent_agent_id="south")
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "PARENT_NOT_REGISTERED")
    for bad in (apb.RegisterAgentRequest(agent_id="bad id"), apb.RegisterAgentRequest(kind=9)):
        assert error_of(lambda bad=bad: stub.RegisterAgent(bad))[0] == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    assert stub.GetAgent(apb.GetAgentRequest(agent_id="north-7")).agent == child
    assert error_of(lambda: stub.GetAgent(apb.GetAgentRequest(agent_id="south-1"))) == (
        grpc.StatusCode.NOT_FOUND,
        "AGENT_NOT_FOUND",
    )
    subs = stub.ListAgents(apb.ListAgentsRequest(parent_agent_id="north")).agents
    assert [a.agent_id for a in subs] == ["north-7"]
    # Paging walks every agent once (the demo agents included).
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListAgents(apb.ListAgentsRequest(page_size=4, page_token=token))
        seen.extend(a.agent_id for a in page.agents)
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(set(seen)) and {"north", "north-7", "agent-1"} <= set(seen)


def test_virtual_operator_may_not_appoint_sub_agents(start_server: StartServer) -> None:
    server = start_server()
    stub = agent_stub(server.channel(VNO1))
    top = stub.RegisterAgent(apb.RegisterAgentRequest(agent_id="vshop")).agent
    assert top.operator == "vno1"
    assert error_of(
        lambda: stub.RegisterAgent(
            apb.RegisterAgentRequest(agent_id="vshop-1", parent_agent_id="vshop")
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "SUB_AGENT_NOT_ALLOWED")
    assert error_of(lambda: stub.GetAgent(apb.GetAgentRequest(agent_id="vshop-1")))[1] == (
        "AGENT_NOT_FOUND"
    )
    # A basic operator may.
    register_agents(server.channel(CMCC), ["vshop"])
    assert register_agents(server.channel(CMCC), ["vshop-1"], parent="vshop")[0].parent_agent_id


def test_unregistered_and_suspended_agents_are_refused(start_server: StartServer) -> None:
    server = start_server()
    seller = Seller(server)
    code, reason, message = seller.refused(1, "ghost")
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "AGENT_NOT_REGISTERED")
    assert resident_id(1) not in message

    register_agents(server.channel(CMCC), ["corner"])
    assert seller.sell(1, "corner").channel.agent.agent_id == "corner"

    stub = agent_stub(server.channel(CMCC))
    suspended = stub.SuspendAgent(
        apb.SuspendAgentRequest(agent_id="corner", reason="batch registration under review")
    ).agent
    assert suspended.status == apb.AGENT_STATUS_SUSPENDED
    assert suspended.suspension_reason == "batch registration under review"
    assert suspended.HasField("suspended_at")
    assert seller.refused(2, "corner")[:2] == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "AGENT_SUSPENDED",
    )
    # Other agents sell on; suspending twice changes nothing.
    register_agents(server.channel(CMCC), ["corner-2"])
    seller.sell(2, "corner-2")
    assert stub.SuspendAgent(apb.SuspendAgentRequest(agent_id="corner", reason="again")).agent == (
        suspended
    )
    assert error_of(lambda: stub.SuspendAgent(apb.SuspendAgentRequest(agent_id="corner"))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    listed = stub.ListAgents(apb.ListAgentsRequest(status=apb.AGENT_STATUS_SUSPENDED)).agents
    assert [a.agent_id for a in listed] == ["corner"]

    reinstated = stub.ReinstateAgent(apb.ReinstateAgentRequest(agent_id="corner")).agent
    assert reinstated.status == apb.AGENT_STATUS_ACTIVE and not reinstated.suspension_reason
    assert seller.sell(3, "corner").state == vpb.CARD_STATE_ACTIVE


def test_suspending_a_parent_agent_stops_its_sub_agents(start_server: StartServer) -> None:
    server = start_server()
    seller = Seller(server)
    register_agents(server.channel(CMCC), ["fr-1"])
    register_agents(server.channel(CMCC), ["sp-1"], parent="fr-1")
    register_agents(server.channel(CMCC), ["sp-1-a"], parent="sp-1")
    stub = agent_stub(server.channel(CMCC))
    stub.SuspendAgent(apb.SuspendAgentRequest(agent_id="fr-1", reason="franchise under review"))
    # The sub-agent and its own sub-agent are refused while an ancestor is suspended; the
    # refusal names the suspended ancestor.
    for doc, agent in ((1, "sp-1"), (2, "sp-1-a")):
        code, reason, message = seller.refused(doc, agent)
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "AGENT_SUSPENDED")
        assert "fr-1" in message
    # The sub-agents' own rows are untouched, and reinstating the parent lets them sell again.
    sub = stub.GetAgent(apb.GetAgentRequest(agent_id="sp-1")).agent
    assert sub.status == apb.AGENT_STATUS_ACTIVE
    stub.ReinstateAgent(apb.ReinstateAgentRequest(agent_id="fr-1"))
    assert seller.sell(3, "sp-1-a").state == vpb.CARD_STATE_ACTIVE
    # A suspended middle agent stops only those under it.
    stub.SuspendAgent(apb.SuspendAgentRequest(agent_id="sp-1", reason="sales point review"))
    assert seller.refused(4, "sp-1-a")[1] == "AGENT_SUSPENDED"
    assert seller.sell(5, "fr-1").state == vpb.CARD_STATE_ACTIVE


def test_other_operators_cannot_see_or_change_your_agents(start_server: StartServer) -> None:
    server = start_server(batch_max="1")
    register_agents(server.channel(CMCC), ["mine"])
    seller = Seller(server)
    seller.sell(1, "mine")
    seller.sell(2, "mine")
    assert kinds(server) == ["BATCH_ISSUANCE"]

    theirs = agent_stub(server.channel(CUCC))
    for call in (
        lambda: theirs.GetAgent(apb.GetAgentRequest(agent_id="mine")),
        lambda: theirs.SuspendAgent(apb.SuspendAgentRequest(agent_id="mine", reason="x")),
        lambda: theirs.ReinstateAgent(apb.ReinstateAgentRequest(agent_id="mine")),
    ):
        assert error_of(call) == (grpc.StatusCode.NOT_FOUND, "AGENT_NOT_FOUND")
    listed = theirs.ListAgents(apb.ListAgentsRequest(page_size=1000)).agents
    assert all(a.operator == "cucc" for a in listed) and "mine" not in {a.agent_id for a in listed}
    assert signals(server, CUCC) == []
    # cmcc's agent is untouched, and cucc cannot sell through it.
    mine = agent_stub(server.channel(CMCC)).GetAgent(apb.GetAgentRequest(agent_id="mine")).agent
    assert mine.status == apb.AGENT_STATUS_ACTIVE
    assert Seller(server, CUCC, "186").refused(3, "mine")[1] == "AGENT_NOT_REGISTERED"


def test_batch_issuance_fires_over_threshold_once_per_window(start_server: StartServer) -> None:
    server = start_server(batch_max="3", batch_window="1h")
    register_agents(server.channel(CMCC), ["batch"])
    seller = Seller(server)
    for doc in range(3):
        seller.sell(doc, "batch")
    assert signals(server, kind="BATCH_ISSUANCE") == []
    for doc in range(3, 8):
        seller.sell(doc, "batch")
    [signal] = signals(server, kind="BATCH_ISSUANCE")
    assert (signal.agent_id, signal.value, signal.threshold, signal.window_seconds) == (
        "batch",
        4,
        3,
        3600,
    )
    assert signal.subject == "" and signal.window_start.seconds % 3600 == 0


def test_many_documents_fires_over_threshold(start_server: StartServer) -> None:
    server = start_server(documents_max="2", batch_max="1000")
    register_agents(server.channel(CMCC), ["docs"])
    seller = Seller(server)
    seller.sell(1, "docs")
    seller.sell(1, "docs")
    seller.sell(2, "docs")
    assert kinds(server) == []
    seller.sell(3, "docs")
    [signal] = signals(server)
    assert (signal.kind, signal.value, signal.threshold) == ("MANY_DOCUMENTS", 3, 2)


def test_document_at_many_agents_fires_over_threshold(start_server: StartServer) -> None:
    server = start_server(document_agents_max="2")
    register_agents(server.channel(CMCC), ["a1", "a2", "a3"])
    seller = Seller(server)
    seller.sell(5, "a1")
    seller.sell(5, "a2")
    seller.sell(6, "a3")
    assert kinds(server) == []
    seller.sell(5, "a3")
    [signal] = signals(server)
    number = resident_id(5)
    masked = Document(DocumentType.RESIDENT_ID_CARD, number).masked()
    assert (signal.kind, signal.agent_id, signal.value, signal.threshold) == (
        "DOCUMENT_MANY_AGENTS",
        "a3",
        3,
        2,
    )
    assert signal.subject_masked == masked and number not in str(signal)
    assert len(signal.subject) == 64


def test_document_reaching_the_cap_fires(start_server: StartServer) -> None:
    server = start_server()
    register_agents(server.channel(CMCC), ["capper"])
    seller = Seller(server)
    for _ in range(4):
        seller.sell(9, "capper")
    assert kinds(server) == []
    seller.sell(9, "capper")
    [signal] = signals(server)
    assert (signal.kind, signal.value, signal.threshold) == ("DOCUMENT_AT_CAP", 5, 5)
    # Refused activations over the cap record nothing more.
    assert seller.refused(9, "capper")[1] == "CARD_LIMIT_REACHED"
    assert len(signals(server)) == 1


def test_min_interval_is_off_by_default(start_server: StartServer) -> None:
    server = start_server()
    seller = Seller(server)
    seller.sell(4, "agent-1")
    seller.sell(4, "agent-1")


def test_min_interval_refuses_a_second_activation_too_soon(start_server: StartServer) -> None:
    server = start_server(min_interval="7d")
    seller = Seller(server)
    seller.sell(4, "agent-1")
    code, reason, message = seller.refused(4, "shop-0042")
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACTIVATION_INTERVAL")
    assert resident_id(4) not in message
    seller.sell(5, "agent-1")  # another document is not held back
    # The interval is per operator: China Unicom may activate the same document.
    Seller(server, CUCC, "186").sell(4, "agent-1")


def transfer_refusal(
    server: GrpcHarness, card: vpb.Card, to: int, request_id: str
) -> tuple[grpc.StatusCode, str | None, str] | None:
    """TransferCard's refusal (code, reason, message), or None when the card moved."""
    request = vpb.TransferCardRequest(
        request_id=request_id,
        msisdn=card.msisdn,
        new_document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(to)),
    )
    try:
        server.verification(CMCC).TransferCard(request, timeout=10)
    except grpc.RpcError as refused:
        err = rich_error(refused)
        return err.code, err.reason, err.message
    return None


def test_min_interval_holds_for_a_transfers_new_holder(
    start_server: StartServer, db: Database
) -> None:
    server = start_server(min_interval="7d")
    seller = Seller(server)
    card = seller.sell(4, "agent-1")
    seller.sell(5, "agent-1")
    # Document 5 just had a card activated: receiving one by transfer is refused alike.
    for _ in range(2):  # the refusal is the request's recorded outcome
        refusal = transfer_refusal(server, card, 5, "move-1")
        assert refusal is not None
        code, reason, message = refusal
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACTIVATION_INTERVAL")
        assert resident_id(5) not in message
    kept = server.verification(CMCC).GetCard(vpb.GetCardRequest(msisdn=card.msisdn)).card
    assert kept.document_masked.endswith(resident_id(4)[-4:])
    # A document without a recent card receives a card activated long ago, and the interval
    # counts from the transfer (holder_since), while the sale keeps its time for the agent's
    # sales signals.
    month_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)

    def backdate(tx: Tx) -> None:
        tx.execute(
            "UPDATE cards SET activated_at = ? WHERE msisdn = ?",
            (tx.timestamp(month_ago), card.msisdn),
        )

    db.run_tx(backdate)
    assert transfer_refusal(server, card, 6, "move-2") is None
    moved = server.verification(CMCC).GetCard(vpb.GetCardRequest(msisdn=card.msisdn)).card
    assert abs(moved.activated_at.ToDatetime(dt.UTC) - month_ago) < dt.timedelta(seconds=1)
    assert seller.refused(6, "agent-1")[1] == "ACTIVATION_INTERVAL"


def test_flag_agent_records_signals_from_other_features(
    start_server: StartServer, db: Database
) -> None:
    server = start_server()

    def flag(tx: Tx) -> None:
        flag_agent(tx, "cmcc", "shop-3", "DISPUTED_CARD", "NOT_MINE 138****0001")

    db.run_tx(flag)
    [signal] = signals(server, agent_id="shop-3")
    assert (signal.kind, signal.detail) == ("DISPUTED_CARD", "NOT_MINE 138****0001")
    assert signals(server, CUCC) == []
    assert signals(server, kind="BATCH_ISSUANCE") == []
    with pytest.raises(ValueError, match="upper-case"):
        db.run_tx(lambda tx: flag_agent(tx, "cmcc", "shop-3", "not a kind", ""))


def test_cli_agents_and_report(
    start_server: StartServer,
    database_url: str,
    pki_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = start_server(batch_max="2")
    monkeypatch.setenv("REALNAME_DATABASE_URL", database_url)
    at = ["--data-dir", str(pki_dir.parent), "--address", server.address, "--as", CMCC]

    def main(argv: list[str]) -> int:
        args = cli.build_parser().parse_args(argv)
        return int(args.func(args))

    def run(*argv: str) -> str:
        assert main(list(argv)) == 0
        return capsys.readouterr().out

    out = run("agents", "register", *at, "kiosk-9", "--parent", "agent-1", "--kind", "sales-point")
    assert "kiosk-9" in out and "agent-1" in out and "SALES_POINT" in out
    seller = Seller(server)
    for doc in (21, 22, 23):
        seller.sell(doc, "kiosk-9")
    out = run("agents", "suspend", *at, "kiosk-9", "--reason", "batch issuance")
    assert "SUSPENDED" in out and "batch issuance" in out
    listed = json.loads(run("agents", "list", *at, "--status", "suspended", "--format", "json"))
    assert [a["agent_id"] for a in listed] == ["kiosk-9"]
    assert "BATCH_ISSUANCE" in run("agents", "signals", *at, "--agent", "kiosk-9")

    report_args = ["report", "agents", "--data-dir", str(pki_dir.parent), "--operator", "cmcc"]
    table = run(*report_args)
    header, *lines = table.splitlines()
    assert header.split() == [
        "operator", "agent_id", "parent", "status", "activations", "documents", "signals",
        "last_signal_at",
    ]  # fmt: skip
    [kiosk] = [line for line in lines if "kiosk-9" in line]
    assert kiosk.split()[:6] == ["cmcc", "kiosk-9", "agent-1", "SUSPENDED", "3", "3"]
    assert "BATCH_ISSUANCE=1" in kiosk
    rows = list(csv.DictReader(io.StringIO(run(*report_args, "--format", "csv", "--flagged"))))
    assert [(r["agent_id"], r["signals"]) for r in rows] == [("kiosk-9", "BATCH_ISSUANCE=1")]
    data = json.loads(run(*report_args, "--format", "json"))
    assert {r["operator"] for r in data} == {"cmcc"}
    assert next(r for r in data if r["agent_id"] == "kiosk-9")["activations"] == 3
    for doc in (21, 22, 23):
        assert resident_id(doc) not in table + json.dumps(data)

    # A refused call exits 1 with the reason.
    assert main(["agents", "reinstate", *at[:-1], CUCC, "kiosk-9"]) == 1
    assert "AGENT_NOT_FOUND" in capsys.readouterr().err


def _concerns_agents(diff: object) -> bool:
    # compare_metadata yields tuples (op, object or table name, ...), or lists of them.
    text = repr(diff)
    return any(f"<{name}>" in text or f"'{name}'" in text for name in ("agents", "agent_signals"))


def test_migration_matches_the_agents_schema(db: Database) -> None:
    tables = MetaData()
    for table in (agents_schema.agents, agents_schema.agent_signals, schema.operators):
        table.to_metadata(tables)
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), tables)
    assert [d for d in diffs if _concerns_agents(d)] == []
    indexes = {ix["name"] for ix in inspect(db.engine).get_indexes("cards")}
    assert "ix_cards_agent_activated" in indexes
