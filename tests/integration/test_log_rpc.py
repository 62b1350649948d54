"""realname.v1.LogService over mTLS gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from registry.checkpoint import open_checkpoint
from registry.log.entries import EntryKind, decode_entry, encode_entry
from registry.log.storage import append_entries
from registry.merkle import MemoryTree, leaf_hash, verify_consistency, verify_inclusion
from services.domain.pseudonym import Pseudonymizer
from services.features.transparency import TransparencyLog
from services.proto.realname.v1 import log_pb2 as lpb
from services.proto.realname.v1 import log_pb2_grpc as lgrpc
from services.runtime.devpki import DEV_PRINCIPALS
from services.storage.database import Database
from tests.support.logdata import ORIGIN, audit, issuance, log_signer, revocation
from tests.support.rpc import rich_error
from tests.support.server import GrpcHarness, start_harness

SIGNER = log_signer()


@pytest.fixture
def transparency(db: Database) -> TransparencyLog:
    return TransparencyLog.create(db, SIGNER)


@pytest.fixture
def harness(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, transparency: TransparencyLog
) -> Iterator[GrpcHarness]:
    running = start_harness(db, pki_dir, pseudonymizer, log=transparency)
    yield running
    running.close()


@pytest.fixture
def tree(transparency: TransparencyLog) -> MemoryTree:
    entries = [audit(i) for i in range(300)] + [issuance(1), revocation(1)]
    transparency.db.write(lambda conn: append_entries(conn, entries[:100]))
    transparency.sequencer.integrate_now()
    transparency.db.write(lambda conn: append_entries(conn, entries[100:]))
    transparency.sequencer.integrate_now()
    return MemoryTree(encode_entry(e) for e in entries)


def test_every_role_reads_the_checkpoint(harness: GrpcHarness, tree: MemoryTree) -> None:
    for principal in DEV_PRINCIPALS:
        reply = harness.log_service(principal).GetCheckpoint(lpb.GetCheckpointRequest())
        checkpoint = reply.checkpoint
        assert (checkpoint.origin, checkpoint.tree_size) == (ORIGIN, tree.size)
        assert checkpoint.root_hash == tree.root()
        opened = open_checkpoint(checkpoint.note, origin=ORIGIN, log_verifier=SIGNER.verifier())
        assert opened.checkpoint.root_hash == tree.root()


def test_inclusion_proofs_by_index_and_by_leaf_hash(harness: GrpcHarness, tree: MemoryTree) -> None:
    stub = harness.log_service()
    latest = stub.GetInclusionProof(lpb.GetInclusionProofRequest(leaf_index=300))
    assert (latest.leaf_index, latest.tree_size) == (300, tree.size)
    verify_inclusion(tree.leaf_hash(300), 300, tree.size, latest.hashes, tree.root())
    assert latest.checkpoint.tree_size == tree.size and latest.checkpoint.note

    older = stub.GetInclusionProof(lpb.GetInclusionProofRequest(leaf_index=3, tree_size=100))
    verify_inclusion(tree.leaf_hash(3), 3, 100, older.hashes, tree.root(100))
    assert older.checkpoint.tree_size == 100
    unsigned_size = stub.GetInclusionProof(lpb.GetInclusionProofRequest(leaf_index=3, tree_size=7))
    assert not unsigned_size.HasField("checkpoint")
    verify_inclusion(tree.leaf_hash(3), 3, 7, unsigned_size.hashes, tree.root(7))

    by_hash = stub.GetInclusionProof(
        lpb.GetInclusionProofRequest(leaf_hash=leaf_hash(issuance(1).encode()))
    )
    assert by_hash.leaf_index == 300 and list(by_hash.hashes) == list(latest.hashes)


def test_consistency_proofs(harness: GrpcHarness, tree: MemoryTree) -> None:
    stub = harness.log_service("courier-demo")
    reply = stub.GetConsistencyProof(lpb.GetConsistencyProofRequest(first_tree_size=100))
    assert (reply.first_tree_size, reply.second_tree_size) == (100, tree.size)
    verify_consistency(100, tree.size, reply.hashes, tree.root(100), tree.root())
    assert reply.checkpoint.tree_size == tree.size
    between = stub.GetConsistencyProof(
        lpb.GetConsistencyProofRequest(first_tree_size=5, second_tree_size=100)
    )
    verify_consistency(5, 100, between.hashes, tree.root(5), tree.root(100))
    same = stub.GetConsistencyProof(
        lpb.GetConsistencyProofRequest(first_tree_size=100, second_tree_size=100)
    )
    assert list(same.hashes) == []


def test_entries_come_with_their_kind_and_are_capped(
    harness: GrpcHarness, tree: MemoryTree
) -> None:
    stub = harness.log_service("regulator")
    reply = stub.GetEntries(lpb.GetEntriesRequest(start=298, end=400))
    assert [e.leaf_index for e in reply.entries] == [298, 299, 300, 301]
    assert [e.kind for e in reply.entries] == [
        lpb.LOG_ENTRY_KIND_AUDIT_DIGEST,
        lpb.LOG_ENTRY_KIND_AUDIT_DIGEST,
        lpb.LOG_ENTRY_KIND_ISSUANCE,
        lpb.LOG_ENTRY_KIND_REVOCATION,
    ]
    assert decode_entry(reply.entries[2].data).kind is EntryKind.ISSUANCE
    assert [leaf_hash(e.data) for e in reply.entries] == [
        tree.leaf_hash(i) for i in range(298, 302)
    ]
    many = stub.GetEntries(lpb.GetEntriesRequest(start=0, end=5000))
    assert len(many.entries) == tree.size  # below the 1,000 cap here


@pytest.mark.parametrize(
    ("method", "request_", "code", "reason"),
    [
        (
            "GetInclusionProof",
            lpb.GetInclusionProofRequest(),
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        ),
        (
            "GetInclusionProof",
            lpb.GetInclusionProofRequest(leaf_hash=b"short"),
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        ),
        (
            "GetInclusionProof",
            lpb.GetInclusionProofRequest(leaf_index=500),
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        ),
        (
            "GetInclusionProof",
            lpb.GetInclusionProofRequest(leaf_index=1, tree_size=303),
            "FAILED_PRECONDITION",
            "BEYOND_TREE_SIZE",
        ),
        (
            "GetInclusionProof",
            lpb.GetInclusionProofRequest(leaf_hash=b"\x00" * 32),
            "NOT_FOUND",
            "LEAF_NOT_FOUND",
        ),
        (
            "GetConsistencyProof",
            lpb.GetConsistencyProofRequest(first_tree_size=0),
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        ),
        (
            "GetConsistencyProof",
            lpb.GetConsistencyProofRequest(first_tree_size=5, second_tree_size=900),
            "FAILED_PRECONDITION",
            "BEYOND_TREE_SIZE",
        ),
        (
            "GetEntries",
            lpb.GetEntriesRequest(start=5, end=5),
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        ),
        (
            "GetEntries",
            lpb.GetEntriesRequest(start=302, end=310),
            "FAILED_PRECONDITION",
            "BEYOND_TREE_SIZE",
        ),
    ],
)
def test_bad_requests_get_rich_errors(
    harness: GrpcHarness, tree: MemoryTree, method: str, request_: object, code: str, reason: str
) -> None:
    stub: lgrpc.LogServiceStub = harness.log_service()
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, method)(request_)
    error = rich_error(caught.value)
    assert (error.code.name, error.reason, error.domain) == (code, reason, "realname")


def test_an_empty_log_answers_unavailable_until_its_first_checkpoint(
    harness: GrpcHarness, transparency: TransparencyLog
) -> None:
    stub = harness.log_service()
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetCheckpoint(lpb.GetCheckpointRequest())
    assert rich_error(caught.value).reason == "NO_CHECKPOINT"
    transparency.sequencer.integrate_now()
    assert stub.GetCheckpoint(lpb.GetCheckpointRequest()).checkpoint.tree_size == 0
