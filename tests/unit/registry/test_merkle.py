"""RFC 6962 hashing, proof generation and verification against transparency-dev vectors."""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import merkle
from registry.merkle import (
    CompactRange,
    InvalidRequestError,
    MemoryTree,
    MissingNodeError,
    NodeID,
    ProofError,
    ProofNodes,
    RootMismatchError,
    consistency_nodes,
    empty_root,
    inclusion_nodes,
    leaf_hash,
    node_hash,
    range_nodes,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from tests.support.paths import VECTORS_DIR

RFC6962_DIR = VECTORS_DIR / "rfc6962"
if not RFC6962_DIR.is_dir():
    raise FileNotFoundError(f"RFC 6962 test vectors missing: {RFC6962_DIR}")

# The leaves behind the vectors' trees, in order (vectors/README.md).
VECTOR_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]

# Roots of the vectors' tree at sizes 1..8, as listed in transparency-dev/merkle's verify_test.go.
VECTOR_ROOTS = [
    bytes.fromhex(h)
    for h in [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]


def _load(kind: str) -> list[tuple[str, dict[str, Any]]]:
    files = sorted((RFC6962_DIR / kind).rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"no {kind} vectors under {RFC6962_DIR}")
    return [(str(f.relative_to(RFC6962_DIR)), json.loads(f.read_text())) for f in files]


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _proof(vector: dict[str, Any]) -> list[bytes]:
    return [_b64(h) for h in vector["proof"] or []]


INCLUSION_VECTORS = _load("inclusion")
CONSISTENCY_VECTORS = _load("consistency")
VECTOR_TREE = MemoryTree(VECTOR_LEAVES)

# Happy paths built on the README's tree (others use made-up roots and only test verification).
INCLUSION_GENERATION = [
    (name, v)
    for name, v in INCLUSION_VECTORS
    if not v["wantErr"]
    and 0 < v["treeSize"] <= 8
    and _b64(v["root"]) == VECTOR_ROOTS[v["treeSize"] - 1]
]
CONSISTENCY_GENERATION = [
    (name, v)
    for name, v in CONSISTENCY_VECTORS
    if not v["wantErr"]
    and 0 < v["size1"] <= v["size2"] <= 8
    and _b64(v["root2"]) == VECTOR_ROOTS[v["size2"] - 1]
]


def _ids(vectors: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in vectors]


# --- vectors: verification ---


def test_vector_sets_cover_both_outcomes() -> None:
    for vectors in (INCLUSION_VECTORS, CONSISTENCY_VECTORS):
        outcomes = {v["wantErr"] for _, v in vectors}
        assert outcomes == {True, False}
    assert len(INCLUSION_GENERATION) >= 5
    assert len(CONSISTENCY_GENERATION) >= 5


@pytest.mark.parametrize(("name", "vector"), INCLUSION_VECTORS, ids=_ids(INCLUSION_VECTORS))
def test_inclusion_vector(name: str, vector: dict[str, Any]) -> None:
    args = (_b64(vector["leafHash"]), vector["leafIdx"], vector["treeSize"], _proof(vector))
    root = _b64(vector["root"])
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args, root)
    else:
        verify_inclusion(*args, root)
        assert root_from_inclusion_proof(*args) == root


@pytest.mark.parametrize(("name", "vector"), CONSISTENCY_VECTORS, ids=_ids(CONSISTENCY_VECTORS))
def test_consistency_vector(name: str, vector: dict[str, Any]) -> None:
    size1, size2, proof = vector["size1"], vector["size2"], _proof(vector)
    root1, root2 = _b64(vector["root1"]), _b64(vector["root2"])
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof, root1, root2)
    else:
        verify_consistency(size1, size2, proof, root1, root2)
        assert root_from_consistency_proof(size1, size2, proof, root1) == root2


# --- vectors: generation ---


def test_vector_tree_roots() -> None:
    hashes = [leaf_hash(leaf) for leaf in VECTOR_LEAVES]
    for size, want in enumerate(VECTOR_ROOTS, start=1):
        assert VECTOR_TREE.root(size) == want
        assert root_from_leaf_hashes(hashes[:size]) == want
        assert CompactRange.from_reader(size, VECTOR_TREE.node).root() == want


@pytest.mark.parametrize(("name", "vector"), INCLUSION_GENERATION, ids=_ids(INCLUSION_GENERATION))
def test_inclusion_generation_matches_vector(name: str, vector: dict[str, Any]) -> None:
    index, size = vector["leafIdx"], vector["treeSize"]
    assert VECTOR_TREE.leaf_hash(index) == _b64(vector["leafHash"])
    assert VECTOR_TREE.inclusion_proof(index, size) == _proof(vector)


@pytest.mark.parametrize(
    ("name", "vector"), CONSISTENCY_GENERATION, ids=_ids(CONSISTENCY_GENERATION)
)
def test_consistency_generation_matches_vector(name: str, vector: dict[str, Any]) -> None:
    size1, size2 = vector["size1"], vector["size2"]
    assert VECTOR_TREE.root(size1) == _b64(vector["root1"])
    assert VECTOR_TREE.consistency_proof(size1, size2) == _proof(vector)


# --- an independent, literal transcription of RFC 6962 section 2.1 ---


def _rfc_mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _rfc_mth(leaves[:k]) + _rfc_mth(leaves[k:])).digest()


def _rfc_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*_rfc_path(m, leaves[:k]), _rfc_mth(leaves[k:])]
    return [*_rfc_path(m - k, leaves[k:]), _rfc_mth(leaves[:k])]


def _rfc_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [_rfc_mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*_rfc_subproof(m, leaves[:k], whole), _rfc_mth(leaves[k:])]
    return [*_rfc_subproof(m - k, leaves[k:], False), _rfc_mth(leaves[:k])]


SMALL_LEAVES = [i.to_bytes(2, "big") for i in range(40)]
SMALL_TREE = MemoryTree(SMALL_LEAVES)


@pytest.mark.parametrize("size", range(1, len(SMALL_LEAVES) + 1))
def test_small_trees_match_rfc_transcription(size: int) -> None:
    leaves = SMALL_LEAVES[:size]
    root = _rfc_mth(leaves)
    assert SMALL_TREE.root(size) == root
    for index in range(size):
        proof = SMALL_TREE.inclusion_proof(index, size)
        assert proof == _rfc_path(index, leaves)
        verify_inclusion(leaf_hash(leaves[index]), index, size, proof, root)
    for size1 in range(1, size + 1):
        proof = SMALL_TREE.consistency_proof(size1, size)
        assert proof == _rfc_subproof(size1, leaves, True)
        verify_consistency(size1, size, proof, SMALL_TREE.root(size1), root)


# --- property tests over a few thousand leaves ---

BIG_LEAVES = [i.to_bytes(4, "big") for i in range(3000)]
BIG_TREE = MemoryTree(BIG_LEAVES)


@cache
def _big_root(size: int) -> bytes:
    # Computed from scratch, not from the tree's stored nodes, to cross-check them.
    return root_from_leaf_hashes([leaf_hash(leaf) for leaf in BIG_LEAVES[:size]])


@st.composite
def _index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, len(BIG_LEAVES)))
    return draw(st.integers(0, size - 1)), size


@st.composite
def _two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(st.integers(1, len(BIG_LEAVES)))
    return draw(st.integers(1, size2)), size2


def _flip_bit(proof: list[bytes], position: int) -> list[bytes]:
    element, bit = divmod(position % (len(proof) * 256), 256)
    changed = bytearray(proof[element])
    changed[bit // 8] ^= 1 << (bit % 8)
    return [*proof[:element], bytes(changed), *proof[element + 1 :]]


@settings(max_examples=300, database=None)
@given(_index_and_size())
def test_generated_inclusion_proofs_verify(case: tuple[int, int]) -> None:
    index, size = case
    proof = BIG_TREE.inclusion_proof(index, size)
    verify_inclusion(leaf_hash(BIG_LEAVES[index]), index, size, proof, _big_root(size))


@settings(max_examples=300, database=None)
@given(_index_and_size(), st.integers(min_value=0))
def test_tampered_inclusion_proofs_fail(case: tuple[int, int], position: int) -> None:
    index, size = case
    proof = BIG_TREE.inclusion_proof(index, size)
    leaf, root = BIG_TREE.leaf_hash(index), _big_root(size)
    tampered = [[*proof, root], [root, *proof]]
    if proof:
        tampered += [proof[:-1], _flip_bit(proof, position)]
    for bad in tampered:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, bad, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(b"not in the log"), index, size, proof, root)


@settings(max_examples=300, database=None)
@given(_two_sizes())
def test_generated_consistency_proofs_verify(case: tuple[int, int]) -> None:
    size1, size2 = case
    proof = BIG_TREE.consistency_proof(size1, size2)
    verify_consistency(size1, size2, proof, _big_root(size1), _big_root(size2))


@settings(max_examples=300, database=None)
@given(_two_sizes().filter(lambda sizes: sizes[0] < sizes[1]), st.integers(min_value=0))
def test_tampered_consistency_proofs_fail(case: tuple[int, int], position: int) -> None:
    size1, size2 = case
    proof = BIG_TREE.consistency_proof(size1, size2)
    root1, root2 = _big_root(size1), _big_root(size2)
    for bad in (proof[:-1], [*proof, root2], [root1, *proof], _flip_bit(proof, position)):
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, bad, root1, root2)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, root2, root1)


@settings(max_examples=200, database=None)
@given(st.integers(1, (1 << 64) - 1), st.data())
def test_proofs_need_logarithmic_node_reads(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    size1 = data.draw(st.integers(1, size))
    bound = 2 * size.bit_length()
    assert len(inclusion_nodes(index, size).ids) <= bound
    assert len(consistency_nodes(size1, size).ids) <= bound + 1


@settings(max_examples=300, database=None)
@given(st.integers(0, 1 << 40), st.integers(0, 1 << 40))
def test_range_nodes_cover_range_with_aligned_perfect_subtrees(a: int, b: int) -> None:
    begin, end = min(a, b), max(a, b)
    pos = begin
    for node in range_nodes(begin, end):
        assert node.index << node.level == pos
        pos += 1 << node.level
    assert pos == end
    assert len(range_nodes(begin, end)) <= 2 * end.bit_length()


# --- API edges ---


def test_hash_primitives() -> None:
    assert empty_root() == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert leaf_hash(b"") == VECTOR_ROOTS[0]
    assert node_hash(b"L", b"R") == hashlib.sha256(b"\x01LR").digest()
    assert root_from_leaf_hashes([]) == empty_root()
    assert MemoryTree().root() == empty_root()
    assert CompactRange().root() == empty_root()


def test_node_reader_refuses_absent_nodes() -> None:
    tree = MemoryTree(SMALL_LEAVES[:5])
    for level, index in [(0, 5), (0, -1), (-1, 0), (1, 2), (3, 0), (99, 0)]:
        with pytest.raises(MissingNodeError):
            tree.node(level, index)
    assert tree.node(2, 0) == tree.root(4)


def test_generation_refuses_out_of_range_requests() -> None:
    with pytest.raises(InvalidRequestError):
        inclusion_nodes(5, 5)
    with pytest.raises(InvalidRequestError):
        inclusion_nodes(-1, 5)
    with pytest.raises(InvalidRequestError):
        inclusion_nodes(0, 1 << 64)
    with pytest.raises(InvalidRequestError):
        consistency_nodes(0, 5)
    with pytest.raises(InvalidRequestError):
        consistency_nodes(6, 5)
    with pytest.raises(InvalidRequestError):
        SMALL_TREE.inclusion_proof(0, len(SMALL_LEAVES) + 1)
    with pytest.raises(InvalidRequestError):
        range_nodes(3, 2)
    assert consistency_nodes(7, 7) == ProofNodes(())


def test_verification_refuses_sizes_beyond_uint64() -> None:
    leaf = leaf_hash(b"")
    with pytest.raises(ProofError):
        verify_inclusion(leaf, 0, 1 << 64, [leaf] * 64, leaf)
    with pytest.raises(ProofError):
        verify_consistency(1, 1 << 64, [leaf] * 64, leaf, leaf)


def test_root_mismatch_reports_both_roots() -> None:
    proof = SMALL_TREE.inclusion_proof(3, 10)
    wrong = bytes(32)
    with pytest.raises(RootMismatchError) as caught:
        verify_inclusion(SMALL_TREE.leaf_hash(3), 3, 10, proof, wrong)
    assert caught.value.expected == wrong
    assert caught.value.calculated == SMALL_TREE.root(10)


def test_proof_nodes_name_the_ephemeral_node() -> None:
    # Leaf 0 of 5 leaves: siblings 1, [2,4), and [4,5) which is leaf 4 alone.
    assert inclusion_nodes(0, 5).ids == (NodeID(0, 1), NodeID(1, 1), NodeID(0, 4))
    # Leaf 0 of 7 leaves: the right half [4,7) is not perfect, folded from (0,6) and (1,2).
    nodes = inclusion_nodes(0, 7)
    assert nodes.ids == (NodeID(0, 1), NodeID(1, 1), NodeID(0, 6), NodeID(1, 2))
    assert (nodes.ephemeral_begin, nodes.ephemeral_end) == (2, 4)
    with pytest.raises(InvalidRequestError):
        nodes.rehash([b"x" * 32])


def test_proof_reads_only_planned_nodes() -> None:
    reads: list[tuple[int, int]] = []

    def read(level: int, index: int) -> bytes:
        reads.append((level, index))
        return BIG_TREE.node(level, index)

    merkle.inclusion_proof(1234, 2999, read)
    assert reads == [(n.level, n.index) for n in inclusion_nodes(1234, 2999).ids]
    reads.clear()
    merkle.consistency_proof(1000, 2999, read)
    assert reads == [(n.level, n.index) for n in consistency_nodes(1000, 2999).ids]


def test_compact_range_reports_every_stored_node() -> None:
    visited: dict[NodeID, bytes] = {}
    compact = CompactRange()
    for index, leaf in enumerate(SMALL_LEAVES):
        compact.append(leaf_hash(leaf), visited.__setitem__)
        assert compact.root() == SMALL_TREE.root(index + 1)
    assert compact.size == len(SMALL_LEAVES)
    assert visited == {
        NodeID(level, index): SMALL_TREE.node(level, index)
        for level in range(6)
        for index in range(len(SMALL_LEAVES) >> level)
    }
    resumed = CompactRange(compact.size, compact.hashes)
    resumed.append(leaf_hash(b"next"))
    assert resumed.root() == MemoryTree([*SMALL_LEAVES, b"next"]).root()


def test_compact_range_refuses_inconsistent_state() -> None:
    with pytest.raises(InvalidRequestError):
        CompactRange(3, [bytes(32)])
    with pytest.raises(InvalidRequestError):
        CompactRange(1, [b"short"])
    with pytest.raises(InvalidRequestError):
        CompactRange().append(b"short")
    with pytest.raises(InvalidRequestError):
        MemoryTree().append_leaf_hash(b"short")
    with pytest.raises(InvalidRequestError):
        root_from_leaf_hashes([b"short"])
