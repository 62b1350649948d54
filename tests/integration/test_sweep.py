"""The deadline sweep through `realname sweep`: stages at each boundary, idempotence, dry run."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.cli.main import build_parser
from services.features.sweep import Sweeper
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import legacy_pb2 as lpb
from services.proto.realname.v1 import legacy_pb2_grpc as lgrpc
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from services.storage.database import Database, DatabaseConfig
from services.storage.rawsql import Tx
from tests.support.identities import resident_id
from tests.support.legacy_rows import Row, good_rows, import_rows
from tests.support.server import GrpcHarness

DEADLINE = dt.date(2027, 1, 10)  # all service barred from 2027-02-09, terminated from 2027-03-11
# Sweeps 7 days before each stage: each card gets each notice with its full lead time.
ON_TIME = ("2027-01-03", "2027-02-02", "2027-03-04")


class World:
    """A server with cmcc's legacy subscribers, a cucc one, and cmcc's deadline policy."""

    def __init__(self, server: GrpcHarness, url: str, tmp: Path) -> None:
        self.server, self.url, self.tmp = server, url, tmp
        self.unverified = good_rows(6, start=2000)
        owner = resident_id(500)
        self.verified: list[Row] = [
            (r[0], r[1], "VERIFIED", "resident-id-card", owner) for r in good_rows(2, start=2100)
        ]
        import_rows(server.channel("operator-cmcc"), self.unverified + self.verified, "1" * 64)
        self.other = good_rows(2, start=2200, prefix="186")
        import_rows(server.channel("operator-cucc"), self.other, "2" * 64)
        lgrpc.LegacyServiceStub(server.channel("operator-cmcc")).SetDeadlinePolicy(
            lpb.SetDeadlinePolicyRequest(policy=lpb.DeadlinePolicy(deadline=DEADLINE.isoformat()))
        )

    def sweep(self, day: str, *extra: str) -> dict[str, Any]:
        notices = self.tmp / f"notices-{day}.csv"
        argv = ["sweep", "--data-dir", str(self.tmp), "--at", day, "--quiet",
                "--notices", str(notices), "--batch-size", "3", *extra]  # fmt: skip
        parsed = build_parser().parse_args(argv)
        assert parsed.func(parsed) == 0
        summary: dict[str, Any] = json.loads(self._out.readouterr().out.strip().splitlines()[-1])
        with notices.open(newline="") as f:
            summary["notice_rows"] = list(csv.DictReader(f))
        return summary

    def card(self, number: str, principal: str = "operator-cmcc") -> vpb.Card:
        stub = vgrpc.VerificationServiceStub(self.server.channel(principal))
        return stub.GetCard(vpb.GetCardRequest(msisdn=number)).card

    def stages(self, rows: list[Row], principal: str = "operator-cmcc") -> set[tuple[int, int]]:
        return {(c.state, c.service_stage) for c in (self.card(r[0], principal) for r in rows)}

    _out: pytest.CaptureFixture[str]


@pytest.fixture
def world(
    grpc_server: GrpcHarness,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> World:
    monkeypatch.setenv("REALNAME_DATABASE_URL", database_url)
    w = World(grpc_server, database_url, tmp_path)
    w._out = capsys
    return w


ACTIVE, DEACTIVATED = vpb.CARD_STATE_ACTIVE, vpb.CARD_STATE_DEACTIVATED
FULL, OUT, ALL = (vpb.SERVICE_STAGE_FULL, vpb.SERVICE_STAGE_OUTGOING_BARRED,
                  vpb.SERVICE_STAGE_ALL_BARRED)  # fmt: skip


def test_stages_at_each_date_boundary(world: World) -> None:
    quiet = world.sweep("2027-01-02")
    assert quiet["changed"] == {} and quiet["notice_rows"] == []
    warned = world.sweep("2027-01-03")  # 7 days before the deadline: notices, no change
    assert warned["changed"] == {}
    assert len(warned["notice_rows"]) == 6
    first = warned["notice_rows"][0]
    assert first["msisdn"] == world.unverified[0][0][:3] + "****" + world.unverified[0][0][7:]
    assert (first["operator"], first["stage"], first["date"]) == (
        "cmcc", "OUTGOING_BARRED", "2027-01-10",
    )  # fmt: skip
    assert world.sweep("2027-01-09")["notice_rows"] == []  # owed once, not again
    assert world.stages(world.unverified) == {(ACTIVE, FULL)}

    barred = world.sweep("2027-01-10")
    assert barred["changed"] == {"OUTGOING_BARRED": 6}
    assert world.stages(world.unverified) == {(ACTIVE, OUT)}
    assert world.stages(world.verified) == {(ACTIVE, FULL)}
    assert world.stages(world.other, "operator-cucc") == {(ACTIVE, FULL)}  # no cucc policy

    assert world.sweep("2027-02-01")["notice_rows"] == []
    soon = world.sweep("2027-02-02")  # 7 days before all service is barred
    assert soon["changed"] == {} and len(soon["notice_rows"]) == 6
    assert {(n["stage"], n["date"]) for n in soon["notice_rows"]} == {("ALL_BARRED", "2027-02-09")}
    assert world.stages(world.unverified) == {(ACTIVE, OUT)}
    assert world.sweep("2027-02-09")["changed"] == {"ALL_BARRED": 6}
    assert world.stages(world.unverified) == {(ACTIVE, ALL)}

    last = world.sweep("2027-03-04")
    assert last["changed"] == {} and {n["stage"] for n in last["notice_rows"]} == {"TERMINATED"}
    assert world.sweep("2027-03-11")["changed"] == {"TERMINATED": 6}
    cards = [world.card(r[0]) for r in world.unverified]
    assert {(c.state, c.service_stage) for c in cards} == {(DEACTIVATED, ALL)}
    assert all(c.HasField("deactivated_at") for c in cards)
    assert world.stages(world.verified) == {(ACTIVE, FULL)}
    assert world.sweep("2027-01-10")["changed"] == {}  # an earlier date never resurrects


def test_a_late_first_sweep_notifies_and_starts_the_clock(world: World) -> None:
    # No sweep ran before the deadline: the first one, on the deadline day, owes the notices and
    # bars nothing; the stage applies once the notice's lead time (7 days) has passed.
    first = world.sweep("2027-01-10")
    assert first["changed"] == {} and len(first["notice_rows"]) == 6
    assert {(n["stage"], n["date"]) for n in first["notice_rows"]} == {
        ("OUTGOING_BARRED", "2027-01-17")
    }
    assert world.stages(world.unverified) == {(ACTIVE, FULL)}
    assert world.sweep("2027-01-16")["changed"] == {}
    assert world.sweep("2027-01-17")["changed"] == {"OUTGOING_BARRED": 6}
    assert world.stages(world.unverified) == {(ACTIVE, OUT)}


def test_each_stage_waits_for_its_own_notice(world: World) -> None:
    # A first sweep after termination day: one notice, then one stage a week, each stage only
    # after its own notice's lead time.
    first = world.sweep("2027-03-20")
    assert first["changed"] == {}
    assert {(n["stage"], n["date"]) for n in first["notice_rows"]} == {
        ("OUTGOING_BARRED", "2027-03-27")
    }
    second = world.sweep("2027-03-27")
    assert second["changed"] == {"OUTGOING_BARRED": 6}
    assert {(n["stage"], n["date"]) for n in second["notice_rows"]} == {
        ("ALL_BARRED", "2027-04-03")
    }
    assert world.sweep("2027-04-02")["changed"] == {}
    third = world.sweep("2027-04-03")
    assert third["changed"] == {"ALL_BARRED": 6}
    assert {(n["stage"], n["date"]) for n in third["notice_rows"]} == {("TERMINATED", "2027-04-10")}
    assert world.stages(world.unverified) == {(ACTIVE, ALL)}
    assert world.sweep("2027-04-10")["changed"] == {"TERMINATED": 6}
    assert world.stages(world.unverified) == {(DEACTIVATED, ALL)}
    assert world.stages(world.verified) == {(ACTIVE, FULL)}


def snapshot(url: str) -> list[tuple[Any, ...]]:
    database = Database(DatabaseConfig(url))
    try:

        def work(tx: Tx) -> list[tuple[Any, ...]]:
            cards = tx.all(
                "SELECT id, state, service_stage, verified, deactivated_at FROM cards ORDER BY id"
            )
            notices = tx.all("SELECT card_id, stage FROM legacy_notices ORDER BY card_id, stage")
            return [*cards, ("notices", *notices)]

        return database.run_tx(work, readonly=True)
    finally:
        database.dispose()


def test_a_second_run_at_the_same_date_changes_nothing(world: World) -> None:
    world.sweep(ON_TIME[0])
    first = world.sweep("2027-02-05")
    assert first["changed"] == {"OUTGOING_BARRED": 6} and len(first["notice_rows"]) == 6
    before = snapshot(world.url)
    second = world.sweep("2027-02-05")
    assert second["changed"] == {} and second["notice_rows"] == []
    assert snapshot(world.url) == before


def test_dry_run_changes_nothing(world: World) -> None:
    for day in ON_TIME:
        world.sweep(day)
    before = snapshot(world.url)
    dry = world.sweep("2027-03-11", "--dry-run")
    assert dry["dry_run"] is True and dry["changed"] == {"TERMINATED": 6}
    assert snapshot(world.url) == before
    assert world.stages(world.unverified) == {(ACTIVE, ALL)}
    wet = world.sweep("2027-03-11")
    assert wet["changed"] == {"TERMINATED": 6}


def test_an_interrupted_sweep_resumes_after_its_last_batch(world: World) -> None:
    class Crash(Exception):
        pass

    def crash_after_first_batch(done: int, _total: int) -> None:
        if done >= 3:
            raise Crash

    world.sweep(ON_TIME[0])
    db = Database(DatabaseConfig(world.url))
    try:
        with pytest.raises(Crash):
            Sweeper(db).run(dt.date(2027, 1, 15), batch_size=3, progress=crash_after_first_batch)
    finally:
        db.dispose()
    partly = [world.card(r[0]).service_stage for r in world.unverified]
    assert OUT in partly and FULL in partly  # the first batches committed, the rest not
    resumed = world.sweep("2027-01-15")
    assert resumed["resumed_after_card_id"] == 3
    assert world.stages(world.unverified) == {(ACTIVE, OUT)}
    assert world.sweep("2027-01-15")["resumed_after_card_id"] == 0  # finished: a fresh pass


def test_completing_registration_restores_full_service(world: World) -> None:
    for day in ON_TIME[:2]:
        world.sweep(day)
    world.sweep("2027-02-10")
    assert world.stages(world.unverified[:1]) == {(ACTIVE, ALL)}
    stub = lgrpc.LegacyServiceStub(world.server.channel("operator-cmcc"))
    document = cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(501))
    stub.CompleteRegistration(
        lpb.CompleteRegistrationRequest(msisdn=world.unverified[0][0], document=document)
    )
    assert world.stages(world.unverified[:1]) == {(ACTIVE, FULL)}
    world.sweep(ON_TIME[2])
    world.sweep("2027-03-20")
    assert world.stages(world.unverified[:1]) == {(ACTIVE, FULL)}
    assert world.stages(world.unverified[1:]) == {(DEACTIVATED, ALL)}


def test_sweep_refuses_a_bad_date(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--data-dir", str(world.tmp), "--at", "tomorrow"])
    assert "not a date" in capsys.readouterr().err
    with pytest.raises(grpc.RpcError):
        world.card("13800000000")
