"""gRPC servicer of realname.v1.LogService: translate requests, read the log, translate back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import grpc
from sqlalchemy import Connection

from registry.checkpoint import parse_checkpoint
from registry.log.entries import EntryKind
from registry.log.errors import (
    InvalidRangeError,
    LeafNotFoundError,
    NoCheckpointError,
    TreeSizeError,
)
from registry.log.storage import StoredCheckpoint
from registry.merkle import HASH_SIZE
from services.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
    Violations,
)
from services.domain.principal import Role
from services.features.transparency import TransparencyLog
from services.proto.realname.v1 import log_pb2 as lpb
from services.proto.realname.v1 import log_pb2_grpc as lgrpc
from services.rpc.server import ServiceBinding

LOG_SERVICE = lpb.DESCRIPTOR.services_by_name["LogService"].full_name

T = TypeVar("T")


def log_binding(transparency: TransparencyLog) -> ServiceBinding:
    """The LogService binding: every authenticated role may read the log."""

    def add(server: grpc.Server) -> None:
        lgrpc.add_LogServiceServicer_to_server(LogServicer(transparency), server)

    return ServiceBinding(
        LOG_SERVICE,
        add,
        {LOG_SERVICE: frozenset(Role)},
        subscriber_data=frozenset(),
        no_subscriber_data=frozenset(
            {"GetCheckpoint", "GetInclusionProof", "GetConsistencyProof", "GetEntries"}
        ),
    )


def checkpoint_message(stored: StoredCheckpoint) -> lpb.Checkpoint:
    """The Checkpoint message for a stored checkpoint, cosignatures included."""
    note = stored.signed_note()
    body = parse_checkpoint(note[: note.index(b"\n\n") + 1].decode())
    return lpb.Checkpoint(
        note=note, origin=body.origin, tree_size=stored.size, root_hash=stored.root
    )


@contextmanager
def _log_errors(size_field: str) -> Iterator[None]:
    """Maps the log library's errors to domain errors (the interceptor maps those to status)."""
    try:
        yield
    except InvalidRangeError as error:
        raise InvalidArgument([FieldViolation(size_field, str(error))]) from error
    except TreeSizeError as error:
        raise FailedPrecondition(
            str(error),
            reason="BEYOND_TREE_SIZE",
            metadata={"requested": str(error.requested), "available": str(error.available)},
        ) from error
    except LeafNotFoundError as error:
        raise NotFound(str(error), reason="LEAF_NOT_FOUND") from error
    except NoCheckpointError as error:
        raise Unavailable(str(error), reason="NO_CHECKPOINT") from error


class LogServicer(lgrpc.LogServiceServicer):
    """Exposes the log's reader to every authenticated caller."""

    def __init__(self, transparency: TransparencyLog) -> None:
        self._log = transparency

    def _read(self, work: Callable[[Connection], T]) -> T:
        return self._log.db.read(work)

    def GetCheckpoint(
        self, request: lpb.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> lpb.GetCheckpointResponse:
        """Returns the newest checkpoint."""
        with _log_errors("tree_size"):
            stored = self._read(self._log.reader.latest_checkpoint)
        return lpb.GetCheckpointResponse(checkpoint=checkpoint_message(stored))

    def GetInclusionProof(
        self, request: lpb.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> lpb.GetInclusionProofResponse:
        """Proves an entry's inclusion, by index or leaf hash."""
        v = Violations()
        which = request.WhichOneof("leaf")
        if which is None:
            v.add("leaf", "set leaf_index or leaf_hash")
        elif which == "leaf_hash" and len(request.leaf_hash) != HASH_SIZE:
            v.add("leaf_hash", f"must be {HASH_SIZE} bytes")
        v.raise_if_any()
        size = request.tree_size or None
        reader = self._log.reader

        def work(conn: Connection) -> tuple[lpb.GetInclusionProofResponse, StoredCheckpoint | None]:
            if which == "leaf_hash":
                proof = reader.inclusion_proof_for_leaf_hash(conn, request.leaf_hash, size)
            else:
                proof = reader.inclusion_proof(conn, request.leaf_index, size)
            response = lpb.GetInclusionProofResponse(
                leaf_index=proof.leaf_index, tree_size=proof.tree_size, hashes=proof.hashes
            )
            return response, reader.checkpoint_at(conn, proof.tree_size)

        with _log_errors("tree_size" if which == "leaf_hash" else "leaf_index"):
            response, stored = self._read(work)
        if stored is not None:
            response.checkpoint.CopyFrom(checkpoint_message(stored))
        return response

    def GetConsistencyProof(
        self, request: lpb.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> lpb.GetConsistencyProofResponse:
        """Proves that one tree size is a prefix of another."""
        size = request.second_tree_size or None
        reader = self._log.reader

        def work(
            conn: Connection,
        ) -> tuple[lpb.GetConsistencyProofResponse, StoredCheckpoint | None]:
            proof = reader.consistency_proof(conn, request.first_tree_size, size)
            response = lpb.GetConsistencyProofResponse(
                first_tree_size=proof.first_size,
                second_tree_size=proof.second_size,
                hashes=proof.hashes,
            )
            return response, reader.checkpoint_at(conn, proof.second_size)

        with _log_errors("first_tree_size"):
            response, stored = self._read(work)
        if stored is not None:
            response.checkpoint.CopyFrom(checkpoint_message(stored))
        return response

    def GetEntries(
        self, request: lpb.GetEntriesRequest, context: grpc.ServicerContext
    ) -> lpb.GetEntriesResponse:
        """Returns up to 1,000 consecutive entries."""
        reader = self._log.reader
        with _log_errors("end"):
            rows = self._read(lambda conn: reader.entries(conn, request.start, request.end))
        return lpb.GetEntriesResponse(
            entries=[
                lpb.LogEntry(leaf_index=index, data=data, kind=_kind(data)) for index, data in rows
            ]
        )


_KINDS = frozenset(kind.value for kind in EntryKind)


def _kind(data: bytes) -> lpb.LogEntryKind.ValueType:
    # The kind byte follows the version byte; an unknown kind stays UNSPECIFIED.
    if len(data) > 1 and data[1] in _KINDS:
        return lpb.LogEntryKind.ValueType(data[1])
    return lpb.LOG_ENTRY_KIND_UNSPECIFIED
