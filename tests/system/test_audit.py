"""The audit trail: every access to subscriber data recorded, chained, anchored and verifiable."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from registry.log.entries import AuditDigest
from registry.log.storage import append_entry
from registry.subscribers import DocumentType
from services.domain.audit import PruneEvent
from services.domain.documents import Document
from services.domain.pseudonym import Pseudonymizer
from services.features.audit_trail import AuditTrail
from services.features.transparency import TransparencyLog
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage.database import Database
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.logdata import log_signer
from tests.support.server import GrpcHarness, realname_bin, start_harness

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


@pytest.fixture
def transparency(db: Database) -> TransparencyLog:
    return TransparencyLog.create(db, log_signer())


@pytest.fixture
def logged(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, transparency: TransparencyLog
) -> Iterator[GrpcHarness]:
    """A server whose audit trail anchors into a log the test sequences."""
    from tests.support.agents import register_agents

    harness = start_harness(db, pki_dir, pseudonymizer, log=transparency)
    register_agents(harness.channel("operator-cmcc"), [AGENT])
    yield harness
    harness.close()


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


def test_rewriting_the_chain_is_caught_by_the_log_anchor(
    logged: GrpcHarness, db: Database, transparency: TransparencyLog
) -> None:
    """A forger who rewrites records and the head consistently still differs from the anchor."""
    run_traffic(logged)
    trail = trail_of(logged)
    anchored = trail.anchor()
    assert anchored is not None and trail.anchor() is None  # nothing new: no second anchor
    transparency.sequencer.integrate_now()
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


def test_only_sequenced_log_entries_count(
    logged: GrpcHarness, db: Database, transparency: TransparencyLog
) -> None:
    """A pending anchor is not public yet: an insider could delete it, so verify counts none."""
    run_traffic(logged)
    trail = trail_of(logged)
    assert trail.anchor() is not None
    pending = trail.verify()
    assert pending.ok and (pending.anchors_checked, pending.unsequenced) == (0, 1)
    transparency.sequencer.integrate_now()
    sequenced = trail.verify()
    assert sequenced.ok and (sequenced.anchors_checked, sequenced.unsequenced) == (1, 0)


RETENTION = dt.timedelta(days=1095)


def test_verify_reports_the_unanchored_tail_and_a_stale_one(
    logged: GrpcHarness, db: Database, transparency: TransparencyLog
) -> None:
    """What comes after the last anchor is named (ids, times), since its removal leaves no trace."""
    run_traffic(logged)
    trail = trail_of(logged)
    anchored = trail.anchor()
    assert anchored is not None
    transparency.sequencer.integrate_now()
    assert trail.verify().tail is None  # the anchor covers every record
    before = dt.datetime.now(dt.UTC)
    for _ in range(3):
        logged.verification().GetCard(vpb.GetCardRequest(msisdn=msisdn("139", 10)))
    trail.flush()
    report = trail.verify(anchor_window=dt.timedelta(seconds=60))
    assert report.ok and report.anchored_id == anchored and not report.warnings
    assert report.tail is not None
    assert (report.tail.first_id, report.tail.records) == (anchored + 1, 3)
    assert before - dt.timedelta(seconds=1) <= report.tail.first_at <= report.tail.last_at
    # An hour later with no new anchor the tail is older than the window: anchoring stopped.
    later = AuditTrail(db, lambda: dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    stale = later.verify(anchor_window=dt.timedelta(seconds=60))
    assert stale.ok and any("longer than the anchor window of 60 s" in w for w in stale.warnings)
    # The limit the window names: removing the tail leaves a trail that verifies.
    tamper(
        db,
        f"DELETE FROM audit_records WHERE id > {anchored}",
        f"UPDATE audit_state SET head_id = {anchored}, head_chain = "
        f"(SELECT chain FROM audit_records WHERE id = {anchored})",
    )
    truncated = trail.verify()
    assert truncated.ok and truncated.tail is None


def back_date(db: Database, through: int) -> None:
    """Makes records 1..through older than the retention (a fresh trail has no old records)."""
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=4000)
    db.run_tx(
        lambda tx: tx.execute(
            "UPDATE audit_records SET at = ? WHERE id <= ?", (tx.timestamp(long_ago), through)
        )
    )


def test_pruning_keeps_the_rest_verifiable(
    logged: GrpcHarness, db: Database, transparency: TransparencyLog
) -> None:
    run_traffic(logged)
    trail = trail_of(logged)
    trail.anchor()
    transparency.sequencer.integrate_now()
    head = trail.verify().head_id
    # Back-date the first three records past the retention period (verify notices the edit;
    # pruning then removes exactly those records).
    back_date(db, 3)
    assert not trail.verify().ok
    assert trail.prune(RETENTION) == 3
    # The prune's log entry is pending: until the log sequences it, nothing explains the base.
    unexplained = trail.verify(RETENTION)
    assert any("not sequenced yet" in p for p in unexplained.problems), unexplained.problems
    transparency.sequencer.integrate_now()
    report = trail.verify(RETENTION)
    assert report.ok, report.problems
    assert (report.base_id, report.head_id) == (3, head)
    assert (report.anchors_checked, report.prunes_checked) == (1, 1)
    assert trail.prune(RETENTION) == 0


def test_a_prune_nobody_logged_is_tampering(
    logged: GrpcHarness, db: Database, transparency: TransparencyLog
) -> None:
    """The issue's fake prune: move the base by hand and delete the minutes-old records."""
    run_traffic(logged)
    for _ in range(12):
        logged.verification().GetCard(vpb.GetCardRequest(msisdn=msisdn("139", 10)))
    trail = trail_of(logged)
    trail.flush()
    assert trail.verify().head_id > 18
    tamper(
        db,
        "UPDATE audit_state SET base_id=18, base_chain=(SELECT chain FROM audit_records "
        "WHERE id=18)",
        "DELETE FROM audit_records WHERE id<=18",
    )
    report = trail.verify(RETENTION)
    assert not report.ok
    assert any("no logged prune explains base 18" in p for p in report.problems), report.problems


def test_a_logged_prune_of_young_records_is_tampering(
    logged: GrpcHarness, db: Database, transparency: TransparencyLog
) -> None:
    """A prune entry forged into the log (claiming the full retention) is caught by the anchors,
    and a real prune with a short retention is reported against the policy."""
    run_traffic(logged)
    trail = trail_of(logged)
    anchored = trail.anchor()
    assert anchored is not None and anchored > 4
    transparency.sequencer.integrate_now()
    for _ in range(3):
        logged.verification().GetCard(vpb.GetCardRequest(msisdn=msisdn("139", 10)))
    trail.flush()
    through = anchored + 2
    chain = db.run_tx(
        lambda tx: bytes(tx.one("SELECT chain FROM audit_records WHERE id = ?", (through,))[0])
    )
    now = dt.datetime.now(dt.UTC)
    forged = PruneEvent(1, through, chain, RETENTION, now - dt.timedelta(days=1100))
    transparency.db.write(lambda conn: append_entry(conn, AuditDigest(now, forged.label(), chain)))
    transparency.sequencer.integrate_now()
    tamper(
        db,
        f"UPDATE audit_state SET base_id={through}, base_chain=(SELECT chain FROM audit_records "
        f"WHERE id={through})",
        f"DELETE FROM audit_records WHERE id<={through}",
    )
    report = trail.verify(RETENTION)
    assert not report.ok
    assert any(
        f"deleted record {anchored + 1}, appended after the anchor" in p for p in report.problems
    ), report.problems


def test_a_prune_shorter_than_the_policy_is_reported(
    logged: GrpcHarness, db: Database, transparency: TransparencyLog
) -> None:
    run_traffic(logged)
    trail = trail_of(logged)
    back_date(db, 2)
    assert trail.prune(dt.timedelta(days=30)) == 2
    transparency.sequencer.integrate_now()
    assert trail.verify(dt.timedelta(days=30)).ok
    report = trail.verify(RETENTION)
    assert any("kept 30 days, less than the retention of 1095 days" in p for p in report.problems)


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


def test_audit_cli_prune_is_logged_and_a_fake_one_is_not(
    served: GrpcHarness, db: Database, database_url: str, tmp_path: Path
) -> None:
    run_traffic(served)
    data_dir = tmp_path / "data"
    env = {"REALNAME_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}

    def realname(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [realname_bin(), *args, "--data-dir", str(data_dir)],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip

    assert realname("log", "key").returncode == 0  # the data dir holds the log's key
    back_date(db, 2)
    pruned = realname("audit", "prune", "--keep-days", "1095")
    assert pruned.returncode == 0, pruned.stderr
    assert "pruned 2 records older than 1095 days; logged (tree size" in pruned.stdout
    ok = realname("audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "1 logged prunes" in ok.stdout
    assert "unanchored tail: records 3.." in ok.stdout and "no anchor yet" in ok.stdout
    anchored = realname("audit", "anchor")
    assert "; logged (tree size" in anchored.stdout, anchored.stdout  # sequenced: it counts now
    head = anchored.stdout.split()[2].rstrip(";")
    env["REALNAME_AUDIT_ANCHOR_SECONDS"] = "5"
    covered = realname("audit", "verify")
    assert covered.returncode == 0, covered.stderr
    assert f"unanchored tail: none (the last anchor is of head {head} at " in covered.stdout
    assert "anchor window 5 s" in covered.stdout
    env["REALNAME_AUDIT_ANCHOR_SECONDS"] = "0"
    refused = realname("audit", "verify")
    assert refused.returncode == 2
    assert "REALNAME_AUDIT_ANCHOR_SECONDS must be a number of seconds from 1" in refused.stderr
    del env["REALNAME_AUDIT_ANCHOR_SECONDS"]
    tamper(
        db,
        "UPDATE audit_state SET base_id=4, base_chain=(SELECT chain FROM audit_records WHERE id=4)",
        "DELETE FROM audit_records WHERE id<=4",
    )
    broken = realname("audit", "verify")
    assert broken.returncode == 1
    assert "no logged prune explains base 4" in broken.stderr
