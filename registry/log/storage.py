"""The log's tables (on ``registry.schema.metadata``) and the SQL that reads and writes them.

What is stored, and why only that:

* ``log_pending`` — entries appended by writers, waiting for the sequencer. A writer inserts one
  row (the entry and its certificate's fingerprint) inside its own transaction, so a registry
  change and its entry commit together or not at all, and touches nothing shared, so writers
  never contend on the tree.
* ``log_entries`` — sequenced entries, one row per leaf index, with the leaf hash and the
  logged certificate's fingerprint indexed, so a proof can be found from an entry or a
  certificate. Entry bundles are assembled from consecutive rows.
* ``log_tiles`` — the C2SP hash tiles, full and partial, at every tile level: row ``(level,
  index)`` holds the concatenated hashes of tree level ``8 * level`` the tile covers so far. A
  partial tile grows in place until it is full and then never changes; a partial tile of width W
  is the first W hashes of its row. These are exactly the bytes the read API serves and all a
  proof needs (any node is one tile read plus at most 127 hashes), at about 32 bytes per leaf,
  instead of a row per tree node (2 rows per leaf).
* ``log_state`` — one row: the tree size and its compact range (the right border of the tree,
  one hash per set bit of the size), which is all the sequencer needs to append the next batch
  without reading any tile.
* ``log_checkpoints`` — every signed checkpoint, keyed by tree size; ``log_cosignatures`` —
  witness cosignatures of those checkpoints, served with them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    and_,
    any_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError

from registry.log.entries import Entry, certificate_sha256, encode_entry
from registry.log.errors import LogCorruptedError
from registry.merkle import HASH_SIZE, leaf_hash
from registry.note import Signature
from registry.schema import metadata

# SQLite makes only INTEGER PRIMARY KEY the rowid (no extra index); PostgreSQL gets 64 bits.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

log_pending = Table(
    "log_pending",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("entry", LargeBinary, nullable=False),
    Column("certificate_sha256", LargeBinary(32), nullable=True),
)

log_entries = Table(
    "log_entries",
    metadata,
    Column("idx", _BigId, primary_key=True, autoincrement=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("certificate_sha256", LargeBinary(32), nullable=True),
    Column("entry", LargeBinary, nullable=False),
    Index("ix_log_entries_leaf_hash", "leaf_hash"),
    Index("ix_log_entries_certificate_sha256", "certificate_sha256"),
)

log_tiles = Table(
    "log_tiles",
    metadata,
    Column("level", SmallInteger, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("hashes", LargeBinary, nullable=False),
    PrimaryKeyConstraint("level", "idx"),
)

log_state = Table(
    "log_state",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("edge", LargeBinary, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

log_checkpoints = Table(
    "log_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("note", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

log_cosignatures = Table(
    "log_cosignatures",
    metadata,
    Column("size", BigInteger, ForeignKey("log_checkpoints.size"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("key_hash", BigInteger, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("size", "name", "key_hash"),
)

STATE_ID = 1
"""Primary key of the single ``log_state`` row."""

MAX_SERVED_COSIGNATURES = 99
"""Most cosignatures served with a checkpoint: a note carries at most 100 signatures."""

# Below this many rows a plain INSERT costs less than setting up a COPY.
_COPY_THRESHOLD = 64

# SQLite before 3.32 allows 999 bound parameters per statement; stay well under it.
_IN_CHUNK = 500


SequencedRow = tuple[int, bytes, bytes | None, bytes]
"""A sequenced entry's row: leaf index, leaf hash, certificate fingerprint, entry bytes."""


@dataclass(frozen=True, slots=True)
class AppendedEntry:
    """An entry appended but perhaps not yet sequenced: find its index later by either hash."""

    leaf_hash: bytes
    certificate_sha256: bytes | None


@dataclass(frozen=True, slots=True)
class TreeState:
    """The sequencer's view of the tree: its size, root and compact range (right border)."""

    size: int
    root: bytes
    edge: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A signed checkpoint as stored, with the witness cosignatures collected for it."""

    size: int
    root: bytes
    note: bytes
    cosignatures: tuple[Signature, ...] = ()

    def signed_note(self) -> bytes:
        """Return the note as served: the log's signature, then the cosignatures by name."""
        lines = [signature.line().encode() for signature in self.cosignatures]
        return self.note + b"".join(lines)


def append_entry(conn: Connection, entry: Entry) -> AppendedEntry:
    """Queue ``entry`` for the log inside the caller's transaction.

    It becomes part of the log when that transaction commits and the sequencer next runs; if the
    transaction rolls back, the entry is gone with it.
    """
    return append_entries(conn, [entry])[0]


PENDING_INSERT_SQL: Final = "INSERT INTO log_pending (entry, certificate_sha256) VALUES (?, ?)"
"""``append_entry`` as one driver-level statement (qmark style), for a caller whose transaction
runs on the raw DBAPI connection (``services.storage.rawsql.Tx``); ``pending_row`` binds it."""


def pending_row(entry: Entry) -> tuple[tuple[bytes, bytes | None], AppendedEntry]:
    """Return the parameters of ``PENDING_INSERT_SQL`` for ``entry``, and what it appends."""
    data, fingerprint = encode_entry(entry), certificate_sha256(entry)
    return (data, fingerprint), AppendedEntry(leaf_hash(data), fingerprint)


def append_entries(conn: Connection, entries: Sequence[Entry]) -> list[AppendedEntry]:
    """Queue several entries, in order, inside the caller's transaction."""
    appended = []
    rows = []
    for entry in entries:
        (data, fingerprint), done = pending_row(entry)
        rows.append({"entry": data, "certificate_sha256": fingerprint})
        appended.append(done)
    # A registry appends one entry per transaction; bulk loads (imports, benchmarks) use COPY.
    columns = ("entry", "certificate_sha256")
    bulk = len(rows) >= _COPY_THRESHOLD and _copy(
        conn, log_pending, columns, [(row["entry"], row["certificate_sha256"]) for row in rows]
    )
    if rows and not bulk:
        conn.execute(insert(log_pending), rows)
    return appended


def pending_count(conn: Connection) -> int:
    """Return how many committed entries wait for the sequencer."""
    return int(conn.execute(select(func.count()).select_from(log_pending)).scalar_one())


def read_state(conn: Connection) -> TreeState | None:
    """Return the sequencer's tree state, or None before the first integration."""
    row = conn.execute(
        select(log_state.c.size, log_state.c.root, log_state.c.edge).where(
            log_state.c.id == STATE_ID
        )
    ).one_or_none()
    if row is None:
        return None
    size, root, edge = int(row.size), bytes(row.root), bytes(row.edge)
    if len(edge) != HASH_SIZE * size.bit_count():
        raise LogCorruptedError(f"stored compact range does not fit tree size {size}")
    return TreeState(size, root, tuple(edge[i : i + HASH_SIZE] for i in range(0, len(edge), 32)))


def latest_checkpoint(conn: Connection) -> StoredCheckpoint | None:
    """Return the newest checkpoint with its cosignatures, or None if none was signed yet."""
    row = conn.execute(
        select(log_checkpoints.c.size, log_checkpoints.c.root, log_checkpoints.c.note)
        .order_by(log_checkpoints.c.size.desc())
        .limit(1)
    ).one_or_none()
    if row is None:
        return None
    size = int(row.size)
    return StoredCheckpoint(size, bytes(row.root), bytes(row.note), cosignatures(conn, size))


def checkpoint_at(conn: Connection, size: int) -> StoredCheckpoint | None:
    """Return the checkpoint signed for tree ``size`` with its cosignatures, if there is one."""
    row = conn.execute(
        select(log_checkpoints.c.root, log_checkpoints.c.note).where(log_checkpoints.c.size == size)
    ).one_or_none()
    if row is None:
        return None
    return StoredCheckpoint(size, bytes(row.root), bytes(row.note), cosignatures(conn, size))


def cosignatures(conn: Connection, size: int) -> tuple[Signature, ...]:
    """Return the witness cosignatures stored for the checkpoint of tree ``size``, by name."""
    rows = conn.execute(
        select(log_cosignatures.c.name, log_cosignatures.c.key_hash, log_cosignatures.c.signature)
        .where(log_cosignatures.c.size == size)
        .order_by(log_cosignatures.c.name, log_cosignatures.c.key_hash)
        .limit(MAX_SERVED_COSIGNATURES)
    ).all()
    return tuple(Signature(row.name, int(row.key_hash), bytes(row.signature)) for row in rows)


def store_cosignatures(
    conn: Connection, size: int, signatures: Iterable[Signature], now: dt.datetime
) -> None:
    """Store (or replace) cosignatures of the checkpoint of tree ``size``."""
    for signature in signatures:
        key = and_(
            log_cosignatures.c.size == size,
            log_cosignatures.c.name == signature.name,
            log_cosignatures.c.key_hash == signature.key_hash,
        )
        conn.execute(delete(log_cosignatures).where(key))
        conn.execute(
            insert(log_cosignatures).values(
                size=size,
                name=signature.name,
                key_hash=signature.key_hash,
                signature=signature.data,
                created_at=now,
            )
        )


def read_tile_rows(
    conn: Connection, keys: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """Return the stored hashes of the tiles ``(level, index)`` that exist, by key."""
    wanted = list(dict.fromkeys(keys))
    found: dict[tuple[int, int], bytes] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        condition = or_(
            *(and_(log_tiles.c.level == level, log_tiles.c.idx == index) for level, index in chunk)
        )
        rows = conn.execute(
            select(log_tiles.c.level, log_tiles.c.idx, log_tiles.c.hashes).where(condition)
        )
        for row in rows:
            found[(int(row.level), int(row.idx))] = bytes(row.hashes)
    return found


def read_entries(conn: Connection, start: int, end: int) -> list[tuple[int, bytes]]:
    """Return the stored ``(index, entry)`` rows with start <= index < end, in order."""
    rows = conn.execute(
        select(log_entries.c.idx, log_entries.c.entry)
        .where(log_entries.c.idx >= start, log_entries.c.idx < end)
        .order_by(log_entries.c.idx)
    )
    return [(int(row.idx), bytes(row.entry)) for row in rows]


def index_for_leaf_hash(conn: Connection, leaf: bytes) -> int | None:
    """Return the lowest leaf index whose entry has leaf hash ``leaf``, if sequenced."""
    value = conn.execute(
        select(func.min(log_entries.c.idx)).where(log_entries.c.leaf_hash == leaf)
    ).scalar_one()
    return None if value is None else int(value)


def index_for_certificate(conn: Connection, certificate_der: bytes) -> int | None:
    """Return the index of the first sequenced entry that logs this certificate, if any."""
    fingerprint = hashlib.sha256(certificate_der).digest()
    value = conn.execute(
        select(func.min(log_entries.c.idx)).where(log_entries.c.certificate_sha256 == fingerprint)
    ).scalar_one()
    return None if value is None else int(value)


def certificate_pending(conn: Connection, certificate_der: bytes) -> bool:
    """Return whether an entry logging this certificate waits for the sequencer."""
    fingerprint = hashlib.sha256(certificate_der).digest()
    # log_pending holds only what the sequencer has not taken yet: a few rows at most.
    found = conn.execute(
        select(log_pending.c.id).where(log_pending.c.certificate_sha256 == fingerprint).limit(1)
    ).first()
    return found is not None


def insert_sequenced(conn: Connection, rows: Sequence[SequencedRow]) -> None:
    """Insert sequenced entries ``(index, leaf hash, certificate fingerprint, entry)`` in bulk."""
    if not rows:
        return
    columns = ("idx", "leaf_hash", "certificate_sha256", "entry")
    if not _copy(conn, log_entries, columns, rows):
        conn.execute(insert(log_entries), [dict(zip(columns, row, strict=True)) for row in rows])


def _copy(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[object]]
) -> bool:
    """Bulk-load ``rows`` with PostgreSQL COPY if the driver is psycopg; False if not done."""
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
        return False
    # COPY is several times faster than even pipelined INSERTs, and runs inside the caller's
    # transaction on the same driver connection.
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    driver_error: type[Exception] = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except driver_error as error:
        # Wrapped as SQLAlchemy wraps its own statements' errors, so callers (and retry loops)
        # see an IntegrityError or a serialization failure, not a bare driver exception.
        raise DBAPIError.instance(statement, None, error, driver_error) from error
    finally:
        cursor.close()
    return True


def delete_pending(conn: Connection, ids: Sequence[int]) -> None:
    """Delete exactly the pending rows ``ids`` (never a range: later commits may fall inside)."""
    if conn.dialect.name == "postgresql":
        # One array parameter instead of thousands of scalar ones.
        taken = bindparam("taken", list(ids), type_=ARRAY(BigInteger))
        conn.execute(delete(log_pending).where(log_pending.c.id == any_(taken)))
        return
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        conn.execute(delete(log_pending).where(log_pending.c.id.in_(chunk)))
