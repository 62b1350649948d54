"""ComplianceService and `realname report compliance` against a hand-computed fixture."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import grpc
import pytest

from services.features.enforcement import EnforcementDesk, EnforcementKind
from services.proto.realname.v1 import compliance_pb2 as cpb
from services.proto.realname.v1 import compliance_pb2_grpc as cgrpc
from services.storage.database import Database
from services.storage.rawsql import Tx
from tests.support.rpc import rich_error
from tests.support.server import GrpcHarness, realname_bin

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
# (operator, state, verified, stage, document_type, masked) of each card in the fixture.
CARDS = [
    *[("cmcc", "ACTIVE", 1, "FULL", 1, "1101**********001X")] * 4,
    ("cmcc", "ACTIVE", 0, "OUTGOING_BARRED", None, None),  # legacy, no document yet
    ("cmcc", "SUSPENDED", 1, "FULL", 1, "3501**********0021"),
    ("cmcc", "PENDING_DELIVERY", 1, "FULL", 1, "1101**********0031"),
    ("cmcc", "DEACTIVATED", 1, "FULL", 1, "1101**********0041"),  # not live: not counted
    ("vno1", "ACTIVE", 0, "ALL_BARRED", None, None),
    ("vno1", "ACTIVE", 0, "ALL_BARRED", None, None),
    ("vno1", "ACTIVE", 1, "FULL", 2, "E1******34"),  # a passport: province "other"
]
# Documents with cmcc holding 3, 1, 5 and 6 cards (a pre-policy holder above the cap).
HOLDINGS = [("cmcc", 3), ("cmcc", 1), ("cmcc", 5), ("cmcc", 6), ("vno1", 1)]


def load_fixture(db: Database) -> None:
    def work(tx: Tx) -> None:
        for i, (op, state, verified, stage, doc_type, masked) in enumerate(CARDS):
            tx.execute(
                "INSERT INTO cards (operator_id, msisdn, iccid, id_key, document_type, "
                "document_masked, card_type, state, channel, agent_id, activated_at, verified, "
                "service_stage) VALUES (?, ?, ?, ?, ?, ?, 1, ?, 'agent', 'shop-1', ?, ?, ?)",
                (
                    op, f"1380000{i:04d}", f"898600000000{i:07d}", None if masked is None
                    else bytes([i]) * 32, doc_type, masked, state, tx.timestamp(NOW), verified,
                    stage,
                ),
            )  # fmt: skip
        for i, (op, active) in enumerate(HOLDINGS):
            tx.execute(
                "INSERT INTO holdings (id_key, operator_id, active) VALUES (?, ?, ?)",
                (bytes([100 + i]) * 32, op, active),
            )
        card_id = tx.one("SELECT min(id) FROM cards")
        assert card_id is not None
        for state in ("OPEN", "RESOLVED"):
            tx.execute(
                "INSERT INTO disputes (operator_id, card_id, reason, state, previous_state, "
                "opened_at) VALUES ('cmcc', ?, 'NOT_MINE', ?, 'ACTIVE', ?)",
                (card_id[0] + (state == "RESOLVED"), state, tx.timestamp(NOW)),
            )
        tx.execute(
            "INSERT INTO agents (operator_id, agent_id, name, kind, status, registered_at) "
            "VALUES ('cmcc', 'fixture-9', 'Shop 9', 'SHOP', 'SUSPENDED', ?)",
            (tx.timestamp(NOW),),
        )
        # Two agents flagged, one of them twice.
        for agent, kind in (
            ("shop-1", "BATCH_ISSUANCE"),
            ("shop-1", "MANY_DOCUMENTS"),
            ("shop-2", "BATCH_ISSUANCE"),
        ):
            tx.execute(
                "INSERT INTO agent_signals (operator_id, agent_id, kind, subject, value, "
                "threshold, window_seconds, window_start, at) "
                "VALUES ('cmcc', ?, ?, '', 1, 0, 0, ?, ?)",
                (agent, kind, tx.timestamp(NOW), tx.timestamp(NOW)),
            )

    db.run_tx(work)
    EnforcementDesk(db).record("regulator", "vno1", EnforcementKind.WARNING, 0, "low rate")


@pytest.fixture
def loaded(grpc_server: GrpcHarness, db: Database) -> GrpcHarness:
    load_fixture(db)
    return grpc_server


def by_operator(report: cpb.GetComplianceReportResponse) -> dict[str, cpb.OperatorCompliance]:
    return {o.operator: o for o in report.operators}


def test_figures_match_the_hand_computed_fixture(loaded: GrpcHarness) -> None:
    stub = cgrpc.ComplianceServiceStub(loaded.channel("regulator"))
    report = stub.GetComplianceReport(cpb.GetComplianceReportRequest())
    ops = by_operator(report)
    cmcc, vno1 = ops["cmcc"], ops["vno1"]
    # cmcc: 7 live cards (the deactivated one is not), 6 verified.
    assert (cmcc.live_cards, cmcc.verified_cards) == (7, 6)
    assert cmcc.real_name_rate == pytest.approx(6 / 7)
    assert [(t.rate, t.due, t.met, t.shortfall_cards) for t in cmcc.targets] == [
        (0.95, "2026-12-31", False, 1),  # ceil(0.95 x 7) = 7 verified needed
        (1.0, "2027-06-30", False, 1),
    ]
    assert list(cmcc.documents_by_cards) == [1, 0, 1, 0, 1, 1]
    assert (cmcc.documents_over_cap, vno1.documents_over_cap) == (1, 0)  # above card_limit 5
    assert dict(cmcc.cards_by_stage) == {
        "FULL": 4, "OUTGOING_BARRED": 1, "ALL_BARRED": 0, "SUSPENDED": 1, "PENDING_DELIVERY": 1,
    }  # fmt: skip
    assert (cmcc.disputes_opened, cmcc.disputes_resolved) == (2, 1)
    assert (cmcc.agents_flagged, cmcc.agents_suspended) == (2, 1)
    assert (vno1.live_cards, vno1.verified_cards, vno1.kind) == (3, 1, "virtual")
    assert vno1.real_name_rate == pytest.approx(1 / 3)
    assert vno1.cards_by_stage["ALL_BARRED"] == 2 and vno1.enforcement_actions == 1
    assert list(vno1.documents_by_cards) == [1, 0, 0, 0, 0, 0]
    # An operator with no cards has no rate (no data, not 100 %); nothing is short.
    assert ops["ctcc"].live_cards == 0 and not ops["ctcc"].HasField("real_name_rate")
    assert all(t.met and t.shortfall_cards == 0 for t in ops["ctcc"].targets)
    assert cmcc.HasField("real_name_rate")
    provinces = {p.province: (p.live_cards, p.verified_cards) for p in report.provinces}
    assert provinces == {"11": (5, 5), "35": (1, 1), "other": (4, 1)}

    one = stub.GetComplianceReport(cpb.GetComplianceReportRequest(operator="vno1"))
    assert [o.operator for o in one.operators] == ["vno1"]


def test_operators_and_marketplaces_are_refused_the_report(loaded: GrpcHarness) -> None:
    for principal in ("operator-cmcc", "marketplace-demo", "courier-demo", "citizen-portal"):
        stub = cgrpc.ComplianceServiceStub(loaded.channel(principal))
        with pytest.raises(grpc.RpcError) as info:
            stub.GetComplianceReport(cpb.GetComplianceReportRequest())
        err = rich_error(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")


def test_snapshots_give_the_rate_over_time(loaded: GrpcHarness) -> None:
    assert loaded.app is not None and loaded.app.compliance is not None
    desk = loaded.app.compliance
    assert desk.snapshot(dt.date(2026, 11, 27)) == 5
    assert desk.snapshot(dt.date(2026, 11, 28)) == 5
    assert desk.snapshot(dt.date(2026, 11, 28)) == 5  # a second run the same day replaces it
    stub = cgrpc.ComplianceServiceStub(loaded.channel("regulator"))
    history = stub.GetComplianceReport(cpb.GetComplianceReportRequest(operator="cmcc")).history
    assert [(h.day, h.operator) for h in history] == [
        ("2026-11-27", "cmcc"),
        ("2026-11-28", "cmcc"),
    ]
    assert history[0].real_name_rate == pytest.approx(6 / 7)


def test_report_cli_prints_table_csv_and_json(
    loaded: GrpcHarness, database_url: str, tmp_path: Path
) -> None:
    env = {"REALNAME_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}

    def report(fmt: str) -> str:
        done = subprocess.run(
            [realname_bin(), "report", "compliance", "--data-dir", str(tmp_path), "--format", fmt],
            capture_output=True, text=True, env=env, check=False, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    data = json.loads(report("json"))
    cmcc = next(r for r in data["operators"] if r["operator"] == "cmcc")
    assert cmcc["live_cards"] == 7 and cmcc["real_name_rate"] == round(6 / 7, 4)
    assert cmcc["target_95%_by_2026-12-31"] == "short 1"
    assert cmcc["documents_6+_cards"] == 1
    ctcc = next(r for r in data["operators"] if r["operator"] == "ctcc")
    assert ctcc["real_name_rate"] is None and ctcc["target_95%_by_2026-12-31"] == "no data"
    assert {"province": "35", "live_cards": 1, "verified_cards": 1, "real_name_rate": 1.0} in (
        data["provinces"]
    )
    csv_lines = report("csv").splitlines()
    assert csv_lines[0].startswith("operator,kind,live_cards") and len(csv_lines) == 6
    table = report("table").splitlines()
    assert table[0].split()[:3] == ["operator", "kind", "live_cards"]
    ctcc_line = next(line for line in table if line.startswith("ctcc"))
    assert ctcc_line.split()[4:6] == ["no", "data"]
    assert any(line.split()[:4] == ["cmcc", "basic", "7", "6"] for line in table)
