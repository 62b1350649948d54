"""Errors of the transparency log library: one base class, one subclass per cause."""

from __future__ import annotations


class LogError(Exception):
    """Base class of every error raised by ``registry.log``."""


class MalformedEntryError(LogError):
    """Raised when log entry bytes or fields are not exactly as the entry encoding specifies."""


class EntryTooLargeError(MalformedEntryError):
    """Raised when an encoded entry would not fit an entry bundle (65,535 bytes)."""


class TreeSizeError(LogError):
    """Raised when a tree size or leaf index lies beyond what the log has published."""

    def __init__(self, message: str, *, requested: int, available: int) -> None:
        super().__init__(message)
        self.requested = requested
        self.available = available


class InvalidRangeError(LogError):
    """Raised when a leaf index, range or pair of tree sizes is invalid whatever the log holds."""


class LeafNotFoundError(LogError):
    """Raised when no sequenced entry has the given leaf hash (within the given tree size)."""


class LogCorruptedError(LogError):
    """Raised when stored log data contradicts itself (a missing tile, a bad entry, a fork)."""


class SequencerConflictError(LogError):
    """Raised when another sequencer extended the tree first; the batch can simply be retried."""


class LogKeyError(LogError):
    """Raised when the log's key file is unreadable, malformed or names another origin."""


class CosignatureRejectedError(LogError):
    """Raised when a submitted cosignature is malformed, unverifiable or for another checkpoint."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NoCheckpointError(LogError):
    """Raised when the log has not signed any checkpoint yet (its sequencer never ran)."""


class FetchError(LogError):
    """Raised when a log's read API cannot be reached or answers other than 200 or 404."""


class InconsistencyError(LogError):
    """Raised when a log contradicts itself: bad signature, fork, rollback, or wrong contents.

    ``evidence`` holds what a third party needs to see it too (e.g. both checkpoints of a fork).
    """

    def __init__(self, message: str, *, evidence: str = "") -> None:
        super().__init__(message)
        self.evidence = evidence
