"""Monitoring a log: follow its checkpoints, check every entry, and report watched events.

A monitor keeps, between runs, the last checkpoint it verified and the compact range (right
border) of that tree. Each run it:

1. verifies the new checkpoint's signature by the log key (and, if asked, k of n witnesses);
2. refuses a smaller tree (rollback) or a different root at the same size (fork), and checks a
   consistency proof, built from the tiles, from the old checkpoint to the new one;
3. fetches every new entry, checks its leaf hash against the level-0 tile, checks that an
   issuance's summary fields say what its certificate says, and appends it to the compact range;
4. requires the compact range's root to equal the new checkpoint's root, so the entries it was
   shown are exactly the tree the log signed;
5. reports entries about watched stores and operators.

Any contradiction raises ``InconsistencyError`` with the evidence; nothing is saved then.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from registry.checkpoint import CheckpointError, SignedCheckpoint, open_checkpoint
from registry.log.client import TileClient
from registry.log.entries import (
    AuditDigest,
    Entry,
    Issuance,
    OperatorCaAdded,
    OperatorCaRevoked,
    OperatorCaRotated,
    Renewal,
    Revocation,
    decode_entry,
    operator_of,
    store_of,
    store_of_certificate,
)
from registry.log.errors import InconsistencyError, LogError, MalformedEntryError
from registry.merkle import CompactRange, MerkleError, leaf_hash, verify_consistency
from registry.note import NoteError, Verifier, WitnessPolicy
from registry.tiles import TILE_WIDTH, EntryBundle, Tile

_STATE_VERSION = 1


class MonitorStateError(LogError):
    """Raised when a monitor state file is unreadable or belongs to another log."""


@dataclass(frozen=True, slots=True)
class MonitorState:
    """What a monitor remembers: the last verified checkpoint and its tree's compact range."""

    origin: str
    size: int
    root: bytes
    edge: tuple[bytes, ...]
    checkpoint: str
    """The last verified checkpoint note, kept as evidence should the log later fork."""

    def to_json(self) -> str:
        """Serialise the state."""
        return json.dumps(
            {
                "version": _STATE_VERSION,
                "origin": self.origin,
                "size": self.size,
                "root": _b64(self.root),
                "edge": [_b64(value) for value in self.edge],
                "checkpoint": self.checkpoint,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> MonitorState:
        """Parse a serialised state, checking that its compact range fits its tree."""
        try:
            data = json.loads(text)
            if data.get("version") != _STATE_VERSION:
                raise MonitorStateError(f"unknown monitor state version {data.get('version')}")
            state = cls(
                str(data["origin"]),
                int(data["size"]),
                base64.b64decode(data["root"], validate=True),
                tuple(base64.b64decode(value, validate=True) for value in data["edge"]),
                str(data["checkpoint"]),
            )
            if CompactRange(state.size, state.edge).root() != state.root:
                raise MonitorStateError("monitor state's compact range does not match its root")
        except (ValueError, KeyError, TypeError, binascii.Error, MerkleError) as error:
            raise MonitorStateError(f"malformed monitor state: {error}") from error
        return state

    def save(self, path: Path) -> None:
        """Write the state atomically (a crash leaves the old state or the new one)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                out.write(self.to_json())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> MonitorState | None:
        """Read the state at ``path``, or None if there is no file yet."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise MonitorStateError(f"cannot read monitor state {path}: {error}") from error
        return cls.from_json(text)


@dataclass(frozen=True)
class Watch:
    """What to report: stores by ``marketplace/shop_id`` or credit code, and operators."""

    shops: frozenset[str] = frozenset()
    credit_codes: frozenset[str] = frozenset()
    operators: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, stores: Iterable[str] = (), operators: Iterable[str] = ()) -> Watch:
        """Build a watch list; a store with a '/' is a shop, otherwise a credit code."""
        shops, codes = set(), set()
        for value in stores:
            if "/" in value:
                shops.add(value.strip())
            else:
                codes.add(value.strip().upper())
        return cls(frozenset(shops), frozenset(codes), frozenset(o.strip() for o in operators))

    def matches(self, entry: Entry) -> bool:
        """Whether ``entry`` concerns a watched store or operator."""
        store = store_of(entry)
        if store is not None and (
            store.shop in self.shops or store.credit_code in self.credit_codes
        ):
            return True
        return operator_of(entry) in self.operators


@dataclass(frozen=True, slots=True)
class Event:
    """A watched entry: its index in the log and its contents."""

    index: int
    entry: Entry

    def describe(self) -> str:
        """One line for a person: what happened, to whom, when, at which log index."""
        entry = self.entry
        when = entry.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        parts = [f"index={self.index}", f"kind={entry.kind.name.lower()}", f"time={when}"]
        store = store_of(entry)
        if store is not None:
            parts += [
                f"operator={store.operator}",
                f"store={store.shop}",
                f"credit_code={store.credit_code}",
            ]
        elif (operator := operator_of(entry)) is not None:
            parts.append(f"operator={operator}")
        if isinstance(entry, Issuance | Renewal | Revocation):
            parts.append(f"serial={entry.serial:x}")
        if isinstance(entry, Renewal):
            parts.append(f"previous_serial={entry.previous_serial:x}")
        if isinstance(entry, Revocation | OperatorCaRevoked):
            parts.append(f"reason={entry.reason}")
        if isinstance(entry, OperatorCaRotated):
            parts.append(f"previous_ca_sha256={entry.previous_sha256.hex()}")
        if isinstance(entry, OperatorCaAdded | OperatorCaRotated | OperatorCaRevoked):
            parts.append(f"certificate_bytes={len(entry.certificate)}")
        if isinstance(entry, AuditDigest):
            parts += [f"label={entry.label}", f"digest={entry.digest.hex()}"]
        return " ".join(parts)


@dataclass
class MonitorReport:
    """What one monitoring run verified and found."""

    previous_size: int
    size: int
    root: bytes
    entries_checked: int = 0
    events: list[Event] = field(default_factory=list)
    checked_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


class Monitor:
    """Follows one log through a ``TileClient`` and checks it (see the module docstring)."""

    def __init__(
        self,
        client: TileClient,
        *,
        origin: str,
        log_verifier: Verifier,
        witness_policy: WitnessPolicy | None = None,
        watch: Watch | None = None,
    ) -> None:
        """Monitor log ``origin`` whose checkpoints ``log_verifier`` checks."""
        self._client = client
        self._origin = origin
        self._verifier = log_verifier
        self._policy = witness_policy
        self._watch = watch or Watch()

    def verified_checkpoint(self) -> tuple[bytes, SignedCheckpoint]:
        """Fetch the log's checkpoint; return it as served and verified (signatures, policy)."""
        note = self._client.checkpoint()
        try:
            signed = open_checkpoint(
                note, origin=self._origin, log_verifier=self._verifier, witness_policy=self._policy
            )
        except (NoteError, CheckpointError) as error:
            raise InconsistencyError(
                f"checkpoint rejected: {error}", evidence=note.decode("utf-8", "replace")
            ) from error
        return note, signed

    def check(
        self,
        state: MonitorState | None,
        *,
        recheck_all: bool = False,
        on_event: Callable[[Event], None] | None = None,
    ) -> tuple[MonitorReport, MonitorState]:
        """Run once from ``state`` (None: from the empty tree); return the report and new state.

        ``recheck_all`` fetches and checks every entry from index 0 again, not only new ones,
        and requires the old entries to hash to the previously verified root.
        """
        if state is not None and state.origin != self._origin:
            raise MonitorStateError(f"state is for log {state.origin!r}, not {self._origin!r}")
        raw, signed = self.verified_checkpoint()
        checkpoint = signed.checkpoint
        note = raw.decode("utf-8")
        expected: tuple[int, bytes] | None = None
        if state is None:
            start, edge = 0, CompactRange()
        else:
            self._check_against_state(state, checkpoint.size, checkpoint.root_hash, note)
            if recheck_all:
                start, edge = 0, CompactRange()
                expected = (state.size, state.root)
            else:
                start, edge = state.size, CompactRange(state.size, state.edge)
        report = MonitorReport(
            state.size if state is not None else 0, checkpoint.size, checkpoint.root_hash
        )
        walk = _Walk(start, edge, report, expected, on_event)
        for bundle_index in range(start // TILE_WIDTH, -(-checkpoint.size // TILE_WIDTH)):
            self._check_bundle(bundle_index, checkpoint.size, walk)
        if edge.size != checkpoint.size or edge.root() != checkpoint.root_hash:
            raise InconsistencyError(
                f"the entries served hash to root {_b64(edge.root())} at size {edge.size}, "
                f"but the checkpoint says {_b64(checkpoint.root_hash)} at {checkpoint.size}",
                evidence=note,
            )
        new_state = MonitorState(
            self._origin, checkpoint.size, checkpoint.root_hash, edge.hashes, note
        )
        return report, new_state

    def _check_against_state(self, state: MonitorState, size: int, root: bytes, note: str) -> None:
        evidence = f"previously verified:\n{state.checkpoint}\nnow served:\n{note}"
        if size < state.size:
            raise InconsistencyError(
                f"the log shrank from {state.size} to {size} entries (rollback)", evidence=evidence
            )
        if size == state.size:
            if root != state.root:
                raise InconsistencyError(
                    f"two different roots signed for tree size {size} (fork)", evidence=evidence
                )
            return
        if state.size == 0:
            return
        proof = self._client.consistency_proof(state.size, size)
        try:
            verify_consistency(state.size, size, proof, state.root, root)
        except MerkleError as error:
            raise InconsistencyError(
                f"tree {size} is not an extension of tree {state.size} (fork): {error}",
                evidence=evidence,
            ) from error

    def _check_bundle(self, bundle_index: int, size: int, walk: _Walk) -> None:
        width = min(TILE_WIDTH, size - bundle_index * TILE_WIDTH)
        bundle = EntryBundle(bundle_index, width)
        tile = Tile(0, bundle_index, width)
        entries = self._client.entries(bundle)
        hashes = self._client.tile_hashes(tile)
        first = bundle.first_entry_index
        edge = walk.edge
        for offset, data in enumerate(entries):
            index = first + offset
            if index < walk.start:
                continue
            value = leaf_hash(data)
            if value != hashes[offset]:
                raise InconsistencyError(
                    f"entry {index} does not hash to its leaf in {tile.path()} (changed entry)",
                    evidence=f"entry {index}: {base64.b64encode(data).decode()}",
                )
            edge.append(value)
            expected = walk.expected
            if expected is not None and edge.size == expected[0] and edge.root() != expected[1]:
                raise InconsistencyError(
                    f"entries [0, {edge.size}) no longer hash to the root verified before"
                )
            walk.report.entries_checked += 1
            entry = _decode_checked(index, data)
            if self._watch.matches(entry):
                event = Event(index, entry)
                walk.report.events.append(event)
                if walk.on_event is not None:
                    walk.on_event(event)


@dataclass
class _Walk:
    """The running state of one pass over the entries."""

    start: int
    edge: CompactRange
    report: MonitorReport
    expected: tuple[int, bytes] | None
    on_event: Callable[[Event], None] | None


def _decode_checked(index: int, data: bytes) -> Entry:
    try:
        entry = decode_entry(data)
    except MalformedEntryError as error:
        raise InconsistencyError(f"entry {index} is not a valid log entry: {error}") from error
    if isinstance(entry, Issuance | Renewal):
        try:
            store, serial = store_of_certificate(entry.certificate, entry.store.operator)
        except MalformedEntryError as error:
            raise InconsistencyError(f"entry {index}'s certificate: {error}") from error
        if store != entry.store or serial != entry.serial:
            raise InconsistencyError(
                f"entry {index} says store {entry.store.shop} ({entry.store.credit_code}), "
                f"serial {entry.serial:x}, but its certificate is for {store.shop} "
                f"({store.credit_code}), serial {serial:x}"
            )
    return entry


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")
