"""Reading the log: tiles, bundles, entries and proofs agree with an independent RFC 6962 tree."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection

from registry.log.entries import encode_entry
from registry.log.errors import (
    InvalidRangeError,
    LeafNotFoundError,
    NoCheckpointError,
    TreeSizeError,
)
from registry.log.reader import MAX_ENTRIES_PER_READ, LogReader
from registry.log.sequencer import Sequencer
from registry.log.storage import append_entries, append_entry, index_for_leaf_hash
from registry.merkle import (
    MemoryTree,
    NodeID,
    leaf_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)
from registry.tiles import (
    EntryBundle,
    Tile,
    decode_entry_bundle,
    decode_tile,
    read_node_from_tiles,
    tiles_for_size,
)
from services.storage.database import Database
from tests.support.logdata import ORIGIN, audit, issuance, log_signer

SIGNER = log_signer()


def grow(db: Database, entries: list[bytes], count: int, batch: int = 1000) -> int:
    """Append ``count`` more cheap entries and sequence them; return the new size."""
    start = len(entries)
    new = [audit(start + i) for i in range(count)]
    for i in range(0, count, batch):
        db.write(lambda conn, chunk=new[i : i + batch]: append_entries(conn, chunk))
    entries.extend(encode_entry(e) for e in new)
    return Sequencer(db.engine, SIGNER, ORIGIN, transact=db.write).integrate_now().size


def read(db: Database, work):  # type: ignore[no-untyped-def]
    with db.engine.connect() as conn:
        return work(conn)


def test_nothing_is_readable_before_the_first_checkpoint(db: Database) -> None:
    reader = LogReader()
    with pytest.raises(NoCheckpointError):
        read(db, reader.latest_checkpoint)
    with pytest.raises(NoCheckpointError):
        read(db, lambda conn: reader.tile(conn, Tile(0, 0, 1)))


def test_tiles_bundles_and_proofs_of_a_three_level_tree(db: Database) -> None:
    """66,000 entries: full level-0 and level-1 tiles, and partial tiles at levels 0, 1 and 2."""
    entries: list[bytes] = []
    sizes = [grow(db, entries, 300), grow(db, entries, 65_700)]
    assert sizes == [300, 66_000]
    tree = MemoryTree(entries)
    reader = LogReader(tile_cache_size=64)
    size = tree.size
    with db.engine.connect() as conn:
        served = {tile: reader.tile(conn, tile) for tile in tiles_for_size(size)}
        assert {(t.level, t.width) for t in served if t.is_partial} == {
            (0, 66_000 % 256),
            (1, 66_000 // 256 % 256),
            (2, 1),
        }
        # The tree's root, rebuilt from nothing but the served tiles.
        by_coordinates = {(t.level, t.index): decode_tile(b, t.width) for t, b in served.items()}

        def fetch(tile: Tile) -> list[bytes]:
            return by_coordinates[(tile.level, tile.index)]

        def node(level: int, index: int) -> bytes:
            return read_node_from_tiles(NodeID(level, index), size, fetch)

        assert tree_root(size, node) == tree.root()
        # A partial tile at an older size is a prefix of today's (full) tile.
        older = b"".join(tree.node(0, 256 + i) for i in range(44))
        assert reader.tile(conn, Tile(0, 1, 44)) == older
        bundle = EntryBundle(257, 66_000 - 257 * 256)
        assert (
            decode_entry_bundle(reader.entry_bundle(conn, bundle), bundle.width)
            == entries[257 * 256 :]
        )
        assert decode_entry_bundle(reader.entry_bundle(conn, EntryBundle(3))) == entries[768:1024]

        for index in (0, 1, 255, 256, 65_535, 65_536, 65_999):
            for at in (index + 1, 300, 65_536, 66_000):
                if index >= at:
                    continue
                proof = reader.inclusion_proof(conn, index, at)
                assert list(proof.hashes) == tree.inclusion_proof(index, at)
                verify_inclusion(leaf_hash(entries[index]), index, at, proof.hashes, tree.root(at))
        for first in (1, 2, 255, 256, 300, 65_535, 65_536, 65_537):
            for second in (first, 300, 65_536, 66_000):
                if first > second:
                    continue
                proof = reader.consistency_proof(conn, first, second)
                assert list(proof.hashes) == tree.consistency_proof(first, second)
                verify_consistency(first, second, proof.hashes, tree.root(first), tree.root(second))


def test_bad_requests_are_refused(db: Database) -> None:
    entries: list[bytes] = []
    grow(db, entries, 10)
    reader = LogReader()
    with db.engine.connect() as conn:
        with pytest.raises(TreeSizeError) as beyond:
            reader.inclusion_proof(conn, 0, 11)
        assert (beyond.value.requested, beyond.value.available) == (11, 10)
        with pytest.raises(InvalidRangeError):
            reader.inclusion_proof(conn, 10, 10)
        with pytest.raises(InvalidRangeError):
            reader.inclusion_proof(conn, -1)
        with pytest.raises(InvalidRangeError):
            reader.consistency_proof(conn, 0, 5)
        with pytest.raises(InvalidRangeError):
            reader.consistency_proof(conn, 6, 5)
        with pytest.raises(TreeSizeError):
            reader.consistency_proof(conn, 5, 11)
        with pytest.raises(TreeSizeError):
            reader.tile(conn, Tile(0, 0, 11))
        with pytest.raises(TreeSizeError):
            reader.tile(conn, Tile(0, 0))
        with pytest.raises(TreeSizeError):
            reader.tile(conn, Tile(1, 0, 1))
        with pytest.raises(TreeSizeError):
            reader.entry_bundle(conn, EntryBundle(1, 1))
        with pytest.raises(TreeSizeError):
            reader.entries(conn, 10, 12)
        with pytest.raises(InvalidRangeError):
            reader.entries(conn, 5, 5)
        assert reader.consistency_proof(conn, 10).hashes == ()


def test_entries_are_capped_and_end_at_the_tree(db: Database) -> None:
    entries: list[bytes] = []
    grow(db, entries, MAX_ENTRIES_PER_READ + 20)
    reader = LogReader()
    with db.engine.connect() as conn:
        rows = reader.entries(conn, 10, 5000)
        assert [i for i, _ in rows] == list(range(10, 10 + MAX_ENTRIES_PER_READ))
        assert [e for _, e in rows] == entries[10 : 10 + MAX_ENTRIES_PER_READ]
        tail = reader.entries(conn, MAX_ENTRIES_PER_READ + 15, 5000)
        assert [i for i, _ in tail] == list(
            range(MAX_ENTRIES_PER_READ + 15, MAX_ENTRIES_PER_READ + 20)
        )


def test_proofs_by_leaf_hash_and_by_certificate(db: Database) -> None:
    entries: list[bytes] = []
    grow(db, entries, 5)
    logged = issuance(42)
    appended = db.write(lambda conn: append_entry(conn, logged))
    reader = LogReader()

    def lookups(conn: Connection) -> None:
        assert index_for_leaf_hash(conn, appended.leaf_hash) is None
        with pytest.raises(LeafNotFoundError):
            reader.inclusion_proof_for_certificate(conn, logged.certificate)

    read(db, lookups)
    grow(db, entries, 3)
    entries.insert(5, logged.encode())
    tree = MemoryTree(entries)
    with db.engine.connect() as conn:
        proof = reader.inclusion_proof_for_leaf_hash(conn, appended.leaf_hash)
        assert (proof.leaf_index, proof.tree_size) == (5, 9)
        verify_inclusion(appended.leaf_hash, 5, 9, proof.hashes, tree.root())
        by_certificate, checkpoint = reader.inclusion_proof_for_certificate(
            conn, logged.certificate
        )
        assert by_certificate == proof
        assert (checkpoint.size, checkpoint.root) == (9, tree.root())
        with pytest.raises(LeafNotFoundError):
            reader.inclusion_proof_for_leaf_hash(conn, appended.leaf_hash, 5)
        with pytest.raises(LeafNotFoundError):
            reader.inclusion_proof_for_leaf_hash(conn, b"\x00" * 32)
