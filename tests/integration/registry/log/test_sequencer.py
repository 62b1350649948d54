"""Sequencing on SQLite and PostgreSQL: one linear tree, consistent checkpoints, atomic appends."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading

import pytest
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import IntegrityError

from registry.checkpoint import open_checkpoint
from registry.log.entries import AuditDigest, Issuance, decode_entry, encode_entry
from registry.log.errors import EntryTooLargeError
from registry.log.reader import LogReader
from registry.log.sequencer import Sequencer, SequencerRunner, integrate
from registry.log.storage import (
    append_entries,
    append_entry,
    index_for_certificate,
    log_checkpoints,
    log_entries,
    log_tiles,
    pending_count,
    read_state,
)
from registry.merkle import MemoryTree, verify_consistency
from registry.tiles import TILE_WIDTH, tiles_for_size
from services.storage.database import Database, DatabaseConfig
from tests.support.logdata import ORIGIN, T0, audit, issuance, log_signer, store
from tests.support.paths import REPO_ROOT

SIGNER = log_signer()


@pytest.fixture
def sequencer(db: Database) -> Sequencer:
    return Sequencer(db.engine, SIGNER, ORIGIN, transact=db.write)


def stored_entries(db: Database) -> list[bytes]:
    with db.engine.connect() as conn:
        rows = conn.execute(select(log_entries.c.idx, log_entries.c.entry).order_by("idx")).all()
    assert [row.idx for row in rows] == list(range(len(rows)))
    return [bytes(row.entry) for row in rows]


def checkpoints(db: Database) -> list[tuple[int, bytes, bytes]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(log_checkpoints.c.size, log_checkpoints.c.root, log_checkpoints.c.note).order_by(
                log_checkpoints.c.size
            )
        ).all()
    return [(int(r.size), bytes(r.root), bytes(r.note)) for r in rows]


def assert_tiles_match(db: Database, tree: MemoryTree) -> None:
    """Every stored tile row holds exactly the tree's nodes for the tile's current width."""
    with db.engine.connect() as conn:
        rows = {
            (int(r.level), int(r.idx)): bytes(r.hashes)
            for r in conn.execute(select(log_tiles.c.level, log_tiles.c.idx, log_tiles.c.hashes))
        }
    expected = {}
    for tile in tiles_for_size(tree.size):
        first = tile.first_node_index
        expected[(tile.level, tile.index)] = b"".join(
            tree.node(tile.node_level, first + i) for i in range(tile.width)
        )
    assert rows == expected


def assert_checkpoints_consistent(db: Database, reader: LogReader) -> None:
    """Each checkpoint verifies and every later one provably extends every earlier one."""
    verifier = SIGNER.verifier()
    history = checkpoints(db)
    for size, root, note in history:
        opened = open_checkpoint(note, origin=ORIGIN, log_verifier=verifier).checkpoint
        assert (opened.size, opened.root_hash) == (size, root)
    with db.engine.connect() as conn:
        for (size1, root1, _), (size2, root2, _) in itertools.pairwise(history):
            if size1 == 0:
                continue
            proof = reader.consistency_proof(conn, size1, size2)
            verify_consistency(size1, size2, list(proof.hashes), root1, root2)


def test_empty_log_gets_one_checkpoint(db: Database, sequencer: Sequencer) -> None:
    first = sequencer.integrate_now()
    assert (first.previous_size, first.size, first.added) == (0, 0, 0)
    assert first.checkpoint is not None
    again = sequencer.integrate_now()
    assert again.checkpoint is None
    assert [size for size, _root, _note in checkpoints(db)] == [0]


def test_batches_build_the_rfc6962_tree_and_tiles(db: Database) -> None:
    entries = [audit(i) for i in range(600)]
    db.write(lambda conn: append_entries(conn, entries))
    small = Sequencer(db.engine, SIGNER, ORIGIN, batch_size=37, transact=db.write)
    result = small.integrate_now()
    tree = MemoryTree(encode_entry(e) for e in entries)
    assert (result.previous_size, result.size, result.root) == (0, 600, tree.root())
    assert stored_entries(db) == [encode_entry(e) for e in entries]
    # One checkpoint per batch: 600 = 16 * 37 + 8.
    sizes = [size for size, _root, _note in checkpoints(db)]
    assert sizes == [*range(37, 600, 37), 600]
    assert_tiles_match(db, tree)
    assert_checkpoints_consistent(db, LogReader())
    with db.engine.connect() as conn:
        state = read_state(conn)
        assert pending_count(conn) == 0
    assert state is not None and state.size == 600 and state.root == tree.root()


def test_entries_are_sequenced_in_commit_order_across_calls(
    db: Database, sequencer: Sequencer
) -> None:
    tree = MemoryTree()
    for round_ in range(4):
        batch = [audit(i, f"round{round_}") for i in range(round_ * 100 + 1)]
        db.write(lambda conn, batch=batch: append_entries(conn, batch))
        for entry in batch:
            tree.append(encode_entry(entry))
        assert sequencer.integrate_now().root == tree.root()
    assert_tiles_match(db, tree)


def test_a_rolled_back_transaction_leaves_no_entry(db: Database, sequencer: Sequencer) -> None:
    sequencer.integrate_now()

    class Abort(Exception):
        pass

    def registry_change_then_failure(conn: Connection) -> None:
        conn.execute(text("INSERT INTO operators (id, name, kind) VALUES ('tx1', 'T', 'basic')"))
        append_entry(conn, issuance(1))
        raise Abort

    with pytest.raises(Abort):
        db.write(registry_change_then_failure)

    def entry_then_registry_failure(conn: Connection) -> None:
        append_entry(conn, issuance(2))
        # The demo data already has cmcc: the registry's own write fails after the append.
        conn.execute(text("INSERT INTO operators (id, name, kind) VALUES ('cmcc', 'X', 'basic')"))

    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        entry_then_registry_failure(conn)

    def registry_change_then_bad_entry(conn: Connection) -> None:
        conn.execute(text("INSERT INTO operators (id, name, kind) VALUES ('tx3', 'T', 'basic')"))
        # The certificate fits its length field, but the whole entry overflows a bundle.
        append_entry(conn, Issuance(T0, store(3), 5, b"\0" * 65_500))

    with pytest.raises(EntryTooLargeError):
        db.write(registry_change_then_bad_entry)

    assert sequencer.integrate_now().size == 0
    with db.engine.connect() as conn:
        assert pending_count(conn) == 0
        ids = conn.execute(text("SELECT id FROM operators WHERE id LIKE 'tx%'")).all()
        assert ids == []


def test_a_committed_change_always_gets_its_entry_sequenced(
    db: Database, sequencer: Sequencer
) -> None:
    entry = issuance(4)

    def registry_change(conn: Connection) -> None:
        conn.execute(text("INSERT INTO operators (id, name, kind) VALUES ('tx4', 'T', 'basic')"))
        append_entry(conn, entry)

    db.write(registry_change)
    # A sequencer that dies mid-batch rolls back; the entry waits for the next one.
    with pytest.raises(RuntimeError), db.engine.begin() as conn:
        integrate(conn, SIGNER, ORIGIN)
        raise RuntimeError("crash before commit")
    with db.engine.connect() as conn:
        assert pending_count(conn) == 1
    result = sequencer.integrate_now()
    assert result.size == 1
    with db.engine.connect() as conn:
        assert index_for_certificate(conn, entry.certificate) == 0
    assert stored_entries(db) == [encode_entry(entry)]


@pytest.mark.parametrize("isolation", ["default", "serializable"])
def test_concurrent_writer_threads_and_sequencers_make_one_linear_tree(
    database_url: str, isolation: str
) -> None:
    # SERIALIZABLE is how distributed SQL engines run: conflicts abort and Database retries.
    db = Database(DatabaseConfig(database_url, isolation=isolation))
    try:
        _concurrent_threads(db)
    finally:
        db.dispose()


def _concurrent_threads(db: Database) -> None:
    writers, per_writer = 6, 40
    runners = [
        SequencerRunner(
            Sequencer(db.engine, SIGNER, ORIGIN, batch_size=16, transact=db.write), 0.003
        )
        for _ in range(2)
    ]
    for runner in runners:
        runner.start()
    errors: list[BaseException] = []

    def write(label: str) -> None:
        try:
            for i in range(per_writer):
                entry = audit(i, label)
                db.write(lambda conn, entry=entry: append_entry(conn, entry))
        except BaseException as error:
            errors.append(error)
            raise

    threads = [threading.Thread(target=write, args=(f"w{n}",)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for runner in runners:
        runner.stop()
    assert errors == []
    assert [runner.failures for runner in runners] == [0, 0]
    final = Sequencer(db.engine, SIGNER, ORIGIN, transact=db.write).integrate_now()
    assert final.size == writers * per_writer
    logged = stored_entries(db)
    expected = {encode_entry(audit(i, f"w{n}")) for n in range(writers) for i in range(per_writer)}
    assert sorted(logged) == sorted(expected)
    # Each writer's entries keep their commit order.
    for n in range(writers):
        mine = [decode_entry(e) for e in logged]
        labels = [e.digest for e in mine if isinstance(e, AuditDigest) and e.label == f"w{n}"]
        assert labels == [audit(i, f"w{n}").digest for i in range(per_writer)]
    tree = MemoryTree(logged)
    assert final.root == tree.root()
    assert len(checkpoints(db)) > 2
    assert_tiles_match(db, tree)
    assert_checkpoints_consistent(db, LogReader())


def test_two_processes_append_and_sequence_one_linear_tree(db: Database, database_url: str) -> None:
    count = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.log_worker", database_url, f"p{n}", str(count)],
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    final = Sequencer(db.engine, SIGNER, ORIGIN, transact=db.write).integrate_now()
    assert final.size == 2 * count
    logged = stored_entries(db)
    expected = {encode_entry(audit(i, f"p{n}")) for n in range(2) for i in range(count)}
    assert set(logged) == expected and len(logged) == len(expected)
    # The workers' own sequencers did the integrating, batch by batch, while they wrote.
    assert len(checkpoints(db)) > 2
    tree = MemoryTree(logged)
    assert final.root == tree.root()
    assert_tiles_match(db, tree)
    assert_checkpoints_consistent(db, LogReader())


def test_full_tiles_are_written_once_and_partial_tiles_grow(db: Database) -> None:
    seq = Sequencer(db.engine, SIGNER, ORIGIN, batch_size=100, transact=db.write)
    entries = [audit(i) for i in range(TILE_WIDTH + 10)]
    db.write(lambda conn: append_entries(conn, entries))
    seq.integrate_now()
    with db.engine.connect() as conn:
        rows = dict(
            ((int(r.level), int(r.idx)), len(r.hashes))
            for r in conn.execute(select(log_tiles.c.level, log_tiles.c.idx, log_tiles.c.hashes))
        )
    assert rows == {(0, 0): 32 * TILE_WIDTH, (0, 1): 32 * 10, (1, 0): 32}
