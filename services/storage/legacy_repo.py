"""SQL of the legacy feature: imports, batch card inserts, deadline policies, the sweep.

Hand-written SQL on the driver connection (see ``rawsql``), run in the caller's transaction;
the tables are those of ``legacy_schema`` and ``schema``. Batch statements are multi-row
``VALUES`` lists: one round trip per batch on both engines.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from registry.subscribers import DocumentType
from services.domain.records import ImportRecord, PolicyRecord
from services.storage.rawsql import Tx

_LIVE = "state <> 'DEACTIVATED'"


@dataclass(frozen=True)
class LegacyCard:
    """One validated row to insert as a card."""

    row: int
    msisdn: str
    iccid: str
    verified: bool
    id_key: bytes | None
    document_type: DocumentType | None
    document_masked: str | None


def date_param(tx: Tx, value: dt.date) -> Any:
    """A date as the column stores it (ISO text on SQLite, a date on PostgreSQL)."""
    return value.isoformat() if tx.sqlite else value


def parse_date(value: Any) -> dt.date:
    """A stored date back as a date."""
    if isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    assert isinstance(value, dt.date)
    return value


# -- imports ------------------------------------------------------------------------------------

_IMPORT_COLUMNS = (
    "import_id, state, total_rows, bad_rows, max_bad_ratio, committed_rows, imported_rows, "
    "failed_rows, updated_at, documents_over_cap"
)


def get_import(tx: Tx, operator_id: str, import_id: str) -> ImportRecord | None:
    """Loads an import of the operator, or None."""
    row = tx.one(
        f"SELECT {_IMPORT_COLUMNS} FROM legacy_imports "  # noqa: S608
        "WHERE operator_id = ? AND import_id = ?",
        (operator_id, import_id),
    )
    if row is None:
        return None
    updated = tx.parse_timestamp(row[8])
    assert updated is not None
    return ImportRecord(
        row[0], row[1], int(row[2]), int(row[3]), float(row[4]), int(row[5]), int(row[6]),
        int(row[7]), updated, int(row[9]),
    )  # fmt: skip


def record_validation(
    tx: Tx,
    *,
    operator_id: str,
    import_id: str,
    state: str,
    total_rows: int,
    bad_rows: int,
    max_bad_ratio: float,
    now: dt.datetime,
) -> bool:
    """Records a validation verdict; False if the import has committed rows meanwhile."""
    ts = tx.timestamp(now)
    changed = tx.execute(
        "INSERT INTO legacy_imports (operator_id, import_id, state, total_rows, bad_rows, "
        "max_bad_ratio, committed_rows, imported_rows, failed_rows, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?) "
        "ON CONFLICT (operator_id, import_id) DO UPDATE SET state = excluded.state, "
        "total_rows = excluded.total_rows, bad_rows = excluded.bad_rows, "
        "max_bad_ratio = excluded.max_bad_ratio, updated_at = excluded.updated_at "
        "WHERE legacy_imports.committed_rows = 0",
        (operator_id, import_id, state, total_rows, bad_rows, max_bad_ratio, ts, ts),
    )
    return changed == 1


def advance_import(
    tx: Tx,
    *,
    operator_id: str,
    import_id: str,
    committed_before: int,
    committed_after: int,
    imported: int,
    failed: int,
    state: str,
    now: dt.datetime,
    over_cap: int = 0,
) -> bool:
    """Moves the committed count on, if nobody else did (compare and set)."""
    changed = tx.execute(
        "UPDATE legacy_imports SET committed_rows = ?, imported_rows = imported_rows + ?, "
        "failed_rows = failed_rows + ?, documents_over_cap = documents_over_cap + ?, "
        "state = ?, updated_at = ? "
        "WHERE operator_id = ? AND import_id = ? AND committed_rows = ?",
        (
            committed_after, imported, failed, over_cap, state, tx.timestamp(now),
            operator_id, import_id, committed_before,
        ),
    )  # fmt: skip
    return changed == 1


def relax_durability(tx: Tx) -> None:
    """PostgreSQL: this transaction's commit need not wait for its log flush.

    Safe for import batches: a batch and the import's committed count commit together, so a
    crash loses both or neither, and the re-run imports the lost rows again; the stream ends
    with a durable commit, which flushes every earlier one.
    """
    if not tx.sqlite:
        tx.execute("SET LOCAL synchronous_commit = off")


def touch_import(tx: Tx, operator_id: str, import_id: str) -> None:
    """A durable write to the import's row (flushes the log of earlier relaxed commits)."""
    tx.execute(
        "UPDATE legacy_imports SET updated_at = updated_at WHERE operator_id = ? AND import_id = ?",
        (operator_id, import_id),
    )


def live_conflicts(
    tx: Tx, msisdns: Sequence[str], iccids: Sequence[str]
) -> tuple[set[str], set[str]]:
    """The MSISDNs and ICCIDs among these that live cards already hold."""
    if not msisdns and not iccids:
        return set(), set()
    if tx.sqlite:
        marks_m = ", ".join("?" * len(msisdns)) or "NULL"
        marks_i = ", ".join("?" * len(iccids)) or "NULL"
        rows = tx.all(
            f"SELECT msisdn, iccid FROM cards WHERE {_LIVE} "  # noqa: S608
            f"AND (msisdn IN ({marks_m}) OR iccid IN ({marks_i}))",
            (*msisdns, *iccids),
        )
    else:
        # Arrays: one parameter each, where a long placeholder list costs psycopg more to
        # parse than the server takes to run the query.
        rows = tx.all(
            f"SELECT msisdn, iccid FROM cards WHERE {_LIVE} "  # noqa: S608
            "AND (msisdn = ANY(?::text[]) OR iccid = ANY(?::text[]))",
            (list(msisdns), list(iccids)),
        )
    wanted_m, wanted_i = set(msisdns), set(iccids)
    return {m for m, _ in rows if m in wanted_m}, {i for _, i in rows if i in wanted_i}


_CARD_INSERT = (
    "INSERT INTO cards (operator_id, msisdn, iccid, id_key, document_type, document_masked, "
    "card_type, state, channel, activated_at, verified, service_stage, import_id) VALUES "
)
_CARD_VALUES = "(?, ?, ?, ?, ?, ?, 1, 'ACTIVE', 'legacy', ?, ?, 'FULL', ?)"


def insert_legacy_cards(
    tx: Tx, operator_id: str, import_id: str, cards: Sequence[LegacyCard], now: dt.datetime
) -> set[str]:
    """Inserts ACTIVE legacy cards; returns the MSISDNs inserted (the rest hit a live card)."""
    if not cards:
        return set()
    ts = tx.timestamp(now)
    if not tx.sqlite:
        return _insert_legacy_cards_pg(tx, operator_id, import_id, cards, ts)
    params: list[Any] = []
    for c in cards:
        params += (
            operator_id, c.msisdn, c.iccid, c.id_key,
            None if c.document_type is None else c.document_type.value, c.document_masked,
            ts, 1 if c.verified else 0, import_id,
        )  # fmt: skip
    sql = (
        _CARD_INSERT
        + ", ".join([_CARD_VALUES] * len(cards))
        + " ON CONFLICT DO NOTHING RETURNING msisdn"
    )
    return {str(r[0]) for r in tx.all(sql, params)}


_CARD_INSERT_PG = (
    "INSERT INTO cards (operator_id, msisdn, iccid, id_key, document_type, document_masked, "
    "card_type, state, channel, activated_at, verified, service_stage, import_id) "
    "SELECT ?, m, i, k, t, d, 1, 'ACTIVE', 'legacy', ?, v, 'FULL', ? "
    "FROM unnest(?::text[], ?::text[], ?::bytea[], ?::smallint[], ?::text[], ?::smallint[]) "
    "AS u(m, i, k, t, d, v) ON CONFLICT DO NOTHING RETURNING msisdn"
)


def _insert_legacy_cards_pg(
    tx: Tx, operator_id: str, import_id: str, cards: Sequence[LegacyCard], ts: Any
) -> set[str]:
    # One statement over column arrays: PostgreSQL's fastest insert short of COPY, and unlike
    # COPY it can skip rows that collide with a live card (ON CONFLICT) and say which.
    columns = (
        [c.msisdn for c in cards],
        [c.iccid for c in cards],
        [c.id_key for c in cards],
        [None if c.document_type is None else c.document_type.value for c in cards],
        [c.document_masked for c in cards],
        [1 if c.verified else 0 for c in cards],
    )
    rows = tx.all(_CARD_INSERT_PG, (operator_id, ts, import_id, *columns))
    return {str(r[0]) for r in rows}


def lock_holdings(tx: Tx, operator_id: str, keys: Sequence[bytes]) -> dict[bytes, int]:
    """The holders' slot counts with the operator, their rows locked until the transaction ends.

    An upsert that changes nothing: it creates a missing row at 0 and takes the row lock, so a
    concurrent activation or import of the same holder waits instead of counting past the cap.
    """
    if not keys:
        return {}
    ordered = sorted(set(keys))  # one lock order for every transaction: no deadlock
    conflict = (
        " ON CONFLICT (id_key, operator_id) DO UPDATE SET active = holdings.active "
        "RETURNING id_key, active"
    )
    if not tx.sqlite:
        rows = tx.all(
            "INSERT INTO holdings (id_key, operator_id, active) "  # noqa: S608
            "SELECT k, ?, 0 FROM unnest(?::bytea[]) AS u(k) ORDER BY k" + conflict,
            (operator_id, ordered),
        )
    else:
        params: list[Any] = []
        for key in ordered:
            params += (key, operator_id)
        rows = tx.all(
            "INSERT INTO holdings (id_key, operator_id, active) VALUES "  # noqa: S608
            + ", ".join(["(?, ?, 0)"] * len(ordered))
            + conflict,
            params,
        )
    return {bytes(r[0]): int(r[1]) for r in rows}


def add_holdings(tx: Tx, operator_id: str, counts: dict[bytes, int]) -> None:
    """Adds pre-policy cards to their holders' slot counts, beyond the cap if need be."""
    if not counts:
        return
    conflict = (
        " ON CONFLICT (id_key, operator_id) DO UPDATE SET active = holdings.active + "
        "excluded.active"
    )
    if not tx.sqlite:
        tx.execute(
            "INSERT INTO holdings (id_key, operator_id, active) "  # noqa: S608
            "SELECT k, ?, n FROM unnest(?::bytea[], ?::int[]) AS u(k, n)" + conflict,
            (operator_id, list(counts), list(counts.values())),
        )
        return
    params: list[Any] = []
    for key, count in counts.items():
        params += (key, operator_id, count)
    tx.execute(
        "INSERT INTO holdings (id_key, operator_id, active) VALUES "  # noqa: S608
        + ", ".join(["(?, ?, ?)"] * len(counts))
        + conflict,
        params,
    )


# -- completing registration --------------------------------------------------------------------


def verify_card(
    tx: Tx, card_id: int, id_key: bytes, document_type: DocumentType, masked: str
) -> bool:
    """Marks a live unverified card verified under a document; False if it changed meanwhile."""
    changed = tx.execute(
        "UPDATE cards SET verified = 1, id_key = ?, document_type = ?, "  # noqa: S608
        "document_masked = ?, "
        f"service_stage = 'FULL' WHERE id = ? AND verified = 0 AND {_LIVE}",
        (id_key, document_type.value, masked, card_id),
    )
    return changed == 1


def live_msisdns_of_holder(tx: Tx, id_key: bytes, operator_id: str) -> list[str]:
    """The MSISDNs of the holder's slot-holding live cards with the operator, oldest first."""
    rows = tx.all(
        "SELECT msisdn FROM cards WHERE id_key = ? AND operator_id = ? "  # noqa: S608
        "AND verified = 1 "
        f"AND {_LIVE} ORDER BY id",
        (id_key, operator_id),
    )
    return [str(r[0]) for r in rows]


# -- deadline policies --------------------------------------------------------------------------


def set_policy(tx: Tx, policy: PolicyRecord) -> None:
    """Creates or replaces an operator's deadline policy."""
    tx.execute(
        "INSERT INTO legacy_deadline_policies (operator_id, deadline, grace_days, "
        "termination_days, updated_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (operator_id) DO UPDATE SET deadline = excluded.deadline, "
        "grace_days = excluded.grace_days, termination_days = excluded.termination_days, "
        "updated_at = excluded.updated_at",
        (
            policy.operator_id, date_param(tx, policy.deadline), policy.grace_days,
            policy.termination_days, tx.timestamp(policy.updated_at),
        ),
    )  # fmt: skip


def _policy(tx: Tx, row: tuple[Any, ...]) -> PolicyRecord:
    updated = tx.parse_timestamp(row[4])
    assert updated is not None
    return PolicyRecord(row[0], parse_date(row[1]), int(row[2]), int(row[3]), updated)


def get_policy(tx: Tx, operator_id: str) -> PolicyRecord | None:
    """The operator's deadline policy, or None."""
    row = tx.one(
        "SELECT operator_id, deadline, grace_days, termination_days, updated_at "
        "FROM legacy_deadline_policies WHERE operator_id = ?",
        (operator_id,),
    )
    return None if row is None else _policy(tx, row)


def all_policies(tx: Tx) -> list[PolicyRecord]:
    """Every operator's deadline policy."""
    rows = tx.all(
        "SELECT operator_id, deadline, grace_days, termination_days, updated_at "
        "FROM legacy_deadline_policies ORDER BY operator_id"
    )
    return [_policy(tx, r) for r in rows]


# -- the sweep ----------------------------------------------------------------------------------


def max_card_id(tx: Tx) -> int:
    """The highest card id (0 when there is none)."""
    row = tx.one("SELECT MAX(id) FROM cards")
    return 0 if row is None or row[0] is None else int(row[0])


def sweep_progress(tx: Tx, day: dt.date) -> tuple[int, bool] | None:
    """(last card id done, finished) of the sweep for a date, or None if never started."""
    row = tx.one(
        "SELECT last_card_id, finished_at FROM legacy_sweeps WHERE sweep_date = ?",
        (date_param(tx, day),),
    )
    return None if row is None else (int(row[0]), row[1] is not None)


def start_sweep(tx: Tx, day: dt.date, now: dt.datetime) -> None:
    """(Re)starts the sweep of a date from the first card."""
    tx.execute(
        "INSERT INTO legacy_sweeps (sweep_date, last_card_id, started_at) VALUES (?, 0, ?) "
        "ON CONFLICT (sweep_date) DO UPDATE SET last_card_id = 0, "
        "started_at = excluded.started_at, finished_at = NULL",
        (date_param(tx, day), tx.timestamp(now)),
    )


def record_sweep_batch(tx: Tx, day: dt.date, last_id: int, finished_at: dt.datetime | None) -> None:
    """Records that every card up to ``last_id`` is swept (in the batch's transaction)."""
    tx.execute(
        "UPDATE legacy_sweeps SET last_card_id = ?, finished_at = ? WHERE sweep_date = ?",
        (last_id, tx.timestamp(finished_at), date_param(tx, day)),
    )


_UNVERIFIED_IN_RANGE = f"id > ? AND id <= ? AND operator_id = ? AND verified = 0 AND {_LIVE}"


# A notice of a stage to the card being updated that has taken effect by a date (the stage is one
# of _NOTICE_STAGES, inlined; the date is the parameter). A key lookup on legacy_notices' primary
# key (card_id, stage).
_NOTICE_STAGES = frozenset({"OUTGOING_BARRED", "ALL_BARRED", "TERMINATED"})
_NOTICE_IN_FORCE = (
    "EXISTS (SELECT 1 FROM legacy_notices n WHERE n.card_id = cards.id AND n.stage = '{stage}' "
    "AND n.effective_on <= ?)"
)


def _in_force(stage: str) -> str:
    if stage not in _NOTICE_STAGES:
        raise ValueError(f"not a noticed stage: {stage}")
    return _NOTICE_IN_FORCE.format(stage=stage)


def set_stages(
    tx: Tx, lo: int, hi: int, operator_id: str, *, barring: Sequence[str], day: dt.date
) -> dict[str, int]:
    """Puts each of the operator's unverified live cards with ids in (lo, hi] at the first stage
    of ``barring`` (most severe first) whose notice to the card took effect by ``day``, or at
    FULL if none did; returns how many cards moved to each stage."""
    target = "'FULL'"
    params: list[Any] = []
    if barring:
        cases = " ".join(f"WHEN {_in_force(stage)} THEN '{stage}'" for stage in barring)
        target = f"CASE {cases} ELSE 'FULL' END"
        params = [date_param(tx, day)] * len(barring)
    rows = tx.all(
        f"UPDATE cards SET service_stage = {target} WHERE {_UNVERIFIED_IN_RANGE} "  # noqa: S608
        f"AND service_stage <> {target} RETURNING service_stage",
        (*params, lo, hi, operator_id, *params),
    )
    moved: dict[str, int] = {}
    for (stage,) in rows:
        moved[str(stage)] = moved.get(str(stage), 0) + 1
    return moved


def terminate(tx: Tx, lo: int, hi: int, operator_id: str, now: dt.datetime, *, day: dt.date) -> int:
    """Deactivates the operator's unverified live cards with ids in (lo, hi] whose termination
    notice took effect by ``day``."""
    return tx.execute(
        "UPDATE cards SET state = 'DEACTIVATED', deactivated_at = ?, "  # noqa: S608
        f"service_stage = 'ALL_BARRED' WHERE {_UNVERIFIED_IN_RANGE} AND {_in_force('TERMINATED')}",
        (tx.timestamp(now), lo, hi, operator_id, date_param(tx, day)),
    )


def add_notices(
    tx: Tx,
    lo: int,
    hi: int,
    operator_id: str,
    *,
    stage: str,
    effective: dt.date,
    now: dt.datetime,
    after: str | None,
    day: dt.date,
) -> list[str]:
    """Owes a notice of ``stage`` to each unverified live card in (lo, hi] not yet noticed —
    with ``after``, only to cards whose notice of stage ``after`` took effect by ``day``.

    Returns the MSISDNs noticed now (a re-run adds none: the key is (card, stage)).
    """
    prior, params = "", []
    if after is not None:
        prior, params = f" AND {_in_force(after)}", [date_param(tx, day)]
    rows = tx.all(
        "INSERT INTO legacy_notices (card_id, stage, operator_id, msisdn, "  # noqa: S608
        "effective_on, created_at) SELECT id, ?, operator_id, msisdn, ?, ? FROM cards "
        f"WHERE {_UNVERIFIED_IN_RANGE}{prior} ON CONFLICT DO NOTHING RETURNING msisdn",
        (stage, date_param(tx, effective), tx.timestamp(now), lo, hi, operator_id, *params),
    )
    return [str(r[0]) for r in rows]
