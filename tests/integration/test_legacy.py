"""Legacy subscribers through gRPC and the CLI: import, refusal, resumption, registration."""

from __future__ import annotations

import csv
from pathlib import Path

import grpc
import pytest

from services.app import App
from services.cli.main import build_parser
from services.domain.pseudonym import Pseudonymizer
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import legacy_pb2 as lpb
from services.proto.realname.v1 import legacy_pb2_grpc as lgrpc
from services.proto.realname.v1 import proofing_pb2 as ppb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1.compliance_pb2 import GetComplianceReportRequest
from services.proto.realname.v1.compliance_pb2_grpc import ComplianceServiceStub
from services.storage.database import Database
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.legacy_rows import file_id, good_rows, import_rows, stream, write_csv
from tests.support.proofing import proofing_stub
from tests.support.rpc import rich_error
from tests.support.server import GrpcHarness, start_harness

OWNER_ID = resident_id(411)


def main(argv: list[str]) -> int:
    parsed = build_parser().parse_args(argv)
    return int(parsed.func(parsed))


def cli_import(server: GrpcHarness, path: Path, *extra: str) -> int:
    return main([
        "import", "legacy", "--data-dir", str(server.pki_dir.parent), "--address", server.address,
        "--as", "operator-cmcc", "--quiet", str(path), *extra,
    ])  # fmt: skip


def legacy(server: GrpcHarness) -> lgrpc.LegacyServiceStub:
    return lgrpc.LegacyServiceStub(server.channel("operator-cmcc"))


def card(server: GrpcHarness, number: str) -> vpb.Card:
    return server.verification().GetCard(vpb.GetCardRequest(msisdn=number)).card


def doc(number: str) -> cpb.Document:
    return cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=number)


def held(server: GrpcHarness, number: str = OWNER_ID) -> int:
    request = vpb.CheckEligibilityRequest(document=doc(number), card_type=cpb.CARD_TYPE_PERSONAL)
    return server.verification().CheckEligibility(request).active_cards


def activate(server: GrpcHarness, seq: int, number: str = OWNER_ID) -> vpb.Card:
    request = vpb.ActivateCardRequest(
        request_id=f"act-{seq}", document=doc(number), msisdn=msisdn("139", seq),
        iccid=iccid(seq), card_type=cpb.CARD_TYPE_PERSONAL,
        channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id="shop-1")),
    )  # fmt: skip
    return server.verification().ActivateCard(request).card


def errors_of(path: Path) -> dict[int, tuple[str, str]]:
    with path.open(newline="") as f:
        return {int(r["row"]): (r["field"], r["reason"]) for r in csv.DictReader(f)}


def test_import_with_good_and_bad_rows_writes_the_error_file(
    grpc_server: GrpcHarness, tmp_path: Path
) -> None:
    taken = activate(grpc_server, 1)  # a live card the file repeats
    rows = good_rows(190)
    rows[0] = (rows[0][0], rows[0][1], "VERIFIED", "resident-id-card", OWNER_ID)
    bad_id = OWNER_ID[:-1] + ("0" if OWNER_ID[-1] != "0" else "1")
    rows += [
        (msisdn("186", 1), iccid(9001), "UNVERIFIED", "", ""),  # 191: cucc's number
        (msisdn("138", 9002), "8986001234", "UNVERIFIED", "", ""),  # 192: bad ICCID
        (msisdn("138", 9003), iccid(9003), "MAYBE", "", ""),  # 193: bad status
        (msisdn("138", 9004), iccid(9004), "VERIFIED", "resident-id-card", bad_id),  # 194
        (msisdn("138", 9005), iccid(9005)),  # type: ignore[list-item]  # 195: 2 columns
        (taken.msisdn, iccid(9006), "UNVERIFIED", "", ""),  # 196: a live card's number
        (rows[5][0], iccid(9007), "UNVERIFIED", "", ""),  # 197: repeats row 6
        (msisdn("138", 9008), iccid(9008), "VERIFIED", "", ""),  # 198: verified, no document
    ]
    path = write_csv(tmp_path / "subscribers.csv", rows)
    assert cli_import(grpc_server, path, "--max-bad-ratio", "0.05") == 0

    errors = errors_of(tmp_path / "subscribers.csv.errors.csv")
    assert set(errors) == {191, 192, 193, 194, 195, 196, 197}
    assert errors[191][0] == "msisdn" and "segment" in errors[191][1]
    assert errors[192][0] == "iccid"
    assert errors[193][0] == "status"
    assert errors[194][0] == "document.number"
    assert errors[195] == ("row", "expected 3, 5 or 6 columns, got 2")
    assert errors[196] == ("msisdn", "already held by a live card")
    assert errors[197][0] == "msisdn"
    text = (tmp_path / "subscribers.csv.errors.csv").read_text()
    assert bad_id not in text and OWNER_ID not in text

    record = legacy(grpc_server).GetImport(lpb.GetImportRequest(import_id=file_id(path)))
    state = record.legacy_import
    assert state.state == lpb.IMPORT_STATE_COMPLETED
    assert (state.total_rows, state.committed_rows, state.imported_rows) == (198, 198, 191)
    assert state.failed_rows == 7 and state.bad_rows == 7

    first = card(grpc_server, rows[0][0])
    assert first.verified and first.document_masked == "1101**********" + OWNER_ID[-4:]
    assert first.channel.legacy.import_id == file_id(path)
    assert first.state == vpb.CARD_STATE_ACTIVE
    plain = card(grpc_server, rows[1][0])
    assert not plain.verified and plain.service_stage == vpb.SERVICE_STAGE_FULL
    assert card(grpc_server, msisdn("138", 9008)).verified
    assert held(grpc_server) == 2  # the activated card and the verified legacy one

    # The same file again: already complete, nothing twice.
    assert cli_import(grpc_server, path, "--max-bad-ratio", "0.05") == 0
    again = legacy(grpc_server).GetImport(lpb.GetImportRequest(import_id=file_id(path)))
    assert again.legacy_import.imported_rows == 191


def test_pre_policy_verified_rows_take_slots_beyond_the_cap(grpc_server: GrpcHarness) -> None:
    """Cards activated before the cap policy's start are grandfathered, flagged, not topped up."""
    owner = resident_id(412)
    rows = [
        (msisdn("138", 8100 + i), iccid(8100 + i), "VERIFIED", "resident-id-card", owner,
         "2012-03-0" + str(i + 1))
        for i in range(7)
    ]  # fmt: skip
    reply = import_rows(grpc_server.channel("operator-cmcc"), rows, "a" * 64)
    assert reply.legacy_import.imported_rows == 7
    assert reply.legacy_import.documents_over_cap == 1
    assert held(grpc_server, owner) == 7
    with pytest.raises(grpc.RpcError) as info:
        activate(grpc_server, 50, owner)
    assert rich_error(info.value).reason == "CARD_LIMIT_REACHED"
    report = ComplianceServiceStub(grpc_server.channel("regulator")).GetComplianceReport(
        GetComplianceReportRequest(operator="cmcc")
    )
    assert report.operators[0].documents_over_cap == 1
    # A second import of further pre-policy cards does not count the document twice.
    more = [(msisdn("138", 8110), iccid(8110), "VERIFIED", "resident-id-card", owner, "2013-01-01")]
    again = import_rows(grpc_server.channel("operator-cmcc"), more, "c" * 64)
    assert (again.legacy_import.imported_rows, again.legacy_import.documents_over_cap) == (1, 0)
    assert held(grpc_server, owner) == 8


def test_verified_rows_over_the_cap_need_a_pre_policy_date(grpc_server: GrpcHarness) -> None:
    """Six VERIFIED rows for one document: the sixth needs an activation before the policy."""
    owner = resident_id(414)
    dates = ["", "2020-01-01", "2012-01-01", "", "2024-05-05", "", "2026-01-01", "2016-10-31"]
    rows = [
        (msisdn("138", 8300 + i), iccid(8300 + i), "VERIFIED", "resident-id-card", owner, day)
        for i, day in enumerate(dates)
    ]
    reply = import_rows(grpc_server.channel("operator-cmcc"), rows, "d" * 64, batch=3)
    state = reply.legacy_import
    # Rows 1-5 fill the cap whatever their date; 6 (no date) and 7 (2026) are refused; 8 predates
    # the default start (2016-11-01) and takes the document over the cap.
    assert (state.imported_rows, state.failed_rows, state.documents_over_cap) == (6, 2, 1)
    assert [(e.row, e.field) for e in reply.errors] == [(6, "activated_on"), (7, "activated_on")]
    assert all("CARD_LIMIT_REACHED" in e.reason and owner not in e.reason for e in reply.errors)
    assert held(grpc_server, owner) == 6
    for refused in (msisdn("138", 8305), msisdn("138", 8306)):
        with pytest.raises(grpc.RpcError) as info:
            card(grpc_server, refused)
        assert rich_error(info.value).code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        activate(grpc_server, 51, owner)
    assert rich_error(info.value).reason == "CARD_LIMIT_REACHED"


def test_a_bad_activation_date_is_a_row_error(grpc_server: GrpcHarness) -> None:
    rows = [
        (msisdn("138", 8400 + i), iccid(8400 + i), "UNVERIFIED", "", "", day)
        for i, day in enumerate(["2012-02-30", "yesterday", "2999-01-01", "2012-02-28"])
    ]
    stub = legacy(grpc_server)
    checked = stub.ImportLegacy(stream("e" * 64, lpb.IMPORT_MODE_VALIDATE, rows, max_bad_ratio=1))
    assert [(e.row, e.field) for e in checked.errors] == [
        (1, "activated_on"), (2, "activated_on"), (3, "activated_on"),
    ]  # fmt: skip


def test_rows_of_a_blocked_document_are_refused_and_counted(grpc_server: GrpcHarness) -> None:
    """A legacy import puts no card in service under a blocked document, verified or not."""
    blocked = resident_id(413)
    proofing_stub(grpc_server, "regulator").BlockDocument(
        ppb.BlockDocumentRequest(document=doc(blocked), reason=ppb.BLOCK_REASON_STOLEN)
    )
    rows = [
        (msisdn("138", 8200), iccid(8200), "VERIFIED", "resident-id-card", blocked),
        (msisdn("138", 8201), iccid(8201), "UNVERIFIED", "resident-id-card", blocked),
        (msisdn("138", 8202), iccid(8202), "VERIFIED", "resident-id-card", OWNER_ID),
    ]
    reply = import_rows(grpc_server.channel("operator-cmcc"), rows, "b" * 64)
    state = reply.legacy_import
    assert state.state == lpb.IMPORT_STATE_COMPLETED
    assert (state.imported_rows, state.failed_rows) == (1, 2)
    assert [(e.row, e.field) for e in reply.errors] == [
        (1, "document.number"), (2, "document.number"),
    ]  # fmt: skip
    assert all("DOCUMENT_BLOCKED" in e.reason and blocked not in e.reason for e in reply.errors)
    for number in (msisdn("138", 8200), msisdn("138", 8201)):
        with pytest.raises(grpc.RpcError) as info:
            card(grpc_server, number)
        assert rich_error(info.value).code == grpc.StatusCode.NOT_FOUND
    assert held(grpc_server, blocked) == 0
    assert card(grpc_server, msisdn("138", 8202)).state == vpb.CARD_STATE_ACTIVE


def test_a_file_over_the_bad_row_ratio_is_refused_whole(
    grpc_server: GrpcHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        *good_rows(98),
        (msisdn("186", 1), iccid(9101), "UNVERIFIED", "", ""),
        (msisdn("186", 2), iccid(9102), "UNVERIFIED", "", ""),
    ]
    path = write_csv(tmp_path / "bad.csv", rows)
    assert cli_import(grpc_server, path) == 3
    assert "refused" in capsys.readouterr().err
    assert len(errors_of(tmp_path / "bad.csv.errors.csv")) == 2
    with pytest.raises(grpc.RpcError) as info:
        card(grpc_server, rows[0][0])
    assert rich_error(info.value).code == grpc.StatusCode.NOT_FOUND
    stub = legacy(grpc_server)
    state = stub.GetImport(lpb.GetImportRequest(import_id=file_id(path))).legacy_import
    assert state.state == lpb.IMPORT_STATE_REFUSED and state.committed_rows == 0
    # A commit of the refused file is refused too, and writes nothing.
    with pytest.raises(grpc.RpcError) as info:
        stub.ImportLegacy(stream(file_id(path), lpb.IMPORT_MODE_COMMIT, rows))
    err = rich_error(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BAD_ROW_RATIO")
    with pytest.raises(grpc.RpcError):
        card(grpc_server, rows[0][0])
    # A looser threshold accepts it.
    assert cli_import(grpc_server, path, "--max-bad-ratio", "0.02") == 0
    assert card(grpc_server, rows[0][0]).state == vpb.CARD_STATE_ACTIVE


def test_commit_needs_validation_and_rejects_bad_headers(grpc_server: GrpcHarness) -> None:
    stub = legacy(grpc_server)
    rows = good_rows(3)
    with pytest.raises(grpc.RpcError) as info:
        stub.ImportLegacy(stream("b" * 64, lpb.IMPORT_MODE_COMMIT, rows))
    assert rich_error(info.value).reason == "IMPORT_NOT_VALIDATED"
    with pytest.raises(grpc.RpcError) as info:
        stub.ImportLegacy(stream("not-hex", lpb.IMPORT_MODE_VALIDATE, rows))
    err = rich_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field_violations[0][0] == "header.import_id"
    with pytest.raises(grpc.RpcError) as info:
        stub.ImportLegacy(stream("b" * 64, lpb.IMPORT_MODE_VALIDATE, rows, total=5))
    assert rich_error(info.value).reason == "ROW_COUNT_MISMATCH"
    with pytest.raises(grpc.RpcError) as info:
        stub.ImportLegacy(iter([]))
    assert rich_error(info.value).code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        stub.GetImport(lpb.GetImportRequest(import_id="b" * 64))
    assert rich_error(info.value).reason == "IMPORT_NOT_FOUND"
    # Another operator does not see cmcc's import.
    import_rows(grpc_server.channel("operator-cmcc"), rows, "c" * 64)
    other = lgrpc.LegacyServiceStub(grpc_server.channel("operator-cucc"))
    with pytest.raises(grpc.RpcError) as info:
        other.GetImport(lpb.GetImportRequest(import_id="c" * 64))
    assert rich_error(info.value).code == grpc.StatusCode.NOT_FOUND


def test_an_interrupted_commit_resumes_without_duplicates(grpc_server: GrpcHarness) -> None:
    stub = legacy(grpc_server)
    rows = good_rows(100, start=300)
    import_id = "d" * 64
    checked = stub.ImportLegacy(stream(import_id, lpb.IMPORT_MODE_VALIDATE, rows))
    assert checked.legacy_import.state == lpb.IMPORT_STATE_VALIDATED
    # The first 40 rows only (a stream cut short), then the whole file from row 1.
    part = stub.ImportLegacy(
        stream(import_id, lpb.IMPORT_MODE_COMMIT, rows[:40], batch=20, total=100)
    )
    assert part.legacy_import.state == lpb.IMPORT_STATE_IMPORTING
    assert part.legacy_import.committed_rows == 40
    with pytest.raises(grpc.RpcError) as info:  # a stream that would skip rows 41-60
        stub.ImportLegacy(stream(import_id, lpb.IMPORT_MODE_COMMIT, rows, first_row=61))
    err = rich_error(info.value)
    assert (err.reason, err.metadata["committed_rows"]) == ("IMPORT_GAP", "40")
    rest = stub.ImportLegacy(stream(import_id, lpb.IMPORT_MODE_COMMIT, rows, batch=30))
    assert rest.skipped_rows == 40 and not rest.errors
    assert rest.legacy_import.state == lpb.IMPORT_STATE_COMPLETED
    assert rest.legacy_import.imported_rows == 100
    # Validating again after commits started is refused.
    with pytest.raises(grpc.RpcError) as info:
        stub.ImportLegacy(stream(import_id, lpb.IMPORT_MODE_VALIDATE, rows))
    assert rich_error(info.value).reason == "IMPORT_ALREADY_STARTED"


def test_complete_registration_verifies_and_takes_a_slot(grpc_server: GrpcHarness) -> None:
    rows = good_rows(2, start=700)
    import_rows(grpc_server.channel("operator-cmcc"), rows, "e" * 64)
    stub = legacy(grpc_server)
    request = lpb.CompleteRegistrationRequest(msisdn=rows[0][0], document=doc(OWNER_ID))
    done = stub.CompleteRegistration(request).card
    assert done.verified and done.service_stage == vpb.SERVICE_STAGE_FULL
    assert done.document_masked.endswith(OWNER_ID[-4:]) and OWNER_ID not in str(done)
    assert held(grpc_server) == 1
    assert stub.CompleteRegistration(request).card.verified  # same document: unchanged
    assert held(grpc_server) == 1
    with pytest.raises(grpc.RpcError) as info:
        stub.CompleteRegistration(
            lpb.CompleteRegistrationRequest(msisdn=rows[0][0], document=doc(resident_id(9)))
        )
    assert rich_error(info.value).reason == "ALREADY_VERIFIED"
    with pytest.raises(grpc.RpcError) as info:
        stub.CompleteRegistration(
            lpb.CompleteRegistrationRequest(msisdn=msisdn("138", 1), document=doc(OWNER_ID))
        )
    assert rich_error(info.value).reason == "CARD_NOT_FOUND"
    with pytest.raises(grpc.RpcError) as info:
        stub.CompleteRegistration(
            lpb.CompleteRegistrationRequest(msisdn="123", document=doc("110"))
        )
    err = rich_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in err.field_violations} == {"msisdn", "document.number"}


def test_complete_registration_over_the_cap_lists_the_holders_cards(
    grpc_server: GrpcHarness,
) -> None:
    rows = good_rows(1, start=800)
    import_rows(grpc_server.channel("operator-cmcc"), rows, "f" * 64)
    live = [activate(grpc_server, 100 + i) for i in range(5)]
    stub = legacy(grpc_server)
    request = lpb.CompleteRegistrationRequest(msisdn=rows[0][0], document=doc(OWNER_ID))
    with pytest.raises(grpc.RpcError) as info:
        stub.CompleteRegistration(request)
    err = rich_error(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "CARD_LIMIT_REACHED")
    masked = [c.msisdn[:3] + "****" + c.msisdn[7:] for c in live]
    assert err.metadata["live_cards"] == ",".join(masked)
    assert [s for s, _ in err.quota_violations][1:] == [f"card:{m}" for m in masked]
    assert all(c.msisdn not in err.message for c in live) and OWNER_ID not in err.message
    assert not card(grpc_server, rows[0][0]).verified  # refused: nothing changed
    assert held(grpc_server) == 5
    # Give one up, then it goes through.
    server = grpc_server.verification()
    server.DeactivateCard(vpb.DeactivateCardRequest(request_id="give-up", msisdn=live[0].msisdn))
    assert stub.CompleteRegistration(request).card.verified
    assert held(grpc_server) == 5


def test_deadline_policy_set_and_get(grpc_server: GrpcHarness) -> None:
    stub = legacy(grpc_server)
    with pytest.raises(grpc.RpcError) as info:
        stub.GetDeadlinePolicy(lpb.GetDeadlinePolicyRequest())
    assert rich_error(info.value).reason == "NO_DEADLINE_POLICY"
    set_reply = stub.SetDeadlinePolicy(
        lpb.SetDeadlinePolicyRequest(policy=lpb.DeadlinePolicy(deadline="2027-06-30"))
    )
    assert (set_reply.policy.grace_days, set_reply.policy.termination_days) == (30, 30)
    got = stub.GetDeadlinePolicy(lpb.GetDeadlinePolicyRequest()).policy
    assert (got.deadline, got.grace_days) == ("2027-06-30", 30)
    for bad in (lpb.DeadlinePolicy(deadline="30/06/2027"),
                lpb.DeadlinePolicy(deadline="2027-06-30", grace_days=100_000)):  # fmt: skip
        with pytest.raises(grpc.RpcError) as info:
            stub.SetDeadlinePolicy(lpb.SetDeadlinePolicyRequest(policy=bad))
        assert rich_error(info.value).code == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.GetDeadlinePolicy(lpb.GetDeadlinePolicyRequest()).policy.deadline == "2027-06-30"
    with pytest.raises(grpc.RpcError) as info:
        lgrpc.LegacyServiceStub(grpc_server.channel("marketplace-demo")).GetDeadlinePolicy(
            lpb.GetDeadlinePolicyRequest()
        )
    assert rich_error(info.value).reason == "ROLE_NOT_ALLOWED"


def test_the_cap_policy_start_is_configurable(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REALNAME_CAP_POLICY_START moves the day before which over-cap cards are grandfathered."""
    monkeypatch.setenv("REALNAME_CAP_POLICY_START", "2010-01-01")
    server = start_harness(db, pki_dir, pseudonymizer)
    try:
        owner = resident_id(415)
        rows = [
            (msisdn("138", 8500 + i), iccid(8500 + i), "VERIFIED", "resident-id-card", owner,
             "2012-01-01" if i == 5 else "")
            for i in range(6)
        ]  # fmt: skip
        reply = import_rows(server.channel("operator-cmcc"), rows, "f" * 64)
        assert (reply.legacy_import.imported_rows, reply.legacy_import.failed_rows) == (5, 1)
        assert "2010-01-01" in reply.errors[0].reason
    finally:
        server.close()
    monkeypatch.setenv("REALNAME_CAP_POLICY_START", "1 May 2016")
    with pytest.raises(ValueError, match="REALNAME_CAP_POLICY_START"):
        App.build(db, pseudonymizer)
