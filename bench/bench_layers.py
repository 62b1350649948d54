"""What each per-call layer costs: CheckEligibility on SQLite with one layer switched off at a time.

Every configuration is a fresh `realname serve` (real mTLS, one process) on the same SQLite data
directory, driven by the same load client as `bench.run`; the layers are switched by real
configuration: ``REALNAME_LAYERS_OFF=audit`` / ``metrics`` / ``guards`` (bench-only switches of
`serve`; ``guards`` drops the activation guards, whose eligibility probes ride on
CheckEligibility's statement), ``REALNAME_RATE_PRINCIPAL=off`` and ``REALNAME_RATE_DOCUMENT=off``
(the rate limiters), and ``REALNAME_LOG_LEVEL=WARNING`` (the per-RPC log line). The
configurations run in alternating rounds and each row reports the lowest server CPU per call over
the rounds (the figure a shared machine disturbs least); a layer's cost is the default row's
figure minus its own.

Validation (the servicer's checks of the request) cannot be switched off without answering
wrongly, so its cost is measured in-process on the same requests. Run as
``python -m bench.bench_layers`` (`make bench`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import update_results_section
from bench.run import RESULTS_PATH, BenchConfig, Phase, dev_init, run_load, running, start_realname

RATES_OFF = {"REALNAME_RATE_PRINCIPAL": "off", "REALNAME_RATE_DOCUMENT": "off"}
CONFIGS: dict[str, dict[str, str]] = {
    "default (every layer on)": {},
    "audit off": {"REALNAME_LAYERS_OFF": "audit"},
    "rate limits off": RATES_OFF,
    "metrics off": {"REALNAME_LAYERS_OFF": "metrics"},
    "log line off": {"REALNAME_LOG_LEVEL": "WARNING"},
    "guards' probes off": {"REALNAME_LAYERS_OFF": "guards"},
    "audit, rate limits, metrics and log line off": {
        "REALNAME_LAYERS_OFF": "audit,metrics",
        "REALNAME_LOG_LEVEL": "WARNING",
        **RATES_OFF,
    },
    "all five off": {
        "REALNAME_LAYERS_OFF": "audit,metrics,guards",
        "REALNAME_LOG_LEVEL": "WARNING",
        **RATES_OFF,
    },
}


def server_ms_per_call(phase: Phase) -> float:
    """Server process CPU milliseconds per completed call over the measured window."""
    share = next(iter(phase.result["server_cpu_pct"].values()))
    return float(10 * share / phase.result["rps"]) if phase.result["rps"] else float("nan")


def validation_us_per_call(calls: int = 20000) -> float:
    """In-process CPU microseconds of the servicer's request checks for one CheckEligibility."""
    from bench.load import CHECK_DOCUMENTS, CHECK_REGION, resident_id
    from services.domain import validation
    from services.domain.errors import Violations
    from services.proto.realname.v1 import common_pb2

    today = dt.date.today()
    numbers = [resident_id(CHECK_REGION, i) for i in range(CHECK_DOCUMENTS)]
    kind = common_pb2.DOCUMENT_TYPE_RESIDENT_ID_CARD
    card = common_pb2.CARD_TYPE_PERSONAL
    start = time.process_time()
    for n in range(calls):
        v = Violations()
        validation.check_document(v, kind, numbers[n % len(numbers)], today)
        validation.check_card_type(v, card, industry=False)
        v.raise_if_any()
    return 1e6 * (time.process_time() - start) / calls


def main() -> int:
    """Runs the rounds and prints (and files in the results) the per-layer table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    cfg = BenchConfig(args.concurrency, 1, args.warmup, args.duration)
    load_start = os.getloadavg()[0]
    best: dict[str, list[float]] = {name: [] for name in CONFIGS}
    rps: dict[str, list[float]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="realname-layers-") as tmp:
        data_dir = Path(tmp)
        dev_init(data_dir, None)
        for round_no in range(args.rounds):
            print(f"round {round_no + 1}/{args.rounds}", flush=True)
            for name, env in CONFIGS.items():
                server = start_realname(data_dir, "sqlite", None, extra_env=env)
                with running(server, data_dir / "dev-pki"):
                    phase = run_load(
                        server, data_dir / "dev-pki", "check", "sqlite", cfg, [server.proc.pid]
                    )
                if phase.unexpected:
                    print(f"!!! {name}: unexpected outcomes {phase.unexpected}")
                    return 1
                best[name].append(server_ms_per_call(phase))
                rps[name].append(phase.result["rps"])
    validation_us = validation_us_per_call()
    load_end = os.getloadavg()[0]
    default = min(best["default (every layer on)"])
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Per-layer cost, CheckEligibility on SQLite ({when}, load average {load_start:.1f} at "
        f"start, {load_end:.1f} at end; {args.rounds} rounds of {args.duration:g} s, "
        f"{args.concurrency} calls in flight; lowest server CPU per call of the rounds)",
        "",
        "| configuration | srv CPU ms/call (rounds) | layer's cost ms/call | RPC/s (best) |",
        "| --- | --: | --: | --: |",
    ]
    for name in CONFIGS:
        low = min(best[name])
        rounds = ", ".join(f"{v:.3f}" for v in best[name])
        cost = "—" if name.startswith("default") else f"{default - low:+.3f}"
        lines.append(f"| {name} | {low:.3f} ({rounds}) | {cost} | {max(rps[name]):,.0f} |")
    validation_ms = validation_us / 1000
    lines.append(f"| validation (in-process, not switchable) | — | {validation_ms:.3f} | — |")
    table = "\n".join(lines)
    print(table)
    update_results_section(RESULTS_PATH, "layers", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
