"""SQL of identity proofing (raw, ``?`` placeholders, SQLite and PostgreSQL alike)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.domain.cards import CardState, Suspension
from services.domain.records import ReaderRow, SignalRow
from services.storage.rawsql import Probe, Tx


@dataclass(frozen=True)
class Policy:
    """An operator's proofing policy as stored."""

    attestation_required: bool
    identity_check_required: bool
    face_match_threshold_permille: int
    freshness_seconds: int
    updated_at: dt.datetime


@dataclass(frozen=True)
class IdentityRecord:
    """A reference identity authority record (pseudonym and name hash only)."""

    name_hash: bytes
    status: str
    valid_until: dt.date | None


@dataclass(frozen=True)
class Sighting:
    """Where and when a document was attested before."""

    operator_id: str
    reader_serial: str
    latitude: float | None  # None: the reader's location is unknown
    longitude: float | None
    recorded_at: dt.datetime


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _date(tx: Tx, value: dt.date | None) -> Any:
    return value.isoformat() if tx.sqlite and value is not None else value


def _parse_date(value: Any) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _bytes(value: Any) -> bytes:
    return bytes(value)


# --- policies -------------------------------------------------------------------------------


_POLICY_COLUMNS = (
    "attestation_required",
    "identity_check_required",
    "face_match_threshold_permille",
    "freshness_seconds",
    "updated_at",
)


def _policy_of(tx: Tx, values: Sequence[Any]) -> Policy | None:
    if values[4] is None:  # updated_at is NOT NULL: no row
        return None
    at = tx.parse_timestamp(values[4])
    assert at is not None
    return Policy(bool(values[0]), bool(values[1]), int(values[2]), int(values[3]), at)


def get_policy(tx: Tx, operator_id: str) -> Policy | None:
    """The operator's policy, or None when proofing is off for it."""
    row = tx.one(
        f"SELECT {', '.join(_POLICY_COLUMNS)} FROM proofing_policies "  # noqa: S608
        "WHERE operator_id = ?",
        (operator_id,),
    )
    return None if row is None else _policy_of(tx, row)


def policy_probes(operator_id: str) -> list[Probe]:
    """The operator's policy as probes, one per column (see ``policy_from``)."""
    return [
        Probe(f"SELECT {column} FROM proofing_policies WHERE operator_id = ?", (operator_id,))  # noqa: S608
        for column in _POLICY_COLUMNS
    ]


def policy_from(tx: Tx, answers: Sequence[Any]) -> Policy | None:
    """The policy the answers of ``policy_probes`` describe, or None when there is none."""
    return _policy_of(tx, answers)


def delete_policy(tx: Tx, operator_id: str) -> bool:
    """Removes the operator's policy (proofing off); False if it had none."""
    return tx.execute("DELETE FROM proofing_policies WHERE operator_id = ?", (operator_id,)) == 1


def set_policy(tx: Tx, operator_id: str, policy: Policy) -> None:
    """Creates or replaces the operator's policy."""
    params = (
        int(policy.attestation_required),
        int(policy.identity_check_required),
        policy.face_match_threshold_permille,
        policy.freshness_seconds,
        tx.timestamp(policy.updated_at),
    )
    changed = tx.execute(
        "UPDATE proofing_policies SET attestation_required = ?, identity_check_required = ?, "
        "face_match_threshold_permille = ?, freshness_seconds = ?, updated_at = ? "
        "WHERE operator_id = ?",
        (*params, operator_id),
    )
    if changed == 0:
        tx.execute(
            "INSERT INTO proofing_policies (attestation_required, identity_check_required, "
            "face_match_threshold_permille, freshness_seconds, updated_at, operator_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (*params, operator_id),
        )


def operator_exists(tx: Tx, operator_id: str) -> bool:
    """Whether the operator is registered."""
    return tx.one("SELECT 1 FROM operators WHERE id = ?", (operator_id,)) is not None


def request_recorded(tx: Tx, operator_id: str, request_id: str) -> bool:
    """Whether the operator's request id already has a recorded outcome (a retry)."""
    row = tx.one(
        "SELECT 1 FROM requests WHERE operator_id = ? AND request_id = ?",
        (operator_id, request_id),
    )
    return row is not None


# --- identity records and blocklist ---------------------------------------------------------


def identity_record(tx: Tx, id_key: bytes) -> IdentityRecord | None:
    """The reference record of a document pseudonym."""
    row = tx.one(
        "SELECT name_hash, status, valid_until FROM proofing_identity_records WHERE id_key = ?",
        (id_key,),
    )
    if row is None:
        return None
    return IdentityRecord(_bytes(row[0]), str(row[1]), _parse_date(row[2]))


def put_identity_record(
    tx: Tx,
    id_key: bytes,
    name_hash: bytes,
    *,
    status: str,
    valid_until: dt.date | None,
    source: str,
    now: dt.datetime,
) -> None:
    """Inserts or replaces one reference record."""
    params = (name_hash, status, _date(tx, valid_until), source, tx.timestamp(now), id_key)
    changed = tx.execute(
        "UPDATE proofing_identity_records SET name_hash = ?, status = ?, valid_until = ?, "
        "source = ?, loaded_at = ? WHERE id_key = ?",
        params,
    )
    if changed == 0:
        tx.execute(
            "INSERT INTO proofing_identity_records (name_hash, status, valid_until, source, "
            "loaded_at, id_key) VALUES (?, ?, ?, ?, ?, ?)",
            params,
        )


def block_probe(id_key: bytes) -> Probe:
    """The block reason of a document pseudonym, or None."""
    return Probe("SELECT reason FROM proofing_blocks WHERE id_key = ?", (id_key,))


def is_blocked(tx: Tx, id_key: bytes) -> str | None:
    """The block reason of a document pseudonym, or None."""
    reason = tx.probe(block_probe(id_key))
    return None if reason is None else str(reason)


def blocked_among(tx: Tx, id_keys: Sequence[bytes]) -> set[bytes]:
    """The document pseudonyms among these that are blocked (one statement)."""
    if not id_keys:
        return set()
    if tx.sqlite:
        marks = ", ".join("?" * len(id_keys))
        rows = tx.all(
            f"SELECT id_key FROM proofing_blocks WHERE id_key IN ({marks})",  # noqa: S608
            tuple(id_keys),
        )
    else:
        rows = tx.all(
            "SELECT id_key FROM proofing_blocks WHERE id_key = ANY(?::bytea[])", (list(id_keys),)
        )
    return {_bytes(r[0]) for r in rows}


def block(
    tx: Tx,
    id_key: bytes,
    *,
    document_type: int,
    masked: str,
    reason: str,
    reference: str,
    now: dt.datetime,
) -> bool:
    """Blocks a document; False when it already was."""
    if is_blocked(tx, id_key) is not None:
        return False
    tx.execute(
        "INSERT INTO proofing_blocks (id_key, document_type, document_masked, reason, reference, "
        "blocked_at) VALUES (?, ?, ?, ?, ?, ?)",
        (id_key, document_type, masked, reason, reference, tx.timestamp(now)),
    )
    return True


def unblock(tx: Tx, id_key: bytes) -> bool:
    """Unblocks a document; False when it was not blocked."""
    return tx.execute("DELETE FROM proofing_blocks WHERE id_key = ?", (id_key,)) > 0


# The one rule every statement that puts a card in service goes through (a dispute settled,
# a parcel handed over, ...): a card of a blocked document is never made ACTIVE; it is suspended
# for REVERIFICATION instead, as blocking suspends the cards already in service. Checked in the
# statement that writes the state, so no block committed before it can be missed.
_HOLDER_BLOCKED = "EXISTS (SELECT 1 FROM proofing_blocks b WHERE b.id_key = cards.id_key)"


def card_state_sql(state: str, suspension: str | None) -> tuple[str, tuple[Any, ...]]:
    """The ``UPDATE cards SET`` assignments (and parameters) moving a card to ``state``.

    ``ACTIVE`` becomes SUSPENDED/REVERIFICATION while the card's document is blocked.
    """
    if state != CardState.ACTIVE.value:
        return "state = ?, suspension = ?", (state, suspension)
    return (
        f"state = CASE WHEN {_HOLDER_BLOCKED} THEN ? ELSE ? END, "
        f"suspension = CASE WHEN {_HOLDER_BLOCKED} THEN ? ELSE NULL END",
        (CardState.SUSPENDED.value, state, Suspension.REVERIFICATION),
    )


def suspend_for_reverification(tx: Tx, id_key: bytes) -> int:
    """Suspends every ACTIVE card of the document, at every operator; returns how many."""
    return tx.execute(
        "UPDATE cards SET state = 'SUSPENDED', suspension = 'REVERIFICATION' "
        "WHERE id_key = ? AND state = 'ACTIVE'",
        (id_key,),
    )


def pending_cards_of_document(tx: Tx, id_key: bytes) -> int:
    """How many cards of the document await delivery (they enter service suspended)."""
    row = tx.one(
        "SELECT count(*) FROM cards WHERE id_key = ? AND state = ?",
        (id_key, CardState.PENDING_DELIVERY.value),
    )
    return 0 if row is None else int(row[0])


def set_holder_name(tx: Tx, card_id: int, ciphertext: bytes, key_id: str, name_hash: bytes) -> None:
    """Stores the sealed holder name on a card."""
    tx.execute(
        "UPDATE cards SET holder_name_ct = ?, holder_name_key_id = ?, holder_name_hash = ? "
        "WHERE id = ?",
        (ciphertext, key_id, name_hash, card_id),
    )


# --- readers ---------------------------------------------------------------------------------

_READER_COLUMNS = (
    "operator_id, serial, agent_id, key_algorithm, public_key, key_fingerprint, latitude, "
    "longitude, location_label, registered_at, revoked_at, revocation_reason"
)


def _reader(tx: Tx, row: tuple[Any, ...]) -> ReaderRow:
    registered = tx.parse_timestamp(row[9])
    assert registered is not None
    return ReaderRow(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), _bytes(row[4]), str(row[5]),
        _float(row[6]), _float(row[7]), str(row[8]), registered, tx.parse_timestamp(row[10]),
        None if row[11] is None else str(row[11]),
    )  # fmt: skip


def insert_reader(tx: Tx, reader: ReaderRow) -> bool:
    """Registers a reader; False when the operator already has one with this serial."""
    if get_reader(tx, reader.operator_id, reader.serial) is not None:
        return False
    tx.execute(
        f"INSERT INTO proofing_readers ({_READER_COLUMNS}) "  # noqa: S608
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            reader.operator_id, reader.serial, reader.agent_id, reader.key_algorithm,
            reader.public_key, reader.key_fingerprint, reader.latitude, reader.longitude,
            reader.location_label, tx.timestamp(reader.registered_at), None, None,
        ),
    )  # fmt: skip
    return True


def get_reader(tx: Tx, operator_id: str, serial: str) -> ReaderRow | None:
    """One of the operator's readers by serial."""
    row = tx.one(
        f"SELECT {_READER_COLUMNS} FROM proofing_readers "  # noqa: S608
        "WHERE operator_id = ? AND serial = ?",
        (operator_id, serial),
    )
    return None if row is None else _reader(tx, row)


def list_readers(tx: Tx, operator_id: str, agent_id: str | None) -> list[ReaderRow]:
    """The operator's readers (of one agent, if given), by serial."""
    sql = f"SELECT {_READER_COLUMNS} FROM proofing_readers WHERE operator_id = ?"  # noqa: S608
    params: list[Any] = [operator_id]
    if agent_id:
        sql += " AND agent_id = ?"
        params.append(agent_id)
    return [_reader(tx, r) for r in tx.all(sql + " ORDER BY serial", params)]


def revoke_reader(tx: Tx, operator_id: str, serial: str, reason: str, now: dt.datetime) -> bool:
    """Revokes a live reader; False when there is none to revoke."""
    return (
        tx.execute(
            "UPDATE proofing_readers SET revoked_at = ?, revocation_reason = ? "
            "WHERE operator_id = ? AND serial = ? AND revoked_at IS NULL",
            (tx.timestamp(now), reason, operator_id, serial),
        )
        > 0
    )


# --- nonces ---------------------------------------------------------------------------------


def insert_nonce(
    tx: Tx, digest: bytes, operator_id: str, now: dt.datetime, expires_at: dt.datetime
) -> None:
    """Stores an issued nonce (its digest)."""
    tx.execute(
        "INSERT INTO proofing_nonces (digest, operator_id, issued_at, expires_at) "
        "VALUES (?, ?, ?, ?)",
        (digest, operator_id, tx.timestamp(now), tx.timestamp(expires_at)),
    )


def consume_nonce(tx: Tx, digest: bytes, operator_id: str, now: dt.datetime) -> str:
    """Marks a nonce used: ``OK``, or ``UNKNOWN``, ``USED``, ``EXPIRED`` (consumed even then)."""
    row = tx.one(
        "SELECT operator_id, expires_at, used_at FROM proofing_nonces WHERE digest = ?",
        (digest,),
    )
    if row is None or row[0] != operator_id:
        return "UNKNOWN"
    if row[2] is not None:
        return "USED"
    used = tx.execute(
        "UPDATE proofing_nonces SET used_at = ? WHERE digest = ? AND used_at IS NULL",
        (tx.timestamp(now), digest),
    )
    if used == 0:
        return "USED"
    expires = tx.parse_timestamp(row[1])
    assert expires is not None
    return "EXPIRED" if expires < now else "OK"


def delete_expired_nonces(tx: Tx, before: dt.datetime, limit: int) -> int:
    """Deletes up to ``limit`` nonces that expired before ``before``."""
    return tx.execute(
        "DELETE FROM proofing_nonces WHERE digest IN (SELECT digest FROM proofing_nonces "
        "WHERE expires_at < ? LIMIT ?)",
        (tx.timestamp(before), limit),
    )


# --- attestations and signals ---------------------------------------------------------------


def record_attestation(
    tx: Tx,
    reader: ReaderRow,
    id_key: bytes,
    *,
    outcome: str,
    face_score: int,
    now: dt.datetime,
) -> None:
    """Records one checked attestation (the document as its pseudonym only)."""
    tx.execute(
        "INSERT INTO proofing_attestations (operator_id, agent_id, reader_serial, id_key, "
        "outcome, face_score, latitude, longitude, recorded_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            reader.operator_id, reader.agent_id, reader.serial, id_key, outcome, face_score,
            reader.latitude, reader.longitude, tx.timestamp(now),
        ),
    )  # fmt: skip


def documents_attested(tx: Tx, operator_id: str, serial: str, since: dt.datetime) -> int:
    """Distinct documents a reader attested since ``since``."""
    row = tx.one(
        "SELECT COUNT(DISTINCT id_key) FROM proofing_attestations "
        "WHERE operator_id = ? AND reader_serial = ? AND recorded_at >= ?",
        (operator_id, serial, tx.timestamp(since)),
    )
    return 0 if row is None else int(row[0])


def face_failures(tx: Tx, operator_id: str, serial: str, since: dt.datetime) -> int:
    """Face-match failures at a reader since ``since``."""
    row = tx.one(
        "SELECT COUNT(*) FROM proofing_attestations WHERE operator_id = ? AND reader_serial = ? "
        "AND outcome = 'FACE_MATCH_FAILED' AND recorded_at >= ?",
        (operator_id, serial, tx.timestamp(since)),
    )
    return 0 if row is None else int(row[0])


def sightings(tx: Tx, id_key: bytes, since: dt.datetime) -> list[Sighting]:
    """Where a document was attested since ``since``, at any operator."""
    rows = tx.all(
        "SELECT operator_id, reader_serial, latitude, longitude, recorded_at "
        "FROM proofing_attestations WHERE id_key = ? AND recorded_at >= ? ORDER BY id",
        (id_key, tx.timestamp(since)),
    )
    out = []
    for r in rows:
        at = tx.parse_timestamp(r[4])
        assert at is not None
        out.append(Sighting(str(r[0]), str(r[1]), _float(r[2]), _float(r[3]), at))
    return out


def signal_since(tx: Tx, kind: str, operator_id: str, serial: str, since: dt.datetime) -> bool:
    """Whether this signal was already raised for the reader since ``since``."""
    row = tx.one(
        "SELECT 1 FROM proofing_signals WHERE operator_id = ? AND reader_serial = ? "
        "AND kind = ? AND observed_at >= ?",
        (operator_id, serial, kind, tx.timestamp(since)),
    )
    return row is not None


def insert_signal(tx: Tx, kind: str, reader: ReaderRow, detail: str, now: dt.datetime) -> None:
    """Records a fraud signal."""
    tx.execute(
        "INSERT INTO proofing_signals (kind, operator_id, agent_id, reader_serial, detail, "
        "observed_at) VALUES (?, ?, ?, ?, ?, ?)",
        (kind, reader.operator_id, reader.agent_id, reader.serial, detail[:200], tx.timestamp(now)),
    )


def list_signals(tx: Tx, operator_id: str | None, limit: int) -> list[SignalRow]:
    """Signals, newest first (of one operator, if given)."""
    sql = (
        "SELECT id, kind, operator_id, agent_id, reader_serial, detail, observed_at "
        "FROM proofing_signals"
    )
    params: list[Any] = []
    if operator_id:
        sql += " WHERE operator_id = ?"
        params.append(operator_id)
    rows = tx.all(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
    out = []
    for r in rows:
        at = tx.parse_timestamp(r[6])
        assert at is not None
        out.append(SignalRow(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), at))
    return out
