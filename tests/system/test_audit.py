"""The audit trail: every access to subscriber data recorded, chained, anchored and verifiable."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import grpc
import pytest

from registry.subscribers import DocumentType
from services.domain.documents import Document
from services.domain.pseudonym import Pseudonymizer
from services.features.audit_trail import AuditTrail
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage.database import Database
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.server import GrpcHarness, realname_bin

ID = cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD
AGENT = "shop-audit"


def doc(seq: int) -> cpb.Document:
    return cpb.Document(type=ID, number=resident_id(seq))


def key(pseudonymizer: Pseudonymizer, seq: int) -> bytes:
    return pseudonymizer.document_key(Document(DocumentType.RESIDENT_ID_CARD, resident_id(seq)))


def activate(server: GrpcHarness, seq: int, holder: int) -> vpb.ActivateCardResponse:
    return server.verification().ActivateCard(
        vpb.ActivateCardRequest(
            request_id=f"aud-{seq}",
            document=doc(holder),
            msisdn=msisdn("139", seq),
            iccid=iccid(139000 + seq),
            card_type=cpb.CARD_TYPE_PERSONAL,
            channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id=AGENT)),
        )
    )


@pytest.fixture
def served(grpc_server: GrpcHarness) -> GrpcHarness:
    from tests.support.agents import register_agents

    register_agents(grpc_server.channel("operator-cmcc"), [AGENT])
    return grpc_server


def trail_of(server: GrpcHarness) -> AuditTrail:
    assert server.app is not None and server.app.audit is not None
    return server.app.audit


def run_traffic(server: GrpcHarness) -> None:
    stub = server.verification()
    stub.CheckEligibility(
        vpb.CheckEligibilityRequest(document=doc(1), card_type=cpb.CARD_TYPE_PERSONAL)
    )
    for seq in range(6):
        try:
            activate(server, seq, holder=1)
        except grpc.RpcError as exc:  # the sixth is over the cap: recorded as refused
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    activate(server, 10, holder=2)
    stub.GetCard(vpb.GetCardRequest(msisdn=msisdn("139", 10)))
    trail_of(server).flush()


def test_reads_and_writes_of_a_document_are_recorded(
    served: GrpcHarness, pseudonymizer: Pseudonymizer
) -> None:
    run_traffic(served)
    trail = trail_of(served)
    records = trail.query(subject=key(pseudonymizer, 1))
    methods = [(r.method.rsplit("/", 1)[1], r.outcome) for r in reversed(records)]
    assert methods[0] == ("CheckEligibility", "OK")
    assert methods.count(("ActivateCard", "OK")) == 5
    assert ("ActivateCard", "RESOURCE_EXHAUSTED") in methods
    assert {r.principal for r in records} == {"operator-cmcc"}
    # A read by number (GetCard) is recorded under the card holder's document.
    other = trail.query(subject=key(pseudonymizer, 2))
    assert [r.method.rsplit("/", 1)[1] for r in reversed(other)] == ["ActivateCard", "GetCard"]
    by_principal = trail.query(principal="operator-cmcc", limit=1000)
    assert len(by_principal) >= len(records) + len(other)
    assert trail.verify().ok


def tamper(db: Database, *statements: str) -> None:
    def work(tx):  # type: ignore[no-untyped-def]
        for sql in statements:
            tx.execute(sql)

    db.run_tx(work)


# Each tampering as SQL an insider with database access could run, and what verify reports.
TAMPERING = {
    "edit": (("UPDATE audit_records SET outcome = 'OK' WHERE outcome <> 'OK'",), "does not match"),
    "delete": (("DELETE FROM audit_records WHERE id = 3",), "missing (deleted)"),
    "insert": (
        (
            # Make room at id 4 (two steps: unique checks are per row) and forge a record there.
            "UPDATE audit_records SET id = id + 1000 WHERE id >= 4",
            "UPDATE audit_records SET id = id - 999 WHERE id >= 1004",
            "INSERT INTO audit_records (id, at, principal, method, outcome, subject, chain) "
            "SELECT 4, at, principal, method, 'OK', subject, chain FROM audit_records WHERE id = 3",
        ),
        "does not match",
    ),
    "truncate": (("DELETE FROM audit_records WHERE id >= 5",), "ends at 4"),
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_verify_detects_tampering(served: GrpcHarness, db: Database, kind: str) -> None:
    statements, expected = TAMPERING[kind]
    run_traffic(served)
    trail = trail_of(served)
    assert trail.verify().ok
    tamper(db, *statements)
    report = trail.verify()
    assert not report.ok, kind
    assert any(expected in p for p in report.problems), report.problems


def test_rewriting_the_chain_is_caught_by_the_log_anchor(served: GrpcHarness, db: Database) -> None:
    """A forger who rewrites records and the head consistently still differs from the anchor."""
    run_traffic(served)
    trail = trail_of(served)
    anchored = trail.anchor()
    assert anchored is not None and trail.anchor() is None  # nothing new: no second anchor
    # Drop the last record and move the head back onto the one before: internally consistent.
    tamper(
        db,
        f"DELETE FROM audit_records WHERE id = {anchored}",
        "UPDATE audit_state SET head_id = head_id - 1, head_chain = "
        f"(SELECT chain FROM audit_records WHERE id = {anchored - 1})",
    )
    report = trail.verify()
    assert not report.ok
    assert any("beyond the trail's end" in p for p in report.problems), report.problems


def test_pruning_keeps_the_rest_verifiable(served: GrpcHarness, db: Database) -> None:
    run_traffic(served)
    trail = trail_of(served)
    trail.anchor()
    head = trail.verify().head_id
    # Back-date the first three records past the retention period (verify notices the edit;
    # pruning then removes exactly those records).
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=4000)
    db.run_tx(
        lambda tx: tx.execute(
            "UPDATE audit_records SET at = ? WHERE id <= 3", (tx.timestamp(long_ago),)
        )
    )
    assert not trail.verify().ok
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=1095)
    assert trail.prune(cutoff) == 3
    report = trail.verify()
    assert report.ok, report.problems
    assert (report.base_id, report.head_id) == (3, head)
    assert report.anchors_checked == 1
    assert trail.prune(cutoff) == 0


def test_audit_cli_verify_query_and_tampering(
    served: GrpcHarness, db: Database, database_url: str, tmp_path: Path, pepper_path: Path
) -> None:
    run_traffic(served)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "pepper").write_text(pepper_path.read_text())
    env = {"REALNAME_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}

    def audit(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [realname_bin(), "audit", *args, "--data-dir", str(data_dir)],
            input=stdin, capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip

    ok = audit("verify")
    assert ok.returncode == 0 and "audit trail intact" in ok.stdout, ok.stderr
    query = audit("query", "--document-number-file", "-", stdin=resident_id(2))
    assert query.returncode == 0, query.stderr
    assert '"method": "/realname.v1.VerificationService/GetCard"' in query.stdout
    assert resident_id(2) not in query.stdout + query.stderr
    assert audit("anchor").stdout.startswith("anchored head")
    tamper(db, "UPDATE audit_records SET principal = 'operator-ctcc' WHERE id = 2")
    broken = audit("verify")
    assert broken.returncode == 1
    assert "TAMPERED" in broken.stderr and "record 2 does not match" in broken.stderr
