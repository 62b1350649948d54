"""SQL for enterprises, their scenarios and quota, and the per-session card read.

Hand-written SQL on the driver connection (see ``rawsql``); the tables are those of
``industry_schema`` and ``schema``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from registry.subscribers import DocumentType
from services.domain import audit
from services.domain.cards import CardState, CardType, ServiceStage, Suspension
from services.domain.records import EnterpriseRow, ScenarioRow
from services.storage.rawsql import Tx

_DEACTIVATED = CardState.DEACTIVATED.value


@dataclass(frozen=True)
class IndustryTarget:
    """What activating or checking an industry card needs to know about its enterprise."""

    responsible_key: bytes
    active: int
    card_quota: int
    scenario_declared: bool


@dataclass(frozen=True)
class SessionCard:
    """The few columns AuthorizeService decides on, with the scenario's APNs for industry cards."""

    id: int
    msisdn: str
    card_type: CardType
    state: CardState
    service_stage: ServiceStage
    suspension: str | None
    bound_imei: str | None
    scenario: str | None
    apns: tuple[str, ...] | None  # None: the card's scenario is no longer declared


def insert_enterprise(
    tx: Tx,
    *,
    operator_id: str,
    credit_code: str,
    name: str,
    responsible_key: bytes,
    responsible_type: DocumentType,
    responsible_masked: str,
    card_quota: int,
    now: dt.datetime,
) -> bool:
    """Inserts an enterprise; False if the operator already has one with this credit code."""
    inserted = tx.execute(
        "INSERT INTO enterprises (operator_id, credit_code, name, responsible_key, "
        "responsible_type, responsible_masked, card_quota, active, registered_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT DO NOTHING",
        (
            operator_id, credit_code, name, responsible_key, responsible_type.value,
            responsible_masked, card_quota, tx.timestamp(now),
        ),
    )  # fmt: skip
    return inserted == 1


def replace_scenarios(
    tx: Tx, operator_id: str, credit_code: str, scenarios: tuple[ScenarioRow, ...]
) -> None:
    """Makes ``scenarios`` the enterprise's complete set of declared scenarios."""
    tx.execute(
        "DELETE FROM enterprise_scenarios WHERE operator_id = ? AND credit_code = ?",
        (operator_id, credit_code),
    )
    for scenario in scenarios:
        tx.execute(
            "INSERT INTO enterprise_scenarios (operator_id, credit_code, scenario, apns) "
            "VALUES (?, ?, ?, ?)",
            (operator_id, credit_code, scenario.name, json.dumps(list(scenario.apns))),
        )


_ENTERPRISE_COLUMNS = (
    "operator_id, credit_code, name, responsible_key, responsible_type, responsible_masked, "
    "card_quota, active, registered_at"
)


def _scenarios(tx: Tx, operator_id: str, codes: list[str]) -> dict[str, list[ScenarioRow]]:
    found: dict[str, list[ScenarioRow]] = {code: [] for code in codes}
    if not codes:
        return found
    marks = ", ".join("?" for _ in codes)
    rows = tx.all(
        "SELECT credit_code, scenario, apns FROM enterprise_scenarios "  # noqa: S608
        f"WHERE operator_id = ? AND credit_code IN ({marks}) ORDER BY credit_code, scenario",
        (operator_id, *codes),
    )
    for code, scenario, apns in rows:
        found[code].append(ScenarioRow(scenario, tuple(json.loads(apns))))
    return found


def _enterprises(tx: Tx, operator_id: str, rows: list[tuple[Any, ...]]) -> list[EnterpriseRow]:
    scenarios = _scenarios(tx, operator_id, [str(r[1]) for r in rows])
    out = []
    for row in rows:
        op_id, code, name, key, doc_type, masked, quota, active, registered = row
        audit.note_subject(bytes(key))  # the responsible person's document
        registered_at = tx.parse_timestamp(registered)
        assert registered_at is not None
        out.append(
            EnterpriseRow(
                str(op_id), str(code), str(name), bytes(key), DocumentType(doc_type),
                str(masked), int(quota), int(active), registered_at, tuple(scenarios[str(code)]),
            )
        )  # fmt: skip
    return out


def enterprise(tx: Tx, operator_id: str, credit_code: str) -> EnterpriseRow | None:
    """Loads one of the operator's enterprises with its scenarios, or None."""
    row = tx.one(
        f"SELECT {_ENTERPRISE_COLUMNS} FROM enterprises "  # noqa: S608
        "WHERE operator_id = ? AND credit_code = ?",
        (operator_id, credit_code),
    )
    return None if row is None else _enterprises(tx, operator_id, [row])[0]


def list_enterprises(tx: Tx, operator_id: str, after: str, limit: int) -> list[EnterpriseRow]:
    """The operator's enterprises with credit codes after ``after``, in code order."""
    rows = tx.all(
        f"SELECT {_ENTERPRISE_COLUMNS} FROM enterprises "  # noqa: S608
        "WHERE operator_id = ? AND credit_code > ? ORDER BY credit_code LIMIT ?",
        (operator_id, after, limit),
    )
    return _enterprises(tx, operator_id, rows)


def industry_target(
    tx: Tx, operator_id: str, credit_code: str, scenario: str
) -> IndustryTarget | None:
    """The enterprise's responsible person, quota and whether the scenario is declared."""
    row = tx.one(
        "SELECT e.responsible_key, e.active, e.card_quota, s.scenario FROM enterprises e "
        "LEFT JOIN enterprise_scenarios s ON s.operator_id = e.operator_id "
        "AND s.credit_code = e.credit_code AND s.scenario = ? "
        "WHERE e.operator_id = ? AND e.credit_code = ?",
        (scenario, operator_id, credit_code),
    )
    if row is None:
        return None
    return IndustryTarget(bytes(row[0]), int(row[1]), int(row[2]), row[3] is not None)


# Like ``cards_repo.claim_slot``: the checks and the increment are one statement, so concurrent
# activations for one enterprise serialise on its row (row lock, or SQLite's write lock). It
# claims only for the responsible person's document and a declared scenario.
_CLAIM_QUOTA = (
    "UPDATE enterprises SET active = active + 1 "
    "WHERE operator_id = ? AND credit_code = ? AND active < card_quota AND responsible_key = ? "
    "AND EXISTS (SELECT 1 FROM enterprise_scenarios s WHERE s.operator_id = ? "
    "AND s.credit_code = ? AND s.scenario = ?) RETURNING active"
)


def claim_quota(
    tx: Tx, operator_id: str, credit_code: str, scenario: str, responsible_key: bytes
) -> bool:
    """Takes one card of the enterprise's quota; False when any condition fails."""
    row = tx.one(
        _CLAIM_QUOTA,
        (operator_id, credit_code, responsible_key, operator_id, credit_code, scenario),
    )
    return row is not None


def lock_enterprise(tx: Tx, operator_id: str, credit_code: str) -> bool:
    """Locks the enterprise's row against concurrent claims; False if there is no such row."""
    changed = tx.execute(
        "UPDATE enterprises SET active = active WHERE operator_id = ? AND credit_code = ?",
        (operator_id, credit_code),
    )
    return changed == 1


def release_quota(tx: Tx, operator_id: str, credit_code: str) -> None:
    """Gives back one card of the enterprise's quota."""
    tx.execute(
        "UPDATE enterprises SET active = active - 1 WHERE operator_id = ? AND credit_code = ?",
        (operator_id, credit_code),
    )


def live_cards_by_scenario(tx: Tx, operator_id: str, credit_code: str) -> dict[str, int]:
    """How many live cards the enterprise has in each scenario."""
    rows = tx.all(
        "SELECT scenario, COUNT(*) FROM cards WHERE enterprise_id = ? AND operator_id = ? "
        "AND state <> ? GROUP BY scenario",
        (credit_code, operator_id, _DEACTIVATED),
    )
    return {str(r[0]): int(r[1]) for r in rows}


# One indexed read per session: the live card if there is one, else the latest deactivated
# (ix_cards_operator_msisdn / ix_cards_operator_iccid), joined to its scenario's APNs.
_SESSION_CARD = (
    "SELECT c.id, c.msisdn, c.card_type, c.state, c.service_stage, c.suspension, "
    "c.bound_imei, c.scenario, s.apns, c.id_key FROM cards c "
    "LEFT JOIN enterprise_scenarios s ON s.operator_id = c.operator_id "
    "AND s.credit_code = c.enterprise_id AND s.scenario = c.scenario "
    "WHERE c.operator_id = ? AND c.{column} = ? "
    "ORDER BY CASE WHEN c.state = ? THEN 1 ELSE 0 END, c.id DESC LIMIT 1"
)
_SESSION_BY = {column: _SESSION_CARD.format(column=column) for column in ("msisdn", "iccid")}


def session_card(tx: Tx, operator_id: str, column: str, value: str) -> SessionCard | None:
    """The operator's card by ``msisdn`` or ``iccid``: the live one, else the latest one."""
    row = tx.one(_SESSION_BY[column], (operator_id, value, _DEACTIVATED))
    if row is None:
        return None
    card_id, msisdn, card_type, state, stage, suspension, imei, scenario, apns, id_key = row
    if id_key is not None:
        audit.note_subject(bytes(id_key))
    return SessionCard(
        int(card_id), str(msisdn), CardType(card_type), CardState(state), ServiceStage[stage],
        suspension, imei, scenario, None if apns is None else tuple(json.loads(apns)),
    )  # fmt: skip


def suspend_for_device(tx: Tx, card_id: int, suspension: str) -> bool:
    """Suspends an ACTIVE card in one statement; False if it was not ACTIVE any more."""
    changed = tx.execute(
        "UPDATE cards SET state = ?, suspension = ? WHERE id = ? AND state = ?",
        (CardState.SUSPENDED.value, suspension, card_id, CardState.ACTIVE.value),
    )
    return changed == 1


def rebind_device(tx: Tx, card_id: int, imei: str, *, lift: bool) -> bool:
    """Binds a card to ``imei``: an ACTIVE one, or with ``lift`` one SUSPENDED for
    DEVICE_MISMATCH, made ACTIVE. False if the card is not in that state any more."""
    if lift:
        changed = tx.execute(
            "UPDATE cards SET bound_imei = ?, state = ?, suspension = NULL "
            "WHERE id = ? AND state = ? AND suspension = ?",
            (imei, CardState.ACTIVE.value, card_id, CardState.SUSPENDED.value,
             Suspension.DEVICE_MISMATCH),
        )  # fmt: skip
    else:
        changed = tx.execute(
            "UPDATE cards SET bound_imei = ? WHERE id = ? AND state = ?",
            (imei, card_id, CardState.ACTIVE.value),
        )
    return changed == 1
