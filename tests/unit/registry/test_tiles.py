"""C2SP tlog-tiles path math, tile contents, and proofs answered from tiles."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.merkle import (
    MAX_TREE_SIZE,
    MemoryTree,
    NodeID,
    consistency_nodes,
    inclusion_nodes,
    leaf_hash,
)
from registry.tiles import (
    EntryBundle,
    InvalidTileError,
    MalformedTileDataError,
    MalformedTilePathError,
    NodeInTile,
    Tile,
    decode_entry_bundle,
    decode_tile,
    encode_entry_bundle,
    encode_tile,
    encode_tile_index,
    entry_bundles_for_size,
    parse_entry_bundle_path,
    parse_path,
    parse_tile_index,
    parse_tile_path,
    partial_tiles,
    read_node_from_tiles,
    tile_for_node,
    tile_hashes,
    tile_levels,
    tiles_for_nodes,
    tiles_for_size,
)

# --- index encoding ---


@pytest.mark.parametrize(
    ("index", "encoded"),
    [
        (0, "000"),
        (5, "005"),
        (999, "999"),
        (1000, "x001/000"),
        (1234067, "x001/x234/067"),
        (10**9, "x001/x000/x000/000"),
        (MAX_TREE_SIZE, "x018/x446/x744/x073/x709/x551/615"),
    ],
)
def test_tile_index_encoding(index: int, encoded: str) -> None:
    assert encode_tile_index(index) == encoded
    assert parse_tile_index(encoded) == index


@settings(database=None)
@given(st.integers(0, 1 << 80))
def test_tile_index_round_trip(index: int) -> None:
    assert parse_tile_index(encode_tile_index(index)) == index


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "01",
        "0001",
        "x001",
        "x000/001",
        "x000/x001/002",
        "001/002",
        "X001/002",
        "x01/002",
        "x001/02",
        "x001/x002",
        "x001//002",
        "-01",
        " 001",
        "001 ",
        "001\n",
        "00a",
        "\u0660\u0660\u0661",  # Arabic-Indic digits are digits to str.isdigit, not to paths
    ],
)
def test_malformed_tile_index_refused(text: str) -> None:
    with pytest.raises(MalformedTilePathError):
        parse_tile_index(text)


def test_negative_index_cannot_be_encoded() -> None:
    with pytest.raises(InvalidTileError):
        encode_tile_index(-1)


# --- tile and bundle paths ---


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (Tile(0, 0), "tile/0/000"),
        (Tile(0, 1234067), "tile/0/x001/x234/067"),
        (Tile(0, 1234, 7), "tile/0/x001/234.p/7"),
        (Tile(2, 1, 255), "tile/2/001.p/255"),
        (Tile(7, 0, 1), "tile/7/000.p/1"),
        (Tile(63, 0), "tile/63/000"),
    ],
)
def test_tile_paths(tile: Tile, path: str) -> None:
    assert tile.path() == path
    assert parse_tile_path(path) == tile
    assert parse_path(path) == tile


@pytest.mark.parametrize(
    ("bundle", "path"),
    [
        (EntryBundle(0), "tile/entries/000"),
        (EntryBundle(1234, 5), "tile/entries/x001/234.p/5"),
    ],
)
def test_entry_bundle_paths(bundle: EntryBundle, path: str) -> None:
    assert bundle.path() == path
    assert parse_entry_bundle_path(path) == bundle
    assert parse_path(path) == bundle


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tile",
        "tile/0",
        "tile/0/",
        "/tile/0/000",
        "tiles/0/000",
        "tile/00/000",
        "tile/01/000",
        "tile/64/000",
        "tile/-1/000",
        "tile/a/000",
        "tile/0/1",
        "tile/0/x000/001",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/007",
        "tile/0/000.p/",
        "tile/0/000.p/1a",
        "tile/0/000.p/1/",
        "tile/0/000.p/-1",
        "tile/0/000.q/1",
        "tile/0/000/",
        "tile/entries/000",
        "tile/8/001",  # its first leaf would be 2**64: beyond any uint64 tree
    ],
)
def test_malformed_tile_path_refused(path: str) -> None:
    with pytest.raises(MalformedTilePathError):
        parse_tile_path(path)


@pytest.mark.parametrize(
    "path",
    ["tile/entries/", "tile/entries/1", "tile/entries/000.p/256", "tile/entry/000", "tile/0/000"],
)
def test_malformed_entry_bundle_path_refused(path: str) -> None:
    with pytest.raises(MalformedTilePathError):
        parse_entry_bundle_path(path)


@pytest.mark.parametrize(
    ("level", "index", "width"), [(-1, 0, 256), (64, 0, 256), (0, -1, 256), (0, 0, 0), (0, 0, 257)]
)
def test_tile_coordinates_validated(level: int, index: int, width: int) -> None:
    with pytest.raises(InvalidTileError):
        Tile(level, index, width)


@settings(database=None)
@given(st.integers(0, 7), st.integers(0, 1 << 40), st.integers(1, 256))
def test_tile_path_round_trip(level: int, index: int, width: int) -> None:
    tile = Tile(level, index % (1 << (56 - 8 * level)), width)
    assert parse_tile_path(tile.path()) == tile
    assert tile.is_partial == (width < 256)


# --- which tiles a tree has ---


def test_spec_example_tree_of_70000() -> None:
    tiles = list(tiles_for_size(70_000))
    assert tiles == [
        *(Tile(0, n) for n in range(273)),
        Tile(0, 273, 112),
        Tile(1, 0),
        Tile(1, 1, 17),
        Tile(2, 0, 1),
    ]
    assert partial_tiles(70_000) == [Tile(0, 273, 112), Tile(1, 1, 17), Tile(2, 0, 1)]


@pytest.mark.parametrize(
    ("size", "tiles"),
    [
        (0, []),
        (1, [Tile(0, 0, 1)]),
        (255, [Tile(0, 0, 255)]),
        (256, [Tile(0, 0), Tile(1, 0, 1)]),
        (257, [Tile(0, 0), Tile(0, 1, 1), Tile(1, 0, 1)]),
        (65536, [*(Tile(0, n) for n in range(256)), Tile(1, 0), Tile(2, 0, 1)]),
    ],
)
def test_tiles_for_small_sizes(size: int, tiles: list[Tile]) -> None:
    assert list(tiles_for_size(size)) == tiles


@settings(database=None)
@given(st.integers(0, MAX_TREE_SIZE))
def test_partial_tiles_are_the_right_edge(size: int) -> None:
    partial = partial_tiles(size)
    level = 0
    for tile in partial:
        assert tile.is_partial
        hashes = size >> (8 * tile.level)
        assert tile.index == hashes // 256
        assert tile.width == hashes % 256
        assert tile.level >= level
        level = tile.level + 1
    assert len(partial) <= 8


def test_entry_bundles_for_size() -> None:
    assert list(entry_bundles_for_size(0)) == []
    assert list(entry_bundles_for_size(600)) == [EntryBundle(0), EntryBundle(1), EntryBundle(2, 88)]
    with pytest.raises(InvalidTileError):
        list(entry_bundles_for_size(-1))


@pytest.mark.parametrize(
    ("node", "size", "where"),
    [
        (NodeID(0, 300), 1000, NodeInTile(Tile(0, 1), 44, 1)),
        (NodeID(0, 999), 1000, NodeInTile(Tile(0, 3, 232), 231, 1)),
        (NodeID(3, 5), 1000, NodeInTile(Tile(0, 0), 40, 8)),
        (NodeID(7, 1), 1000, NodeInTile(Tile(0, 0), 128, 128)),
        (NodeID(7, 2), 1000, NodeInTile(Tile(0, 1), 0, 128)),
        (NodeID(8, 2), 1000, NodeInTile(Tile(1, 0, 3), 2, 1)),
        (NodeID(9, 0), 1000, NodeInTile(Tile(1, 0, 3), 0, 2)),
        (NodeID(16, 0), 1 << 16, NodeInTile(Tile(2, 0, 1), 0, 1)),
    ],
)
def test_tile_for_node(node: NodeID, size: int, where: NodeInTile) -> None:
    assert tile_for_node(node, size) == where


@pytest.mark.parametrize(
    ("node", "size"), [(NodeID(0, 1000), 1000), (NodeID(3, 124), 999), (NodeID(-1, 0), 9)]
)
def test_tile_for_node_refuses_non_perfect_nodes(node: NodeID, size: int) -> None:
    with pytest.raises(InvalidTileError):
        tile_for_node(node, size)


# --- tile and bundle bytes ---


def test_tile_bytes_round_trip() -> None:
    hashes = [bytes([i]) * 32 for i in range(7)]
    data = encode_tile(hashes)
    assert len(data) == 7 * 32
    assert decode_tile(data, 7) == hashes
    with pytest.raises(MalformedTileDataError):
        decode_tile(data, 6)
    with pytest.raises(MalformedTileDataError):
        decode_tile(data + b"\x00", 7)
    with pytest.raises(InvalidTileError):
        decode_tile(b"", 0)
    with pytest.raises(InvalidTileError):
        encode_tile([])
    with pytest.raises(InvalidTileError):
        encode_tile([b"short"])
    with pytest.raises(InvalidTileError):
        encode_tile([bytes(32)] * 257)


@settings(database=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=256))
def test_entry_bundle_round_trip(entries: list[bytes]) -> None:
    data = encode_entry_bundle(entries)
    assert len(data) == sum(2 + len(e) for e in entries)
    assert decode_entry_bundle(data) == entries
    assert decode_entry_bundle(data, len(entries)) == entries


def test_entry_bundle_layout() -> None:
    assert encode_entry_bundle([b"ab", b"", b"c"]) == b"\x00\x02ab\x00\x00\x00\x01c"
    assert decode_entry_bundle(b"\xff\xff" + b"z" * 0xFFFF) == [b"z" * 0xFFFF]


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x00\x02a", b"\x00\x01a\x00", b"\x00\x00" * 257],
)
def test_malformed_entry_bundle_refused(data: bytes) -> None:
    with pytest.raises(MalformedTileDataError):
        decode_entry_bundle(data)


def test_entry_bundle_limits() -> None:
    with pytest.raises(MalformedTileDataError):
        decode_entry_bundle(b"\x00\x00", 2)
    with pytest.raises(InvalidTileError):
        encode_entry_bundle([b"x" * 0x10000])
    with pytest.raises(InvalidTileError):
        encode_entry_bundle([])
    with pytest.raises(InvalidTileError):
        encode_entry_bundle([b""] * 257)


# --- a tile store answers proofs exactly as the full tree does ---


class _TileStore:
    """Serves what a tlog-tiles log serves: tiles and bundles of every checkpointed size."""

    def __init__(self, tree: MemoryTree, entries: Sequence[bytes], sizes: Sequence[int]) -> None:
        self.files: dict[str, bytes] = {}
        for size in sizes:
            for tile in tiles_for_size(size):
                self.files[tile.path()] = encode_tile(tile_hashes(tile, tree.node))
            for bundle in entry_bundles_for_size(size):
                first = bundle.first_entry_index
                chunk = entries[first : first + bundle.width]
                self.files[bundle.path()] = encode_entry_bundle(chunk)
        self.fetched: list[str] = []

    def fetch(self, tile: Tile) -> list[bytes]:
        self.fetched.append(tile.path())
        return decode_tile(self.files[tile.path()], tile.width)

    def read_node(self, size: int, level: int, index: int) -> bytes:
        return read_node_from_tiles(NodeID(level, index), size, self.fetch)


ENTRIES = [b"entry %d" % i for i in range(70_000)]
CHECKPOINT_SIZES = [1, 255, 256, 300, 65_536, 65_537, 69_999, 70_000]


@pytest.fixture(scope="module")
def tiled_log() -> tuple[MemoryTree, _TileStore]:
    tree = MemoryTree(ENTRIES)
    return tree, _TileStore(tree, ENTRIES, CHECKPOINT_SIZES)


def test_bundles_hash_to_level_zero_tiles(tiled_log: tuple[MemoryTree, _TileStore]) -> None:
    _, store = tiled_log
    for bundle in entry_bundles_for_size(70_000):
        entries = decode_entry_bundle(store.files[bundle.path()], bundle.width)
        tile = Tile(0, bundle.index, bundle.width)
        assert [leaf_hash(e) for e in entries] == store.fetch(tile)


@pytest.mark.parametrize("size", CHECKPOINT_SIZES)
def test_tiles_answer_inclusion_and_consistency(
    tiled_log: tuple[MemoryTree, _TileStore], size: int
) -> None:
    tree, store = tiled_log

    def read(level: int, index: int) -> bytes:
        return store.read_node(size, level, index)

    for index in {0, size // 3, size // 2, size - 1}:
        nodes = inclusion_nodes(index, size)
        proof = nodes.rehash([read(n.level, n.index) for n in nodes.ids])
        assert proof == tree.inclusion_proof(index, size)
        needed = {t.path() for t in tiles_for_nodes(nodes.ids, size)}
        assert needed <= store.files.keys()
    for size1 in CHECKPOINT_SIZES:
        if size1 <= size:
            nodes = consistency_nodes(size1, size)
            proof = nodes.rehash([read(n.level, n.index) for n in nodes.ids])
            assert proof == tree.consistency_proof(size1, size)


def test_tile_levels_hold_every_subtree_of_the_tile(
    tiled_log: tuple[MemoryTree, _TileStore],
) -> None:
    tree, store = tiled_log
    for tile in (Tile(0, 5), Tile(0, 273, 112), Tile(1, 1, 17)):
        levels = tile_levels(store.fetch(tile))
        for height, hashes in enumerate(levels[:8]):
            first = tile.first_node_index >> height
            level = tile.node_level + height
            assert hashes == [tree.node(level, first + i) for i in range(tile.width >> height)]
        for height in range(8):
            for position in range(tile.width >> height):
                index = (tile.first_node_index >> height) + position
                where = tile_for_node(NodeID(tile.node_level + height, index), 70_000)
                assert where.hash_from_levels(levels) == where.hash(levels[0])
    with pytest.raises(MalformedTileDataError):
        NodeInTile(Tile(0, 0, 3), 0, 4).hash_from_levels(tile_levels([bytes(32)] * 3))
    with pytest.raises(MalformedTileDataError):
        NodeInTile(Tile(0, 0), 0, 4).hash([bytes(32)] * 3)
