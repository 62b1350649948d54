"""C2SP tlog-tiles: tile and entry bundle coordinates, their URL paths and their contents.

A tile at level L holds up to 256 consecutive hashes of tree level 8*L; the seven tree levels
above them are recomputed from the tile. Paths are relative to the log's URL prefix:
``tile/<L>/<N>[.p/<W>]`` and ``tile/entries/<N>[.p/<W>]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from registry.merkle import (
    HASH_SIZE,
    MAX_TREE_SIZE,
    NodeID,
    NodeReader,
    node_hash,
    root_from_leaf_hashes,
)

TILE_HEIGHT: Final = 8
"""Tree levels spanned by one tile."""

TILE_WIDTH: Final = 1 << TILE_HEIGHT
"""Hashes (or entries) in a full tile (or entry bundle)."""

MAX_TILE_LEVEL: Final = 63
"""Largest tile level a path may carry."""

MAX_ENTRY_SIZE: Final = 0xFFFF
"""Largest entry an entry bundle can hold (uint16 length prefix)."""

_LEVEL_RE: Final = re.compile(r"0|[1-9][0-9]?")
_WIDTH_RE: Final = re.compile(r"[1-9][0-9]{0,2}")
_INDEX_RE: Final = re.compile(r"(?:x[0-9]{3}/)*[0-9]{3}")


class TileError(Exception):
    """Base class of every error raised by ``registry.tiles``."""


class InvalidTileError(TileError):
    """Raised when tile coordinates, a node or a tree size are out of range."""


class MalformedTilePathError(TileError):
    """Raised when a tile or entry bundle path is not in canonical C2SP form."""


class MalformedTileDataError(TileError):
    """Raised when tile or entry bundle bytes do not decode to the expected contents."""


@dataclass(frozen=True, slots=True)
class Tile:
    """Coordinates of a hash tile: ``index``-th tile of tile ``level``, ``width`` hashes wide."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        """Refuse coordinates no tree of uint64 size can have."""
        _check_coordinates(self.level, self.index, self.width)

    @property
    def is_partial(self) -> bool:
        """Whether the tile holds fewer than 256 hashes."""
        return self.width < TILE_WIDTH

    @property
    def node_level(self) -> int:
        """Tree level of the hashes the tile holds."""
        return self.level * TILE_HEIGHT

    @property
    def first_node_index(self) -> int:
        """Index, within ``node_level``, of the tile's first hash."""
        return self.index * TILE_WIDTH

    def path(self) -> str:
        """Return the tile's path, e.g. ``tile/0/x001/234.p/7``."""
        return f"tile/{self.level}/{_index_and_width(self.index, self.width)}"


@dataclass(frozen=True, slots=True)
class EntryBundle:
    """Coordinates of an entry bundle: entries [256*index, 256*index + width)."""

    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        """Refuse coordinates no tree of uint64 size can have."""
        _check_coordinates(0, self.index, self.width)

    @property
    def is_partial(self) -> bool:
        """Whether the bundle holds fewer than 256 entries."""
        return self.width < TILE_WIDTH

    @property
    def first_entry_index(self) -> int:
        """Leaf index of the bundle's first entry."""
        return self.index * TILE_WIDTH

    def path(self) -> str:
        """Return the bundle's path, e.g. ``tile/entries/x001/234``."""
        return f"tile/entries/{_index_and_width(self.index, self.width)}"


@dataclass(frozen=True, slots=True)
class NodeInTile:
    """Where a perfect subtree lives: ``count`` hashes of ``tile`` starting at ``first``."""

    tile: Tile
    first: int
    count: int

    def hash(self, tile_hashes: Sequence[bytes]) -> bytes:
        """Return the subtree's hash from the hashes of (at least the width of) ``tile``."""
        if len(tile_hashes) < self.first + self.count:
            raise MalformedTileDataError(
                f"tile has {len(tile_hashes)} hashes, node needs {self.first + self.count}"
            )
        if self.count == 1:
            return tile_hashes[self.first]
        return root_from_leaf_hashes(tile_hashes[self.first : self.first + self.count])

    def hash_from_levels(self, levels: Sequence[Sequence[bytes]]) -> bytes:
        """Return the subtree's hash from ``tile_levels`` of its tile, without hashing."""
        height = self.count.bit_length() - 1
        position = self.first >> height
        if height >= len(levels) or position >= len(levels[height]):
            raise MalformedTileDataError(f"tile levels lack height {height}, index {position}")
        return levels[height][position]


def encode_tile_index(index: int) -> str:
    """Encode a tile index as 3-digit path elements, e.g. 1234067 as ``x001/x234/067``."""
    if index < 0:
        raise InvalidTileError(f"negative tile index {index}")
    parts = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        parts.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(parts))


def parse_tile_index(text: str) -> int:
    """Parse a canonical tile index encoding (the inverse of ``encode_tile_index``)."""
    if not _INDEX_RE.fullmatch(text):
        raise MalformedTilePathError(f"malformed tile index {text!r}")
    index = int(text.replace("x", "").replace("/", ""))
    # A zero-valued leading group ("x000/...") would give one index two paths.
    if encode_tile_index(index) != text:
        raise MalformedTilePathError(f"non-canonical tile index {text!r}")
    return index


def parse_tile_path(path: str) -> Tile:
    """Parse ``tile/<L>/<N>[.p/<W>]`` into a ``Tile``."""
    prefix, _, rest = path.partition("/")
    level_text, _, rest = rest.partition("/")
    if prefix != "tile" or not _LEVEL_RE.fullmatch(level_text):
        raise MalformedTilePathError(f"malformed tile path {path!r}")
    level = int(level_text)
    if level > MAX_TILE_LEVEL:
        raise MalformedTilePathError(f"tile level {level} above {MAX_TILE_LEVEL}")
    index, width = _parse_index_and_width(rest, path)
    try:
        return Tile(level, index, width)
    except InvalidTileError as error:
        raise MalformedTilePathError(f"tile path {path!r} out of range") from error


def parse_entry_bundle_path(path: str) -> EntryBundle:
    """Parse ``tile/entries/<N>[.p/<W>]`` into an ``EntryBundle``."""
    prefix = "tile/entries/"
    if not path.startswith(prefix):
        raise MalformedTilePathError(f"malformed entry bundle path {path!r}")
    index, width = _parse_index_and_width(path[len(prefix) :], path)
    try:
        return EntryBundle(index, width)
    except InvalidTileError as error:
        raise MalformedTilePathError(f"entry bundle path {path!r} out of range") from error


def parse_path(path: str) -> Tile | EntryBundle:
    """Parse any tile or entry bundle path."""
    if path.startswith("tile/entries/"):
        return parse_entry_bundle_path(path)
    return parse_tile_path(path)


def tiles_for_size(size: int) -> Iterator[Tile]:
    """Yield every tile, full then partial, level by level, of the tree of ``size`` leaves."""
    _check_size(size)
    level = 0
    while size >> (TILE_HEIGHT * level):
        hashes = size >> (TILE_HEIGHT * level)
        full, width = divmod(hashes, TILE_WIDTH)
        for index in range(full):
            yield Tile(level, index)
        if width:
            yield Tile(level, full, width)
        level += 1


def partial_tiles(size: int) -> list[Tile]:
    """Return the partial tiles (at most one per level) of the tree of ``size`` leaves."""
    _check_size(size)
    tiles = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        hashes = size >> (TILE_HEIGHT * level)
        if hashes % TILE_WIDTH:
            tiles.append(Tile(level, hashes // TILE_WIDTH, hashes % TILE_WIDTH))
        level += 1
    return tiles


def entry_bundles_for_size(size: int) -> Iterator[EntryBundle]:
    """Yield every entry bundle, full then partial, of the tree of ``size`` leaves."""
    _check_size(size)
    full, width = divmod(size, TILE_WIDTH)
    for index in range(full):
        yield EntryBundle(index)
    if width:
        yield EntryBundle(full, width)


def tile_width(level: int, index: int, size: int) -> int:
    """Return the width tile (level, index) has in the tree of ``size`` leaves (0: absent)."""
    _check_size(size)
    hashes = size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, hashes - index * TILE_WIDTH))


def tile_for_node(node: NodeID, size: int) -> NodeInTile:
    """Locate perfect subtree ``node`` of the tree of ``size`` leaves in the tile that holds it."""
    level, index = node.level, node.index
    if level < 0 or index < 0 or (index + 1) << level > size:
        raise InvalidTileError(f"node {node} is not a perfect subtree of tree size {size}")
    tile_level, height = divmod(level, TILE_HEIGHT)
    first = (index << height) % TILE_WIDTH
    tile_index = (index << height) // TILE_WIDTH
    width = tile_width(tile_level, tile_index, size)
    return NodeInTile(Tile(tile_level, tile_index, width), first, 1 << height)


def tiles_for_nodes(nodes: Iterable[NodeID], size: int) -> list[Tile]:
    """Return, without repeats and in first-use order, the tiles holding ``nodes``."""
    tiles: dict[Tile, None] = {}
    for node in nodes:
        tiles.setdefault(tile_for_node(node, size).tile)
    return list(tiles)


def read_node_from_tiles(
    node: NodeID, size: int, fetch_tile_hashes: Callable[[Tile], Sequence[bytes]]
) -> bytes:
    """Return the hash of ``node`` in tree ``size``, reading its tile via ``fetch_tile_hashes``."""
    location = tile_for_node(node, size)
    return location.hash(fetch_tile_hashes(location.tile))


def tile_levels(tile_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Return every perfect subtree inside a tile: ``levels[h][i]`` is height h, index i.

    Recomputing a height-7 node costs 127 hashes; tiles never change once full, so a server
    expands each tile once, caches the result, and answers every node with a lookup.
    """
    levels = [list(tile_hashes)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    return levels


def tile_hashes(tile: Tile, read_node: NodeReader) -> list[bytes]:
    """Return the hashes that make up ``tile``, read from a tree's stored nodes."""
    first = tile.first_node_index
    return [read_node(tile.node_level, first + i) for i in range(tile.width)]


def encode_tile(hashes: Sequence[bytes]) -> bytes:
    """Serialize tile hashes as served: their concatenation."""
    if not 1 <= len(hashes) <= TILE_WIDTH:
        raise InvalidTileError(f"a tile holds 1 to {TILE_WIDTH} hashes, got {len(hashes)}")
    for value in hashes:
        if len(value) != HASH_SIZE:
            raise InvalidTileError(f"tile hash is {len(value)} bytes, want {HASH_SIZE}")
    return b"".join(hashes)


def decode_tile(data: bytes, width: int) -> list[bytes]:
    """Split served tile bytes into ``width`` hashes, refusing any other length."""
    if not 1 <= width <= TILE_WIDTH:
        raise InvalidTileError(f"tile width {width} out of range")
    if len(data) != width * HASH_SIZE:
        raise MalformedTileDataError(f"tile is {len(data)} bytes, want {width * HASH_SIZE}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """Serialize entries as an entry bundle: each one a big-endian uint16 length, then its bytes."""
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise InvalidTileError(f"a bundle holds 1 to {TILE_WIDTH} entries, got {len(entries)}")
    parts = []
    for entry in entries:
        if len(entry) > MAX_ENTRY_SIZE:
            raise InvalidTileError(f"entry of {len(entry)} bytes exceeds {MAX_ENTRY_SIZE}")
        parts.append(len(entry).to_bytes(2, "big"))
        parts.append(entry)
    return b"".join(parts)


def decode_entry_bundle(data: bytes, width: int | None = None) -> list[bytes]:
    """Split an entry bundle into its entries; if ``width`` is given, require that many."""
    entries: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 2:
            raise MalformedTileDataError("truncated entry length")
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if end - pos < length:
            raise MalformedTileDataError(f"entry {len(entries)} truncated")
        entries.append(data[pos : pos + length])
        pos += length
        if len(entries) > TILE_WIDTH:
            raise MalformedTileDataError(f"bundle holds more than {TILE_WIDTH} entries")
    if not entries:
        raise MalformedTileDataError("empty entry bundle")
    if width is not None and len(entries) != width:
        raise MalformedTileDataError(f"bundle holds {len(entries)} entries, want {width}")
    return entries


def _check_coordinates(level: int, index: int, width: int) -> None:
    if not 0 <= level <= MAX_TILE_LEVEL:
        raise InvalidTileError(f"tile level {level} out of range 0..{MAX_TILE_LEVEL}")
    if not 1 <= width <= TILE_WIDTH:
        raise InvalidTileError(f"tile width {width} out of range 1..{TILE_WIDTH}")
    # The tile's first leaf must be an index a uint64-sized tree can hold.
    if index < 0 or index * TILE_WIDTH ** (level + 1) > MAX_TREE_SIZE:
        raise InvalidTileError(f"tile index {index} out of range at level {level}")


def _check_size(size: int) -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise InvalidTileError(f"tree size {size} out of range")


def _index_and_width(index: int, width: int) -> str:
    encoded = encode_tile_index(index)
    return encoded if width == TILE_WIDTH else f"{encoded}.p/{width}"


def _parse_index_and_width(text: str, path: str) -> tuple[int, int]:
    index_text, dot_p, width_text = text.partition(".p/")
    if dot_p:
        if not _WIDTH_RE.fullmatch(width_text) or int(width_text) >= TILE_WIDTH:
            raise MalformedTilePathError(f"partial width in {path!r} must be 1..255")
        width = int(width_text)
    else:
        width = TILE_WIDTH
    return parse_tile_index(index_text), width
