"""Witness cosignatures: cosign only consistent checkpoints; the log stores only valid ones."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from registry.checkpoint import open_checkpoint
from registry.log.client import TileClient
from registry.log.errors import CosignatureRejectedError, InconsistencyError
from registry.log.sequencer import Sequencer
from registry.log.storage import (
    MAX_SERVED_COSIGNATURES,
    append_entries,
    latest_checkpoint,
    log_checkpoints,
    log_entries,
    log_pending,
    log_state,
    log_tiles,
    store_cosignatures,
)
from registry.log.witness import WitnessState, WitnessStateError, accept_cosignatures, cosign_latest
from registry.merkle import empty_root
from registry.note import InsufficientCosignaturesError, Signature, WitnessPolicy, sign_note
from services.storage.database import Database
from tests.support.logdata import ORIGIN, DirectFetcher, audit, log_signer, witness_signer

SIGNER = log_signer()
WITNESSES = [witness_signer(n) for n in range(3)]
NOW = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)


def grow(db: Database, start: int, count: int) -> None:
    db.write(lambda conn: append_entries(conn, [audit(start + i) for i in range(count)]))
    Sequencer(db.engine, SIGNER, ORIGIN, transact=db.write).integrate_now()


def cosign(db: Database, witness: int, state: WitnessState | None) -> tuple[bytes, WitnessState]:
    return cosign_latest(
        TileClient(DirectFetcher(db.engine)),
        origin=ORIGIN,
        log_verifier=SIGNER.verifier(),
        cosigner=WITNESSES[witness],
        state=state,
    )


def accept(db: Database, note: bytes, trusted: int = 2) -> None:
    db.write(
        lambda conn: accept_cosignatures(
            conn,
            note,
            origin=ORIGIN,
            log_verifier=SIGNER.verifier(),
            witnesses=[w.verifier() for w in WITNESSES[:trusted]],
            now=NOW,
        )
    )


def served(db: Database) -> bytes:
    stored = db.read(latest_checkpoint)
    assert stored is not None
    return stored.signed_note()


def test_cosignatures_are_stored_served_and_counted_k_of_n(db: Database) -> None:
    grow(db, 0, 20)
    note0, state0 = cosign(db, 0, None)
    assert (state0.size, state0.origin) == (20, ORIGIN)
    accept(db, note0)
    policy_1_of_2 = WitnessPolicy([w.verifier() for w in WITNESSES[:2]], 1)
    policy_2_of_2 = WitnessPolicy([w.verifier() for w in WITNESSES[:2]], 2)
    log_verifier = SIGNER.verifier()
    opened = open_checkpoint(
        served(db), origin=ORIGIN, log_verifier=log_verifier, witness_policy=policy_1_of_2
    )
    assert [w.name for w in opened.witnesses] == [WITNESSES[0].name]
    with pytest.raises(InsufficientCosignaturesError):
        open_checkpoint(
            served(db), origin=ORIGIN, log_verifier=log_verifier, witness_policy=policy_2_of_2
        )
    note1, _ = cosign(db, 1, None)
    accept(db, note1)
    opened = open_checkpoint(
        served(db), origin=ORIGIN, log_verifier=log_verifier, witness_policy=policy_2_of_2
    )
    assert len(opened.witnesses) == 2
    # A verifier that knows no witnesses ignores the cosignatures, as the spec requires.
    plain = open_checkpoint(served(db), origin=ORIGIN, log_verifier=log_verifier)
    assert len(plain.note.unverified_signatures) == 2
    # Re-cosigning replaces the witness's earlier cosignature rather than adding one.
    again, _ = cosign(db, 0, state0)
    accept(db, again)
    assert served(db).count(b"\n\xe2\x80\x94 ") == 3

    grow(db, 20, 5)
    note, state = cosign(db, 0, state0)
    assert state.size == 25
    accept(db, note)
    assert (
        open_checkpoint(
            served(db), origin=ORIGIN, log_verifier=log_verifier, witness_policy=policy_1_of_2
        ).checkpoint.size
        == 25
    )


def test_a_witness_refuses_a_fork_or_rollback(db: Database) -> None:
    grow(db, 0, 20)
    _, state = cosign(db, 0, None)

    def rewrite(count: int) -> None:
        def wipe(conn) -> None:  # type: ignore[no-untyped-def]
            for table in (log_checkpoints, log_tiles, log_entries, log_pending):
                conn.execute(delete(table))
            conn.execute(update(log_state).values(size=0, root=empty_root(), edge=b""))

        db.write(wipe)
        grow(db, 1000, count)

    rewrite(22)
    with pytest.raises(InconsistencyError, match="does not extend"):
        cosign(db, 0, state)
    rewrite(20)
    with pytest.raises(InconsistencyError, match="two roots"):
        cosign(db, 0, state)
    rewrite(3)
    with pytest.raises(InconsistencyError, match="shrank"):
        cosign(db, 0, state)
    with pytest.raises(WitnessStateError):
        cosign(db, 0, WitnessState("other.example/log", 3, b"\x00" * 32))


def test_the_log_rejects_bad_submissions(db: Database) -> None:
    grow(db, 0, 4)
    note, _ = cosign(db, 0, None)
    with pytest.raises(CosignatureRejectedError) as unknown:
        accept(db, cosign(db, 2, None)[0])
    assert unknown.value.reason == "UNKNOWN_WITNESS"
    with pytest.raises(CosignatureRejectedError) as tampered:
        accept(db, note.replace(b"\n4\n", b"\n5\n"))
    assert tampered.value.reason == "BAD_NOTE"
    forged = sign_note(f"{ORIGIN}\n4\n{'A' * 43}=\n", log_signer(9, ORIGIN), WITNESSES[0])
    with pytest.raises(CosignatureRejectedError) as not_ours:
        accept(db, forged)
    assert not_ours.value.reason == "NOT_LOG_SIGNED"
    lie = sign_note(f"{ORIGIN}\n4\n{'A' * 43}=\n", SIGNER, WITNESSES[0])
    with pytest.raises(CosignatureRejectedError) as unknown_checkpoint:
        accept(db, lie)
    assert unknown_checkpoint.value.reason == "UNKNOWN_CHECKPOINT"
    with pytest.raises(CosignatureRejectedError) as garbage:
        accept(db, b"hello")
    assert garbage.value.reason == "BAD_NOTE"
    accept(db, note)


def test_witness_state_file(tmp_path: Path) -> None:
    path = tmp_path / "w" / "state.json"
    assert WitnessState.load(path) is None
    state = WitnessState(ORIGIN, 12, b"\x01" * 32)
    state.save(path)
    assert WitnessState.load(path) == state
    path.write_text("{")
    with pytest.raises(WitnessStateError):
        WitnessState.load(path)


def test_at_most_99_cosignatures_are_served(db: Database) -> None:
    grow(db, 0, 2)
    many = [Signature(f"w{n:03d}.example", n, b"\x00" * 72) for n in range(120)]
    db.write(lambda conn: store_cosignatures(conn, 2, many, NOW))
    note = served(db)
    assert note.count("\u2014 ".encode()) == 1 + MAX_SERVED_COSIGNATURES
    opened = open_checkpoint(note, origin=ORIGIN, log_verifier=SIGNER.verifier())
    assert len(opened.note.unverified_signatures) == MAX_SERVED_COSIGNATURES
