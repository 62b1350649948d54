"""Reading the log: checkpoints, C2SP tiles and entry bundles, entries, and Merkle proofs.

Everything is answered from the stored tiles. A tile's content at a given width never changes
(the log is append-only), so a ``LogReader`` keeps an LRU cache of tiles expanded into all their
internal levels: any node of a cached tile is then a slice, and a proof from a large log costs a
few dictionary lookups plus the RFC 6962 folding of its ephemeral node.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Connection, func, select

from registry.log import storage
from registry.log.errors import (
    InvalidRangeError,
    LeafNotFoundError,
    LogCorruptedError,
    NoCheckpointError,
    TreeSizeError,
)
from registry.log.storage import StoredCheckpoint, log_checkpoints
from registry.merkle import (
    HASH_SIZE,
    NodeID,
    consistency_nodes,
    inclusion_nodes,
    node_hash,
)
from registry.tiles import (
    EntryBundle,
    NodeInTile,
    Tile,
    encode_entry_bundle,
    tile_for_node,
    tile_width,
)

log = logging.getLogger("realname.log.reader")

DEFAULT_TILE_CACHE: Final = 4096
"""Expanded tiles kept in memory by default (about 16 KiB each: all full tiles of a 1M log)."""

MAX_ENTRIES_PER_READ: Final = 1000
"""Most entries one ``entries`` call returns."""


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """An RFC 6962 inclusion proof of leaf ``leaf_index`` in the tree of ``tree_size`` leaves."""

    leaf_index: int
    tree_size: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """An RFC 6962 consistency proof from tree size ``first_size`` to ``second_size``."""

    first_size: int
    second_size: int
    hashes: tuple[bytes, ...]


class _ExpandedTile:
    """A tile with all its internal levels: ``levels[h]`` concatenates the height-h nodes."""

    __slots__ = ("levels",)

    def __init__(self, hashes: bytes) -> None:
        levels = [hashes]
        current = [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]
        while len(current) > 1:
            current = [node_hash(current[i], current[i + 1]) for i in range(0, len(current) - 1, 2)]
            levels.append(b"".join(current))
        self.levels = levels

    def node(self, location: NodeInTile) -> bytes:
        height = location.count.bit_length() - 1
        offset = (location.first >> height) * HASH_SIZE
        value = self.levels[height][offset : offset + HASH_SIZE]
        if len(value) != HASH_SIZE:
            raise LogCorruptedError(f"tile {location.tile.path()} lacks node at {location.first}")
        return value


class LogReader:
    """Answers read requests from the log's tables; safe to share between threads."""

    def __init__(self, *, tile_cache_size: int = DEFAULT_TILE_CACHE) -> None:
        """Keep up to ``tile_cache_size`` expanded tiles in memory."""
        self._cache: OrderedDict[Tile, _ExpandedTile] = OrderedDict()
        self._cache_size = tile_cache_size
        self._lock = threading.Lock()

    # --- checkpoints ---

    def latest_checkpoint(self, conn: Connection) -> StoredCheckpoint:
        """Return the newest signed checkpoint with its cosignatures."""
        found = storage.latest_checkpoint(conn)
        if found is None:
            raise NoCheckpointError("the log has not signed a checkpoint yet")
        return found

    def checkpoint_at(self, conn: Connection, size: int) -> StoredCheckpoint | None:
        """Return the checkpoint signed at exactly tree ``size``, if the log signed one."""
        return storage.checkpoint_at(conn, size)

    def published_size(self, conn: Connection) -> int:
        """Return the tree size of the newest checkpoint (what clients may ask about)."""
        value = conn.execute(select(func.max(log_checkpoints.c.size))).scalar_one()
        if value is None:
            raise NoCheckpointError("the log has not signed a checkpoint yet")
        return int(value)

    # --- tiles and entries ---

    def tile(self, conn: Connection, tile: Tile) -> bytes:
        """Return the bytes of hash tile ``tile`` (full or partial) as C2SP serves them."""
        self._check_tile(conn, tile.level, tile.index, tile.width, "tile")
        return self._expanded(conn, [tile])[tile].levels[0]

    def entry_bundle(self, conn: Connection, bundle: EntryBundle) -> bytes:
        """Return entry bundle ``bundle`` (full or partial) as C2SP serves it."""
        self._check_tile(conn, 0, bundle.index, bundle.width, "entry bundle")
        first = bundle.first_entry_index
        rows = storage.read_entries(conn, first, first + bundle.width)
        if len(rows) != bundle.width:
            # Served as stored: proving the log's contents is the monitors' job, and they can
            # only catch what they are shown.
            log.error(
                "entry bundle incomplete in storage",
                extra={"fields": {"bundle": bundle.path(), "rows": len(rows)}},
            )
        if not rows:
            raise LogCorruptedError(f"no stored entries for {bundle.path()}")
        return encode_entry_bundle([entry for _index, entry in rows])

    def entries(self, conn: Connection, start: int, end: int) -> list[tuple[int, bytes]]:
        """Return ``(index, entry)`` for start <= index < end, capped at 1,000 entries."""
        if not 0 <= start < end:
            raise InvalidRangeError(f"invalid entry range [{start}, {end})")
        size = self.published_size(conn)
        if start >= size:
            raise TreeSizeError(
                f"entry {start} is beyond the tree size {size}", requested=start, available=size
            )
        stop = min(end, size, start + MAX_ENTRIES_PER_READ)
        rows = storage.read_entries(conn, start, stop)
        if [index for index, _entry in rows] != list(range(start, stop)):
            raise LogCorruptedError(f"stored entries [{start}, {stop}) are incomplete")
        return rows

    # --- proofs ---

    def inclusion_proof(
        self, conn: Connection, leaf_index: int, tree_size: int | None = None
    ) -> InclusionProof:
        """Return the inclusion proof of ``leaf_index`` at ``tree_size`` (default: latest)."""
        size = self._tree_size(conn, tree_size)
        if not 0 <= leaf_index < size:
            raise InvalidRangeError(f"leaf index {leaf_index} is not below tree size {size}")
        plan = inclusion_nodes(leaf_index, size)
        hashes = plan.rehash(self._node_hashes(conn, plan.ids, size))
        return InclusionProof(leaf_index, size, tuple(hashes))

    def inclusion_proof_for_leaf_hash(
        self, conn: Connection, leaf_hash: bytes, tree_size: int | None = None
    ) -> InclusionProof:
        """Return the inclusion proof of the first entry with ``leaf_hash`` at ``tree_size``."""
        size = self._tree_size(conn, tree_size)
        index = storage.index_for_leaf_hash(conn, leaf_hash)
        if index is None or index >= size:
            raise LeafNotFoundError(f"no entry with leaf hash {leaf_hash.hex()} in tree {size}")
        return self.inclusion_proof(conn, index, size)

    def inclusion_proof_for_certificate(
        self, conn: Connection, certificate_der: bytes
    ) -> tuple[InclusionProof, StoredCheckpoint]:
        """Return the proof that a certificate was logged, and the latest checkpoint it is under."""
        checkpoint = self.latest_checkpoint(conn)
        index = storage.index_for_certificate(conn, certificate_der)
        if index is None or index >= checkpoint.size:
            raise LeafNotFoundError("the certificate is not in the log (yet)")
        return self.inclusion_proof(conn, index, checkpoint.size), checkpoint

    def consistency_proof(
        self, conn: Connection, first_size: int, second_size: int | None = None
    ) -> ConsistencyProof:
        """Return the proof that tree ``first_size`` is a prefix of ``second_size`` (latest)."""
        size = self._tree_size(conn, second_size)
        if not 0 < first_size <= size:
            raise InvalidRangeError(f"no consistency proof from tree size {first_size} to {size}")
        plan = consistency_nodes(first_size, size)
        hashes = plan.rehash(self._node_hashes(conn, plan.ids, size))
        return ConsistencyProof(first_size, size, tuple(hashes))

    # --- internals ---

    def _tree_size(self, conn: Connection, requested: int | None) -> int:
        published = self.published_size(conn)
        if requested is None:
            return published
        if requested < 0:
            raise InvalidRangeError(f"negative tree size {requested}")
        if requested > published:
            raise TreeSizeError(
                f"tree size {requested} is beyond the published size {published}",
                requested=requested,
                available=published,
            )
        return requested

    def _check_tile(self, conn: Connection, level: int, index: int, width: int, what: str) -> None:
        size = self.published_size(conn)
        available = tile_width(level, index, size)
        if width > available:
            raise TreeSizeError(
                f"{what} ({level}, {index}) of width {width} is beyond tree size {size}",
                requested=width,
                available=available,
            )

    def _node_hashes(self, conn: Connection, ids: Sequence[NodeID], size: int) -> list[bytes]:
        locations = [tile_for_node(node, size) for node in ids]
        tiles = self._expanded(conn, (location.tile for location in locations))
        return [tiles[location.tile].node(location) for location in locations]

    def _expanded(self, conn: Connection, wanted: Iterable[Tile]) -> dict[Tile, _ExpandedTile]:
        found: dict[Tile, _ExpandedTile] = {}
        missing: list[Tile] = []
        with self._lock:
            for tile in dict.fromkeys(wanted):
                cached = self._cache.get(tile)
                if cached is None:
                    missing.append(tile)
                else:
                    self._cache.move_to_end(tile)
                    found[tile] = cached
        if not missing:
            return found
        rows = storage.read_tile_rows(conn, [(tile.level, tile.index) for tile in missing])
        fresh: dict[Tile, _ExpandedTile] = {}
        for tile in missing:
            stored = rows.get((tile.level, tile.index))
            if stored is None or len(stored) < HASH_SIZE * tile.width:
                raise LogCorruptedError(f"stored tile {tile.path()} is missing or short")
            fresh[tile] = _ExpandedTile(stored[: HASH_SIZE * tile.width])
        with self._lock:
            for tile, expanded in fresh.items():
                self._cache[tile] = expanded
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        found.update(fresh)
        return found
