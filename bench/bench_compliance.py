"""The compliance report's run time on a loaded PostgreSQL database (issue 7: ≤ 10 s at 10M cards).

Called by the scale phase of `make bench` on the database it loaded with 10,000,000 cards; the
report runs through the same ComplianceDesk the ComplianceService answers with.
"""

from __future__ import annotations

import time

from services.features.compliance import ComplianceDesk
from services.storage.database import Database, DatabaseConfig

REPORT_TARGET_SECONDS = 10.0


def time_report(url: str, rounds: int = 3) -> dict[str, float]:
    """Runs the full report ``rounds`` times; returns the best and worst seconds, and the cards."""
    db = Database(DatabaseConfig(url))
    try:
        desk = ComplianceDesk(db)
        seconds = []
        live = 0
        for _ in range(rounds):
            started = time.perf_counter()
            report = desk.report()
            seconds.append(time.perf_counter() - started)
            live = sum(f.live_cards for f in report.operators)
    finally:
        db.dispose()
    return {"best_s": min(seconds), "worst_s": max(seconds), "live_cards": float(live)}


def report_lines(cards: int, timing: dict[str, float]) -> list[str]:
    """Markdown lines for the results file."""
    verdict = "met" if timing["worst_s"] <= REPORT_TARGET_SECONDS else "MISSED"
    return [
        "",
        f"### Compliance report over {cards:,} cards (PostgreSQL)",
        "",
        f"- Full report (every operator, province, stage and counter): best "
        f"{timing['best_s']:.2f} s, worst {timing['worst_s']:.2f} s of 3 runs over "
        f"{int(timing['live_cards']):,} live cards (target ≤ {REPORT_TARGET_SECONDS:.0f} s: "
        f"{verdict}).",
    ]
