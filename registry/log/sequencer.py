"""The sequencer: turns pending entries into leaves, tiles and a signed checkpoint, in batches.

Writers only insert into ``log_pending`` (inside their own transactions); one sequencer at a time
integrates what has committed. Mutual exclusion is the database's: on PostgreSQL a transaction-
scoped advisory lock, on SQLite the single write lock (taken by the transaction's first
statement, a write). Even if two sequencers overlapped, the leaf index primary key and the
compare-and-set on ``log_state`` would make one of them fail rather than fork the tree.

Each batch is one transaction: assign the next indices in pending order, store the entries,
extend the hash tiles (only the nodes the compact range completes), delete exactly the pending
rows taken, advance the compact range, and sign and store a checkpoint for the new size.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Connection, Engine, and_, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from registry.checkpoint import Checkpoint, sign_checkpoint
from registry.clock import Clock, utc_now
from registry.log import storage
from registry.log.errors import LogCorruptedError, SequencerConflictError
from registry.log.storage import (
    STATE_ID,
    TreeState,
    log_checkpoints,
    log_pending,
    log_state,
    log_tiles,
)
from registry.merkle import CompactRange, NodeID, empty_root, leaf_hash
from registry.note import Signer
from registry.tiles import TILE_HEIGHT, tile_width

log = logging.getLogger("realname.log.sequencer")

DEFAULT_BATCH_SIZE: Final = 4096
"""Most entries integrated by one transaction: bounds how long the lock is held."""

DEFAULT_INTERVAL: Final = 0.2
"""Seconds between background integrations."""

_CONFLICT_ATTEMPTS: Final = 5

ADVISORY_LOCK_KEY: Final = int.from_bytes(b"rnlogseq", "big")
"""The PostgreSQL advisory lock key that serialises sequencers (any process, same database)."""


@dataclass(frozen=True, slots=True)
class Integration:
    """What an integration did: the tree grew from ``previous_size`` to ``size``."""

    previous_size: int
    size: int
    root: bytes
    checkpoint: bytes | None
    """The checkpoint note signed by this integration; None if nothing changed."""

    @property
    def added(self) -> int:
        """Number of entries sequenced."""
        return self.size - self.previous_size


Transactor = Callable[[Callable[[Connection], Integration]], Integration]
"""Runs a unit of work in one transaction (e.g. a retrying ``Database.write``)."""


def integrate(
    conn: Connection,
    signer: Signer,
    origin: str,
    *,
    max_entries: int = DEFAULT_BATCH_SIZE,
    now: dt.datetime | None = None,
) -> Integration:
    """Sequence up to ``max_entries`` pending entries in the caller's transaction.

    Signs a checkpoint whenever the tree grows, and once for the empty tree, so that a log
    always has a checkpoint to serve.
    """
    if max_entries < 1:
        raise ValueError("max_entries must be positive")
    stamp = now or utc_now()
    _lock(conn)
    state = storage.read_state(conn)
    if state is None:
        state = TreeState(0, empty_root(), ())
        conn.execute(insert(log_state).values(id=STATE_ID, size=0, root=state.root, edge=b""))
    rows = conn.execute(
        select(log_pending.c.id, log_pending.c.entry, log_pending.c.certificate_sha256)
        .order_by(log_pending.c.id)
        .limit(max_entries)
    ).all()
    if not rows:
        if _has_checkpoint(conn, state.size):
            return Integration(state.size, state.size, state.root, None)
        note = _store_checkpoint(conn, signer, origin, size=state.size, root=state.root, now=stamp)
        return Integration(state.size, state.size, state.root, note)

    edge = CompactRange(state.size, state.edge)
    grown: dict[tuple[int, int], list[bytes]] = {}

    def collect(node: NodeID, value: bytes) -> None:
        # Tiles hold the hashes of every eighth tree level; the levels between are recomputed.
        if node.level % TILE_HEIGHT == 0:
            key = (node.level // TILE_HEIGHT, node.index >> TILE_HEIGHT)
            grown.setdefault(key, []).append(value)

    entry_rows: list[storage.SequencedRow] = []
    for index, row in enumerate(rows, start=state.size):
        data = bytes(row.entry)
        value = leaf_hash(data)
        edge.append(value, collect)
        fingerprint = None if row.certificate_sha256 is None else bytes(row.certificate_sha256)
        entry_rows.append((index, value, fingerprint, data))
    size, root = edge.size, edge.root()

    storage.insert_sequenced(conn, entry_rows)
    storage.delete_pending(conn, [int(row.id) for row in rows])
    _extend_tiles(conn, grown, state.size, size)
    moved = conn.execute(
        update(log_state)
        .where(log_state.c.id == STATE_ID, log_state.c.size == state.size)
        .values(size=size, root=root, edge=b"".join(edge.hashes))
    )
    if moved.rowcount != 1:
        raise SequencerConflictError("the tree moved under the sequencer: another one ran")
    note = _store_checkpoint(conn, signer, origin, size=size, root=root, now=stamp)
    return Integration(state.size, size, root, note)


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    else:
        # A write as the first statement takes SQLite's write lock before anything is read, so
        # the transaction can never need to upgrade a read lock (which fails instead of waiting).
        conn.execute(update(log_state).where(log_state.c.id == STATE_ID).values(id=STATE_ID))


def _has_checkpoint(conn: Connection, size: int) -> bool:
    found = conn.execute(
        select(log_checkpoints.c.size).where(log_checkpoints.c.size == size)
    ).one_or_none()
    return found is not None


def _store_checkpoint(
    conn: Connection, signer: Signer, origin: str, *, size: int, root: bytes, now: dt.datetime
) -> bytes:
    note = sign_checkpoint(Checkpoint(origin, size, root), signer)
    conn.execute(insert(log_checkpoints).values(size=size, root=root, note=note, created_at=now))
    return note


def _extend_tiles(
    conn: Connection, grown: dict[tuple[int, int], list[bytes]], old_size: int, new_size: int
) -> None:
    existing_keys = [key for key in grown if tile_width(*key, old_size) > 0]
    existing = storage.read_tile_rows(conn, existing_keys)
    inserts = []
    for key, hashes in grown.items():
        level, index = key
        old_width = tile_width(level, index, old_size)
        if old_width + len(hashes) != tile_width(level, index, new_size):
            raise LogCorruptedError(f"tile {key} would not match tree size {new_size}")
        added = b"".join(hashes)
        if old_width == 0:
            inserts.append({"level": level, "idx": index, "hashes": added})
            continue
        stored = existing.get(key)
        if stored is None or len(stored) != 32 * old_width:
            raise LogCorruptedError(f"stored tile {key} does not match tree size {old_size}")
        conn.execute(
            update(log_tiles)
            .where(and_(log_tiles.c.level == level, log_tiles.c.idx == index))
            .values(hashes=stored + added)
        )
    if inserts:
        conn.execute(insert(log_tiles), inserts)


class Sequencer:
    """Integrates a database's pending entries, signing checkpoints with the log's key."""

    def __init__(
        self,
        engine: Engine,
        signer: Signer,
        origin: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        transact: Transactor | None = None,
        clock: Clock = utc_now,
    ) -> None:
        """Sequence in ``engine``'s database; ``transact`` runs each batch (default: one try)."""
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self._engine = engine
        self._signer = signer
        self._origin = origin
        self._batch_size = batch_size
        self._transact = transact or self._begin
        self._clock = clock
        # Integrations in one process queue here rather than on the database lock.
        self._mutex = threading.Lock()

    @property
    def origin(self) -> str:
        """The origin line of the checkpoints this sequencer signs."""
        return self._origin

    def _begin(self, work: Callable[[Connection], Integration]) -> Integration:
        with self._engine.begin() as conn:
            return work(conn)

    def integrate_batch(self) -> Integration:
        """Integrate one batch (at most ``batch_size`` entries) in one transaction."""

        def work(conn: Connection) -> Integration:
            if conn.dialect.name == "postgresql":
                # The advisory lock already serialises sequencers; under a SERIALIZABLE default
                # the snapshot would be taken before the lock is granted and be stale after
                # waiting for it, so every contended batch would fail and retry.
                conn.execute(text("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"))
            return integrate(
                conn, self._signer, self._origin, max_entries=self._batch_size, now=self._clock()
            )

        with self._mutex:
            for _attempt in range(_CONFLICT_ATTEMPTS - 1):
                try:
                    return self._transact(work)
                except (SequencerConflictError, IntegrityError) as error:
                    # Another sequencer won the race for these indices; the next attempt
                    # starts from the tree it left.
                    log.info(
                        "sequencer conflict, retrying", extra={"fields": {"error": str(error)}}
                    )
            return self._transact(work)

    def integrate_now(self) -> Integration:
        """Integrate until nothing that committed before the call is left pending."""
        first = last = self.integrate_batch()
        note = first.checkpoint
        # A batch shorter than the limit has drained everything committed before it started.
        while last.added >= self._batch_size:
            last = self.integrate_batch()
            note = last.checkpoint or note
        return Integration(first.previous_size, last.size, last.root, note)


class SequencerRunner:
    """Runs a sequencer in a background thread every ``interval`` seconds, until stopped."""

    def __init__(self, sequencer: Sequencer, interval: float = DEFAULT_INTERVAL) -> None:
        """Prepare (but do not start) the background loop."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._sequencer = sequencer
        self._interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0
        """Integrations that raised since start; each one is logged with its traceback."""
        self.last_error: BaseException | None = None
        """The most recent integration error, None once an integration succeeds again."""

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the background thread (once)."""
        if self._thread is not None:
            raise RuntimeError("sequencer runner already started")
        self._thread = threading.Thread(target=self._run, name="log-sequencer", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Ask for an integration now instead of at the next tick."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop after one last integration, waiting up to ``timeout`` seconds."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> SequencerRunner:
        """Start on entering a ``with`` block."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop on leaving a ``with`` block."""
        self.stop()

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            self._integrate()
            if stopping:
                return
            self._wake.wait(self._interval)
            self._wake.clear()

    def _integrate(self) -> None:
        try:
            self._sequencer.integrate_now()
        except Exception as error:
            # The loop must outlive a database outage; the error is logged and kept, and the
            # entries stay pending until a later tick succeeds.
            self.failures += 1
            self.last_error = error
            log.exception("log integration failed")
        else:
            self.last_error = None
