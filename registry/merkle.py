"""RFC 6962 / RFC 9162 section 2.1 Merkle trees: hashing, proof generation and verification.

Proof generation is split in two steps, like transparency-dev/merkle's ``proof`` package: first the
*plan* (``inclusion_nodes`` / ``consistency_nodes``) names the perfect subtrees whose hashes the
proof is made of, then ``ProofNodes.rehash`` turns their hashes into the proof. A storage layer
can therefore fetch every node of a proof in one batch (or map them to C2SP tiles, see
``registry.tiles``); ``inclusion_proof`` / ``consistency_proof`` do both steps over a callback.
A proof needs at most about 2 * log2(size) node reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

HASH_SIZE: Final = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

MAX_TREE_SIZE: Final = (1 << 64) - 1
"""Largest tree size (and leaf index + 1) accepted: the wire formats carry sizes as uint64."""

_sha256 = hashlib.sha256
_EMPTY_ROOT: Final = _sha256(b"").digest()


class MerkleError(Exception):
    """Base class of every error raised by ``registry.merkle``."""


class InvalidRequestError(MerkleError):
    """Raised when a leaf index or tree size is out of range for the requested operation."""


class MissingNodeError(MerkleError):
    """Raised when a node reader does not hold the requested perfect subtree hash."""


class ProofError(MerkleError):
    """Raised when a proof is malformed or does not fit the claimed leaf index and tree sizes."""


class RootMismatchError(ProofError):
    """Raised when a well-formed proof recomputes a root other than the expected one."""

    def __init__(self, what: str, expected: bytes, calculated: bytes) -> None:
        super().__init__(f"{what} mismatch: got {calculated.hex()}, want {expected.hex()}")
        self.expected = expected
        self.calculated = calculated


@dataclass(frozen=True, slots=True, order=True)
class NodeID:
    """A perfect subtree: the ``index``-th node at ``level`` (leaves are level 0)."""

    level: int
    index: int


NodeReader = Callable[[int, int], bytes]
"""Returns the hash of the perfect subtree at (level, index); raises ``MissingNodeError``."""

NodeVisitor = Callable[[NodeID, bytes], None]
"""Receives every perfect subtree hash a ``CompactRange`` computes while appending."""


def leaf_hash(entry: bytes) -> bytes:
    """Return the RFC 6962 leaf hash SHA-256(0x00 || entry)."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def empty_root() -> bytes:
    """Return the root hash of the empty tree, SHA-256 of the empty string."""
    return _EMPTY_ROOT


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle tree hash (RFC 6962 MTH) of a list of leaf hashes."""
    _check_hashes(leaf_hashes, "leaf hash", InvalidRequestError)
    if not leaf_hashes:
        return _EMPTY_ROOT
    level = list(leaf_hashes)
    # Pairing level by level and promoting an odd last node is RFC 6962's split at the largest
    # power of two, seen bottom-up.
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            paired.append(level[-1])
        level = paired
    return level[0]


def range_nodes(begin: int, end: int) -> list[NodeID]:
    """Return the perfect subtrees that exactly cover leaves [begin, end), left to right."""
    if not 0 <= begin <= end <= MAX_TREE_SIZE:
        raise InvalidRequestError(f"invalid range [{begin}, {end})")
    ids: list[NodeID] = []
    if begin == 0:
        left, right = 0, end
    else:
        # Nodes strictly below the point where the paths to leaves begin-1 and end diverge:
        # zero bits of begin-1 give the left border, one bits of end the right border.
        last_outside = begin - 1
        mask = (1 << ((last_outside ^ end).bit_length() - 1)) - 1
        left, right = ~last_outside & mask, end & mask
    pos = begin
    while left:
        level = (left & -left).bit_length() - 1
        ids.append(NodeID(level, pos >> level))
        pos += 1 << level
        left &= left - 1
    while right:
        level = right.bit_length() - 1
        ids.append(NodeID(level, pos >> level))
        pos += 1 << level
        right ^= 1 << level
    return ids


def tree_root(size: int, read_node: NodeReader) -> bytes:
    """Return the root hash of the tree of ``size`` leaves from its perfect subtrees."""
    ids = range_nodes(0, size)
    if not ids:
        return _EMPTY_ROOT
    root = read_node(ids[-1].level, ids[-1].index)
    for i in range(len(ids) - 2, -1, -1):
        root = node_hash(read_node(ids[i].level, ids[i].index), root)
    return root


@dataclass(frozen=True, slots=True)
class ProofNodes:
    """The perfect subtrees a proof is made of, in proof order.

    ``ids[ephemeral_begin:ephemeral_end]`` (possibly empty) cover one node that is not a perfect
    subtree in the tree: its hash is folded from them, lowest level (rightmost) first.
    """

    ids: tuple[NodeID, ...]
    ephemeral_begin: int = 0
    ephemeral_end: int = 0

    def rehash(self, hashes: Sequence[bytes]) -> list[bytes]:
        """Return the proof, given the hashes of ``ids`` in the same order."""
        if len(hashes) != len(self.ids):
            raise InvalidRequestError(f"got {len(hashes)} hashes for {len(self.ids)} nodes")
        begin, end = self.ephemeral_begin, self.ephemeral_end
        if end - begin < 2:
            return list(hashes)
        ephemeral = hashes[begin]
        for i in range(begin + 1, end):
            ephemeral = node_hash(hashes[i], ephemeral)
        proof = list(hashes[:begin])
        proof.append(ephemeral)
        proof.extend(hashes[end:])
        return proof


def inclusion_nodes(index: int, size: int) -> ProofNodes:
    """Return the nodes of the inclusion proof for leaf ``index`` in a tree of ``size`` leaves."""
    _check_tree_size(size)
    if not 0 <= index < size:
        raise InvalidRequestError(f"leaf index {index} out of range for tree size {size}")
    ids: list[NodeID] = []
    begin, end = _append_path(ids, 0, index, size)
    return ProofNodes(tuple(ids), begin, end)


def consistency_nodes(size1: int, size2: int) -> ProofNodes:
    """Return the nodes of the consistency proof from tree size ``size1`` to ``size2``."""
    _check_tree_size(size2)
    if not 0 < size1 <= size2:
        raise InvalidRequestError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        return ProofNodes(())
    # The proof is the inclusion path, in tree size2, of the largest perfect subtree that ends
    # tree size1, preceded by that subtree unless it is tree size1 itself (the verifier has it).
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    ids: list[NodeID] = []
    if size1 != 1 << level:
        ids.append(NodeID(level, index))
    begin, end = _append_path(ids, level, index, size2)
    return ProofNodes(tuple(ids), begin, end)


def inclusion_proof(index: int, size: int, read_node: NodeReader) -> list[bytes]:
    """Return the inclusion proof for leaf ``index`` in the tree of ``size`` leaves."""
    nodes = inclusion_nodes(index, size)
    return nodes.rehash([read_node(node.level, node.index) for node in nodes.ids])


def consistency_proof(size1: int, size2: int, read_node: NodeReader) -> list[bytes]:
    """Return the consistency proof from tree size ``size1`` to tree size ``size2``."""
    nodes = consistency_nodes(size1, size2)
    return nodes.rehash([read_node(node.level, node.index) for node in nodes.ids])


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Return the root ``proof`` yields for ``leaf_hash`` at ``index`` in a tree of ``size``."""
    _check_proof_size(size)
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} out of range for tree size {size}")
    if len(leaf_hash) != HASH_SIZE:
        raise ProofError(f"leaf hash is {len(leaf_hash)} bytes, want {HASH_SIZE}")
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    if len(proof) != inner + border:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, want {inner + border}")
    _check_hashes(proof, "proof hash", ProofError)
    root = leaf_hash
    for i in range(inner):
        root = node_hash(proof[i], root) if (index >> i) & 1 else node_hash(root, proof[i])
    for i in range(inner, len(proof)):
        root = node_hash(proof[i], root)
    return root


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``proof`` proves ``leaf_hash`` at ``index`` in the tree (size, root)."""
    calculated = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if calculated != root:
        raise RootMismatchError("root", root, calculated)


def root_from_consistency_proof(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> bytes:
    """Check ``proof`` against ``root1`` and return the root it yields for tree size ``size2``."""
    _check_proof_size(size2)
    if size1 == 0:
        # The empty tree is a prefix of every tree: there is nothing to prove, and accepting a
        # "proof" for it would only hide a caller's mistake.
        raise ProofError("consistency proof from the empty tree is meaningless")
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        return root1
    if not proof:
        raise ProofError("empty consistency proof")
    if len(root1) != HASH_SIZE:
        raise ProofError(f"root1 is {len(root1)} bytes, want {HASH_SIZE}")

    # The proof is the tail of the inclusion path of leaf size1-1 in tree size2, starting at the
    # level of the largest perfect subtree that ends tree size1.
    inner = ((size1 - 1) ^ (size2 - 1)).bit_length()
    border = ((size1 - 1) >> inner).bit_count()
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    if size1 == 1 << shift:
        seed, start = root1, 0
    else:
        seed, start = proof[0], 1
    want = start + inner + border
    if len(proof) != want:
        raise ProofError(f"consistency proof has {len(proof)} hashes, want {want}")
    _check_hashes(proof, "proof hash", ProofError)

    mask = (size1 - 1) >> shift
    hash1 = hash2 = seed
    for i in range(inner):
        sibling = proof[start + i]
        if (mask >> i) & 1:
            hash1 = node_hash(sibling, hash1)
            hash2 = node_hash(sibling, hash2)
        else:
            # Right siblings did not exist yet in tree size1: only tree size2 includes them.
            hash2 = node_hash(hash2, sibling)
    for i in range(start + inner, len(proof)):
        hash1 = node_hash(proof[i], hash1)
        hash2 = node_hash(proof[i], hash2)
    if hash1 != root1:
        raise RootMismatchError("root1", root1, hash1)
    return hash2


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that ``proof`` proves tree (size1, root1) is a prefix of tree (size2, root2)."""
    calculated = root_from_consistency_proof(size1, size2, proof, root1)
    if calculated != root2:
        raise RootMismatchError("root2", root2, calculated)


class CompactRange:
    """The right border of the tree [0, size): enough to append leaves and compute the root.

    A log writer keeps one of these instead of the whole tree; ``append`` reports every perfect
    subtree it completes, which is exactly what a tile store has to persist.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        """Resume from the hashes of ``range_nodes(0, size)``, left to right."""
        _check_tree_size(size)
        border = list(hashes)
        if len(border) != size.bit_count():
            raise InvalidRequestError(f"size {size} needs {size.bit_count()} border hashes")
        _check_hashes(border, "border hash", InvalidRequestError)
        self._size = size
        self._hashes = border

    @classmethod
    def from_reader(cls, size: int, read_node: NodeReader) -> CompactRange:
        """Load the border of the tree of ``size`` leaves from stored nodes."""
        return cls(size, [read_node(node.level, node.index) for node in range_nodes(0, size)])

    @property
    def size(self) -> int:
        """Number of leaves covered."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Hashes of ``range_nodes(0, size)``, left to right."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes, visit: NodeVisitor | None = None) -> None:
        """Append one leaf hash, calling ``visit`` for the leaf and each subtree it completes."""
        if len(leaf_hash) != HASH_SIZE:
            raise InvalidRequestError(f"leaf hash is {len(leaf_hash)} bytes, want {HASH_SIZE}")
        if self._size >= MAX_TREE_SIZE:
            raise InvalidRequestError("tree is full")
        index, level, node = self._size, 0, leaf_hash
        if visit is not None:
            visit(NodeID(0, index), node)
        while index & 1:
            node = node_hash(self._hashes.pop(), node)
            index >>= 1
            level += 1
            if visit is not None:
                visit(NodeID(level, index), node)
        self._hashes.append(node)
        self._size += 1

    def root(self) -> bytes:
        """Return the root hash of the tree [0, size)."""
        if not self._hashes:
            return _EMPTY_ROOT
        root = self._hashes[-1]
        for i in range(len(self._hashes) - 2, -1, -1):
            root = node_hash(self._hashes[i], root)
        return root


class MemoryTree:
    """An in-memory log that keeps every perfect subtree hash; its ``node`` is a ``NodeReader``."""

    __slots__ = ("_levels",)

    def __init__(self, entries: Iterable[bytes] = ()) -> None:
        """Create a tree holding ``entries`` in order."""
        # _levels[level][index] is the hash of perfect subtree (level, index).
        self._levels: list[list[bytes]] = [[]]
        for entry in entries:
            self.append(entry)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def append(self, entry: bytes) -> int:
        """Append a log entry and return its leaf index."""
        return self.append_leaf_hash(leaf_hash(entry))

    def append_leaf_hash(self, leaf_hash: bytes) -> int:
        """Append an already hashed leaf and return its leaf index."""
        if len(leaf_hash) != HASH_SIZE:
            raise InvalidRequestError(f"leaf hash is {len(leaf_hash)} bytes, want {HASH_SIZE}")
        levels = self._levels
        leaf_index = index = len(levels[0])
        levels[0].append(leaf_hash)
        level, node = 0, leaf_hash
        while index & 1:
            node = node_hash(levels[level][index - 1], node)
            index >>= 1
            level += 1
            if level == len(levels):
                levels.append([])
            levels[level].append(node)
        return leaf_index

    def node(self, level: int, index: int) -> bytes:
        """Return the hash of perfect subtree (level, index)."""
        levels = self._levels
        # Checked explicitly: Python lists would silently accept negative indices.
        if 0 <= level < len(levels) and 0 <= index < len(levels[level]):
            return levels[level][index]
        raise MissingNodeError(f"no perfect subtree at level {level}, index {index}")

    def leaf_hash(self, index: int) -> bytes:
        """Return the hash of leaf ``index``."""
        return self.node(0, index)

    def root(self, size: int | None = None) -> bytes:
        """Return the root hash at ``size`` (default: the current size)."""
        return tree_root(self._size_or_current(size), self.node)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Return the inclusion proof for leaf ``index`` at ``size`` (default: current size)."""
        return inclusion_proof(index, self._size_or_current(size), self.node)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Return the consistency proof from ``size1`` to ``size2`` (default: current size)."""
        return consistency_proof(size1, self._size_or_current(size2), self.node)

    def _size_or_current(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise InvalidRequestError(f"tree size {size} beyond current size {self.size}")
        return size


def _append_path(ids: list[NodeID], level: int, index: int, size: int) -> tuple[int, int]:
    """Append the siblings on the path from node (level, index) up to the root of tree ``size``.

    Returns the bounds, within ``ids``, of the nodes that make up the ephemeral sibling.
    """
    begin = end = 0
    while index or (1 << level) < size:
        sibling = index ^ 1
        start = sibling << level
        if start < size:
            if start + (1 << level) <= size:
                ids.append(NodeID(level, sibling))
            else:
                # A right sibling cut off by the tree's edge: cover [start, size) with perfect
                # subtrees, lowest (rightmost) first, as ProofNodes.rehash folds them.
                begin = len(ids)
                remaining, pos = size - start, size
                while remaining:
                    low = (remaining & -remaining).bit_length() - 1
                    pos -= 1 << low
                    ids.append(NodeID(low, pos >> low))
                    remaining &= remaining - 1
                end = len(ids)
        index >>= 1
        level += 1
    return begin, end


def _check_tree_size(size: int) -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise InvalidRequestError(f"tree size {size} out of range")


def _check_proof_size(size: int) -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise ProofError(f"tree size {size} out of range")


def _check_hashes(hashes: Iterable[bytes], what: str, error: type[MerkleError]) -> None:
    for value in hashes:
        if len(value) != HASH_SIZE:
            raise error(f"{what} is {len(value)} bytes, want {HASH_SIZE}")
