"""The compliance report's SQL: a few grouped scans that stay fast on tens of millions of cards."""

from __future__ import annotations

from dataclasses import dataclass

from services.storage.rawsql import Tx


@dataclass(frozen=True)
class CardGroup:
    """Live cards of one operator sharing state, verification, stage and province."""

    operator_id: str
    state: str
    verified: bool
    stage: str
    province: str
    count: int


# One pass over the live cards answers the rate, the stages and the provinces together.
_CARD_GROUPS = (
    "SELECT operator_id, state, verified, service_stage, "
    "CASE WHEN document_type = 1 THEN substr(document_masked, 1, 2) ELSE 'other' END, "
    "count(*) FROM cards WHERE state <> 'DEACTIVATED' {where}GROUP BY 1, 2, 3, 4, 5"
)


def card_groups(tx: Tx, operator_id: str | None) -> list[CardGroup]:
    """Live cards grouped by operator, state, verification, stage and province."""
    where, params = ("AND operator_id = ? ", (operator_id,)) if operator_id else ("", ())
    rows = tx.all(_CARD_GROUPS.format(where=where), params)
    return [
        CardGroup(str(r[0]), str(r[1]), bool(r[2]), str(r[3]), str(r[4]), int(r[5])) for r in rows
    ]


def documents_by_cards(tx: Tx) -> dict[str, list[int]]:
    """Per operator, how many documents hold 1, 2, 3, 4, 5 and more than 5 cards."""
    rows = tx.all(
        "SELECT operator_id, CASE WHEN active > 5 THEN 6 ELSE active END, count(*) "
        "FROM holdings WHERE active > 0 GROUP BY 1, 2"
    )
    out: dict[str, list[int]] = {}
    for operator_id, held, count in rows:
        out.setdefault(str(operator_id), [0] * 6)[int(held) - 1] = int(count)
    return out


def documents_over_cap(tx: Tx) -> dict[str, int]:
    """Per operator, documents holding more live cards than its cap (grandfathered legacy)."""
    return _counts(
        tx,
        "SELECT h.operator_id, count(*) FROM holdings h JOIN operators o ON o.id = h.operator_id "
        "WHERE h.active > o.card_limit GROUP BY 1",
    )


def _counts(tx: Tx, sql: str) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in tx.all(sql)}


def disputes(tx: Tx) -> tuple[dict[str, int], dict[str, int]]:
    """Disputes opened (all) and resolved, per operator."""
    opened = _counts(tx, "SELECT operator_id, count(*) FROM disputes GROUP BY 1")
    resolved = _counts(
        tx, "SELECT operator_id, count(*) FROM disputes WHERE state = 'RESOLVED' GROUP BY 1"
    )
    return opened, resolved


def agents(tx: Tx) -> tuple[dict[str, int], dict[str, int]]:
    """Agents with at least one fraud signal, and agents suspended, per operator."""
    flagged = _counts(
        tx, "SELECT operator_id, count(DISTINCT agent_id) FROM agent_signals GROUP BY 1"
    )
    suspended = _counts(
        tx, "SELECT operator_id, count(*) FROM agents WHERE status = 'SUSPENDED' GROUP BY 1"
    )
    return flagged, suspended


def stores(tx: Tx) -> tuple[dict[str, int], dict[str, int]]:
    """Store authorizations in force and revoked, per operator."""
    authorized = _counts(
        tx,
        "SELECT operator, count(*) FROM authz_authorizations "
        "WHERE revoked_at IS NULL AND is_current = TRUE GROUP BY 1",
    )
    revoked = _counts(
        tx,
        "SELECT operator, count(*) FROM authz_authorizations WHERE revoked_at IS NOT NULL "
        "GROUP BY 1",
    )
    return authorized, revoked


def enforcement(tx: Tx) -> dict[str, int]:
    """Enforcement actions recorded, per operator."""
    return _counts(tx, "SELECT operator_id, count(*) FROM enforcement_actions GROUP BY 1")


def upsert_snapshot(tx: Tx, day: str, operator_id: str, live: int, verified: int) -> None:
    """Records (or refreshes) one operator's figures for a day."""
    tx.execute(
        "INSERT INTO compliance_snapshots (day, operator_id, live_cards, verified_cards) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (day, operator_id) DO UPDATE SET "
        "live_cards = excluded.live_cards, verified_cards = excluded.verified_cards",
        (day, operator_id, live, verified),
    )


def snapshots(tx: Tx, operator_id: str | None) -> list[tuple[str, str, int, int]]:
    """(day, operator, live, verified) rows, oldest first."""
    if operator_id:
        rows = tx.all(
            "SELECT day, operator_id, live_cards, verified_cards FROM compliance_snapshots "
            "WHERE operator_id = ? ORDER BY day, operator_id",
            (operator_id,),
        )
    else:
        rows = tx.all(
            "SELECT day, operator_id, live_cards, verified_cards FROM compliance_snapshots "
            "ORDER BY day, operator_id"
        )
    return [(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]
