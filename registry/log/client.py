"""A client of a C2SP tlog-tiles log: fetches checkpoints, tiles and entry bundles, builds proofs.

Transport-agnostic: it reads through a ``Fetcher`` (the CLI gives it an HTTP one), so a
marketplace can point it at any mirror of the tiles. Every tile and bundle is checked for the
width its coordinates imply before it is used.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, Protocol

from registry.log.errors import FetchError, InconsistencyError
from registry.merkle import NodeID, consistency_nodes, inclusion_nodes
from registry.tiles import (
    EntryBundle,
    MalformedTileDataError,
    Tile,
    decode_entry_bundle,
    decode_tile,
    tile_for_node,
)

DEFAULT_CLIENT_CACHE: Final = 512
"""Full tiles a client keeps (they never change)."""


class Fetcher(Protocol):
    """Reads one resource of a log's read API, by path relative to the log's prefix."""

    def fetch(self, path: str) -> bytes | None:
        """Return the body at ``path`` (e.g. ``tile/0/000``), None if the log answers 404.

        Raises ``FetchError`` for anything else (network failure, server error).
        """


class TileClient:
    """Reads a log through a ``Fetcher`` and checks the shape of everything it reads."""

    def __init__(self, fetcher: Fetcher, *, cache_size: int = DEFAULT_CLIENT_CACHE) -> None:
        """Read through ``fetcher``, caching up to ``cache_size`` full tiles."""
        self._fetcher = fetcher
        self._cache: OrderedDict[Tile, list[bytes]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def checkpoint(self) -> bytes:
        """Return the log's current signed checkpoint note."""
        body = self._fetcher.fetch("checkpoint")
        if body is None:
            raise FetchError("the log has no checkpoint (404)")
        return body

    def tile_hashes(self, tile: Tile) -> list[bytes]:
        """Return the hashes of ``tile``; a missing partial tile is cut from its full tile."""
        if not tile.is_partial:
            with self._lock:
                cached = self._cache.get(tile)
            if cached is not None:
                return cached
        body = self._fetcher.fetch(tile.path())
        if body is None and tile.is_partial:
            # C2SP lets a log drop a partial tile once the full one exists; its prefix is equal.
            full = self.tile_hashes(Tile(tile.level, tile.index))
            return full[: tile.width]
        if body is None:
            raise InconsistencyError(f"the log has no {tile.path()} though its checkpoint does")
        try:
            hashes = decode_tile(body, tile.width)
        except MalformedTileDataError as error:
            raise InconsistencyError(f"{tile.path()}: {error}") from error
        if not tile.is_partial:
            with self._lock:
                self._cache[tile] = hashes
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return hashes

    def entries(self, bundle: EntryBundle) -> list[bytes]:
        """Return the entries of ``bundle``, refusing a bundle of any other width."""
        body = self._fetcher.fetch(bundle.path())
        if body is None and bundle.is_partial:
            body = self._fetcher.fetch(EntryBundle(bundle.index).path())
            if body is not None:
                return self._decode_bundle(body, EntryBundle(bundle.index))[: bundle.width]
        if body is None:
            raise InconsistencyError(f"the log has no {bundle.path()} though its checkpoint does")
        return self._decode_bundle(body, bundle)

    @staticmethod
    def _decode_bundle(body: bytes, bundle: EntryBundle) -> list[bytes]:
        try:
            return decode_entry_bundle(body, bundle.width)
        except MalformedTileDataError as error:
            raise InconsistencyError(f"{bundle.path()}: {error}") from error

    def node_hashes(self, ids: Sequence[NodeID], size: int) -> list[bytes]:
        """Return the hashes of perfect subtrees ``ids`` of the tree of ``size`` leaves."""
        out = []
        for node in ids:
            location = tile_for_node(node, size)
            try:
                out.append(location.hash(self.tile_hashes(location.tile)))
            except MalformedTileDataError as error:
                raise InconsistencyError(f"{location.tile.path()}: {error}") from error
        return out

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Build the inclusion proof of leaf ``index`` in tree ``size`` from the tiles."""
        plan = inclusion_nodes(index, size)
        return plan.rehash(self.node_hashes(plan.ids, size))

    def consistency_proof(self, first_size: int, second_size: int) -> list[bytes]:
        """Build the consistency proof from tree ``first_size`` to ``second_size`` from tiles."""
        plan = consistency_nodes(first_size, second_size)
        return plan.rehash(self.node_hashes(plan.ids, second_size))
