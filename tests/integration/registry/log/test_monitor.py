"""The monitor accepts an honest log and catches every kind of tampering with the database."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from sqlalchemy import delete, text, update

from registry.log.client import TileClient
from registry.log.entries import Issuance, encode_entry
from registry.log.errors import InconsistencyError
from registry.log.monitor import Event, Monitor, MonitorState, MonitorStateError, Watch
from registry.log.sequencer import Sequencer
from registry.log.storage import (
    append_entries,
    log_checkpoints,
    log_entries,
    log_pending,
    log_state,
    log_tiles,
)
from registry.merkle import empty_root, leaf_hash
from registry.note import WitnessPolicy
from services.storage.database import Database
from tests.support.logdata import (
    ORIGIN,
    T0,
    DirectFetcher,
    audit,
    issuance,
    log_signer,
    revocation,
    store,
    store_certificate,
    witness_signer,
)

SIGNER = log_signer()


def append(db: Database, entries: list) -> int:  # type: ignore[type-arg]
    db.write(lambda conn: append_entries(conn, entries))
    return Sequencer(db.engine, SIGNER, ORIGIN, transact=db.write).integrate_now().size


def monitor(db: Database, watch: Watch | None = None, **kwargs: object) -> Monitor:
    return Monitor(
        TileClient(DirectFetcher(db.engine)),
        origin=ORIGIN,
        log_verifier=SIGNER.verifier(),
        watch=watch,
        **kwargs,  # type: ignore[arg-type]
    )


def honest_log(db: Database) -> None:
    append(db, [audit(i) for i in range(300)] + [issuance(1), issuance(2, "cucc")])


def test_an_honest_log_verifies_and_reports_watched_events(db: Database) -> None:
    honest_log(db)
    seen: list[Event] = []
    watch = Watch.parse(["tmall/shop-1", "91110000000000002x"], ["vno1"])
    report, state = monitor(db, watch).check(None, on_event=seen.append)
    assert (report.previous_size, report.size, report.entries_checked) == (0, 302, 302)
    assert [event.index for event in report.events] == [300, 301]
    assert seen == report.events
    assert "kind=issuance" in seen[0].describe() and "store=tmall/shop-1" in seen[0].describe()
    assert "operator=cucc" in seen[1].describe()

    append(db, [revocation(1), audit(999), issuance(3, "vno1")])
    report, state2 = monitor(db, watch).check(state, on_event=seen.append)
    assert (report.previous_size, report.size, report.entries_checked) == (302, 305, 3)
    assert [(e.index, e.entry.kind.name) for e in report.events] == [
        (302, "REVOCATION"),
        (304, "ISSUANCE"),
    ]
    assert "reason=1" in report.events[0].describe()
    # Nothing new: still verifies, nothing reported.
    report, state3 = monitor(db, watch).check(state2)
    assert (report.entries_checked, report.events) == (0, [])
    assert state3 == state2
    # A full recheck from index 0 also passes.
    report, _ = monitor(db, watch).check(state2, recheck_all=True)
    assert report.entries_checked == 305


def test_state_round_trips_through_a_file(db: Database, tmp_path: Path) -> None:
    honest_log(db)
    _, state = monitor(db).check(None)
    path = tmp_path / "state" / "monitor.json"
    assert MonitorState.load(path) is None
    state.save(path)
    assert MonitorState.load(path) == state
    for broken in (
        state.to_json().replace('"size": 302', '"size": 303'),
        state.to_json().replace(
            base64.b64encode(state.root).decode(), base64.b64encode(b"x" * 32).decode()
        ),
        "{}",
        "not json",
    ):
        path.write_text(broken)
        with pytest.raises(MonitorStateError):
            MonitorState.load(path)


def test_a_changed_entry_is_caught(db: Database) -> None:
    honest_log(db)
    forged = encode_entry(issuance(77))
    db.write(
        lambda c: c.execute(
            update(log_entries).where(log_entries.c.idx == 300).values(entry=forged)
        )
    )
    with pytest.raises(InconsistencyError, match="entry 300 does not hash"):
        monitor(db).check(None)


def test_a_changed_entry_and_its_tile_hash_are_caught_by_the_root(db: Database) -> None:
    """Rewriting the leaf hash too moves the root away from the signed checkpoint."""
    honest_log(db)
    forged = encode_entry(issuance(77))
    _, state = monitor(db).check(None)
    rows = db.read(
        lambda c: c.execute(text("SELECT hashes FROM log_tiles WHERE level = 0 AND idx = 1"))
    ).scalar_one()
    patched = bytes(rows)[: 32 * 44] + leaf_hash(forged) + bytes(rows)[32 * 45 :]

    def tamper(conn) -> None:  # type: ignore[no-untyped-def]
        conn.execute(update(log_entries).where(log_entries.c.idx == 300).values(entry=forged))
        conn.execute(
            update(log_tiles)
            .where(log_tiles.c.level == 0, log_tiles.c.idx == 1)
            .values(hashes=patched)
        )

    db.write(tamper)
    with pytest.raises(InconsistencyError, match="hash to root"):
        monitor(db).check(None)
    with pytest.raises(InconsistencyError, match="no longer hash to the root verified before"):
        monitor(db).check(state, recheck_all=True)


def test_a_deleted_entry_is_caught(db: Database) -> None:
    honest_log(db)
    db.write(lambda c: c.execute(delete(log_entries).where(log_entries.c.idx == 5)))
    with pytest.raises(InconsistencyError, match="bundle holds 255 entries, want 256"):
        monitor(db).check(None)


def test_a_forked_checkpoint_is_caught(db: Database) -> None:
    honest_log(db)
    _, state = monitor(db).check(None)
    rewrite_history(db, [audit(i) for i in range(300)] + [issuance(1), issuance(99), audit(5000)])
    with pytest.raises(InconsistencyError, match="not an extension") as caught:
        monitor(db).check(state)
    assert "previously verified" in caught.value.evidence


def test_a_different_root_at_the_same_size_is_caught(db: Database) -> None:
    honest_log(db)
    _, state = monitor(db).check(None)
    rewrite_history(db, [audit(i) for i in range(300)] + [issuance(1), issuance(99)])
    with pytest.raises(InconsistencyError, match="two different roots"):
        monitor(db).check(state)


def test_a_rollback_is_caught(db: Database) -> None:
    honest_log(db)
    _, state = monitor(db).check(None)
    rewrite_history(db, [audit(i) for i in range(300)])
    with pytest.raises(InconsistencyError, match="shrank"):
        monitor(db).check(state)


def test_a_checkpoint_by_another_key_is_rejected(db: Database) -> None:
    honest_log(db)
    impostor = Monitor(
        TileClient(DirectFetcher(db.engine)), origin=ORIGIN, log_verifier=log_signer(7).verifier()
    )
    with pytest.raises(InconsistencyError, match="checkpoint rejected"):
        impostor.check(None)
    other_origin = Monitor(
        TileClient(DirectFetcher(db.engine)),
        origin="elsewhere.example/log",
        log_verifier=log_signer(1, "elsewhere.example/log").verifier(),
    )
    with pytest.raises(InconsistencyError):
        other_origin.check(None)


def test_an_entry_whose_fields_disagree_with_its_certificate_is_caught(db: Database) -> None:
    lying = Issuance(T0, store(5), 0x1005, store_certificate(store(6), 0x1005))
    append(db, [audit(0), lying])
    with pytest.raises(InconsistencyError, match="its certificate is for tmall/shop-6"):
        monitor(db).check(None)


def test_an_undecodable_entry_is_caught(db: Database) -> None:
    append(db, [audit(0), audit(1)])

    def garbage(conn) -> None:  # type: ignore[no-untyped-def]
        conn.execute(text("DELETE FROM log_checkpoints"))
        conn.execute(text("DELETE FROM log_tiles"))
        conn.execute(text("DELETE FROM log_entries"))
        conn.execute(update(log_state).values(size=0, root=empty_root(), edge=b""))
        conn.execute(log_pending.insert().values(entry=b"\x01\x63not an entry"))

    db.write(garbage)
    Sequencer(db.engine, SIGNER, ORIGIN, transact=db.write).integrate_now()
    with pytest.raises(InconsistencyError, match="entry 0 is not a valid log entry"):
        monitor(db).check(None)


def test_witness_policy_is_enforced_by_the_monitor(db: Database) -> None:
    honest_log(db)
    policy = WitnessPolicy([witness_signer(1).verifier()], 1)
    with pytest.raises(InconsistencyError, match="cosigned by 0"):
        monitor(db, witness_policy=policy).check(None)


def rewrite_history(db: Database, entries: list) -> None:  # type: ignore[type-arg]
    """What a dishonest log operator could do: replace the whole log, signing with its key."""

    def wipe(conn) -> None:  # type: ignore[no-untyped-def]
        for table in (log_checkpoints, log_tiles, log_entries, log_pending):
            conn.execute(delete(table))
        conn.execute(update(log_state).values(size=0, root=empty_root(), edge=b""))

    db.write(wipe)
    append(db, entries)


def test_events_describe_every_kind() -> None:
    from tests.unit.registry.log.test_entries import every_kind

    lines = [Event(i, entry).describe() for i, entry in enumerate(every_kind())]
    assert lines[0] == (
        "index=0 kind=issuance time=2026-11-01T08:00:00.000Z operator=cmcc store=tmall/shop-1 "
        "credit_code=91110000000000001X serial=1234"
    )
    assert "previous_serial=1234" in lines[1]
    assert "reason=1" in lines[2]
    assert "operator=vno1" in lines[3] and "certificate_bytes=5" in lines[3]
    assert "previous_ca_sha256=" + "11" * 32 in lines[4]
    assert "reason=9" in lines[5]
    assert lines[6].endswith("label=registry-page digest=" + "22" * 32)
