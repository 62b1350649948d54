"""The regulator's compliance figures, computed from the live tables and daily snapshots."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, field

from registry.clock import Clock, utc_now
from services.domain.errors import NotFound
from services.storage import cards_repo
from services.storage import compliance_repo as repo
from services.storage.database import Database
from services.storage.rawsql import Tx

# The policy's milestones: 95 % of active cards verified by a date, all of them by the deadline.
DEFAULT_TARGETS = "0.95@2026-12-31,1.00@2027-06-30"
STAGES = ("FULL", "OUTGOING_BARRED", "ALL_BARRED", "SUSPENDED", "PENDING_DELIVERY")


@dataclass(frozen=True)
class Target:
    """A real-name rate to reach by a date."""

    rate: float
    due: dt.date


def parse_targets(text: str) -> list[Target]:
    """Parses ``rate@YYYY-MM-DD,...`` (rates in 0..1); raises ValueError on anything else."""
    targets = []
    for part in text.split(","):
        rate, _, due = part.strip().partition("@")
        value = float(rate)
        if not 0 < value <= 1:
            raise ValueError(f"a target rate must be in (0, 1], not {rate!r}")
        targets.append(Target(value, dt.date.fromisoformat(due)))
    return sorted(targets, key=lambda t: t.due)


@dataclass
class OperatorFigures:
    """One operator's figures."""

    operator: str
    kind: str
    live_cards: int = 0
    verified_cards: int = 0
    documents_by_cards: list[int] = field(default_factory=lambda: [0] * 6)
    documents_over_cap: int = 0
    cards_by_stage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    disputes_opened: int = 0
    disputes_resolved: int = 0
    agents_flagged: int = 0
    agents_suspended: int = 0
    stores_authorized: int = 0
    stores_revoked: int = 0
    enforcement_actions: int = 0

    @property
    def real_name_rate(self) -> float | None:
        """Verified live cards over live cards; None with no cards (no data, not 100 %)."""
        return rate_of(self.live_cards, self.verified_cards)

    def meets(self, target: Target) -> bool | None:
        """Whether the rate meets ``target`` now; None with no cards (nothing to judge)."""
        return None if self.live_cards == 0 else self.shortfall(target) == 0

    def shortfall(self, target: Target) -> int:
        """Verified cards missing to meet ``target`` now."""
        needed = math.ceil(target.rate * self.live_cards - 1e-9)
        return max(0, needed - self.verified_cards)


def rate_of(live: int, verified: int) -> float | None:
    """Verified over live cards; None when there are no live cards."""
    return None if live == 0 else verified / live


@dataclass
class ProvinceFigures:
    """Live and verified cards of documents issued in one province."""

    province: str
    live_cards: int = 0
    verified_cards: int = 0

    @property
    def real_name_rate(self) -> float:
        """Verified over live (1 with no cards)."""
        return 1.0 if self.live_cards == 0 else self.verified_cards / self.live_cards


@dataclass(frozen=True)
class Report:
    """Everything the compliance report shows."""

    computed_at: dt.datetime
    targets: list[Target]
    operators: list[OperatorFigures]
    provinces: list[ProvinceFigures]
    history: list[tuple[str, str, float | None]]


class ComplianceDesk:
    """Computes the report and records the daily snapshots its charts draw over time."""

    def __init__(
        self, db: Database, targets: list[Target] | None = None, clock: Clock = utc_now
    ) -> None:
        self._db = db
        self.targets = targets if targets is not None else parse_targets(DEFAULT_TARGETS)
        self._clock = clock

    def report(self, operator_id: str | None = None) -> Report:
        """Computes every figure now, for one operator or all of them."""

        def work(tx: Tx) -> Report:
            operators = cards_repo.all_operators(tx)
            if operator_id is not None and operator_id not in operators:
                raise NotFound(f"no operator {operator_id!r}", reason="UNKNOWN_OPERATOR")
            chosen = [operator_id] if operator_id else sorted(operators)
            figures = {op: OperatorFigures(op, operators[op].kind) for op in chosen}
            provinces: dict[str, ProvinceFigures] = defaultdict(lambda: ProvinceFigures(""))
            for group in repo.card_groups(tx, operator_id):
                f = figures.get(group.operator_id)
                if f is None:
                    continue
                f.live_cards += group.count
                f.verified_cards += group.count if group.verified else 0
                stage = group.state if group.state in STAGES else group.stage
                f.cards_by_stage[stage] = f.cards_by_stage.get(stage, 0) + group.count
                p = provinces[group.province]
                p.province = group.province
                p.live_cards += group.count
                p.verified_cards += group.count if group.verified else 0
            for op, held in repo.documents_by_cards(tx).items():
                if op in figures:
                    figures[op].documents_by_cards = held
            for op, count in repo.documents_over_cap(tx).items():
                if op in figures:
                    figures[op].documents_over_cap = count
            _merge(figures, repo.disputes(tx), "disputes_opened", "disputes_resolved")
            _merge(figures, repo.agents(tx), "agents_flagged", "agents_suspended")
            _merge(figures, repo.stores(tx), "stores_authorized", "stores_revoked")
            for op, count in repo.enforcement(tx).items():
                if op in figures:
                    figures[op].enforcement_actions = count
            history = [
                (day, op, rate_of(live, verified))
                for day, op, live, verified in repo.snapshots(tx, operator_id)
            ]
            return Report(
                computed_at=self._clock(),
                targets=self.targets,
                operators=[figures[op] for op in chosen],
                provinces=sorted(provinces.values(), key=lambda p: p.province),
                history=history,
            )

        return self._db.run_tx(work, readonly=True)

    def snapshot(self, day: dt.date | None = None) -> int:
        """Records today's (or ``day``'s) rate per operator; returns the operators recorded."""
        report = self.report()
        when = (day or (self._clock() + dt.timedelta(hours=8)).date()).isoformat()

        def work(tx: Tx) -> int:
            for f in report.operators:
                repo.upsert_snapshot(tx, when, f.operator, f.live_cards, f.verified_cards)
            return len(report.operators)

        return self._db.run_tx(work)


def _merge(
    figures: dict[str, OperatorFigures],
    pair: tuple[dict[str, int], dict[str, int]],
    first: str,
    second: str,
) -> None:
    for name, counts in zip((first, second), pair, strict=True):
        for op, count in counts.items():
            if op in figures:
                setattr(figures[op], name, count)
