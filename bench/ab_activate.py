"""A/B of ActivateCard on PostgreSQL: two source trees' servers alternated in one run.

``python -m bench.ab_activate --a /tmp/base-tree --b .`` starts `realname serve` from each tree
in turn (PYTHONPATH puts the tree's ``services`` first, the venv is shared), each on a fresh
database of one PostgreSQL server (embedded, or $REALNAME_BENCH_DATABASE_URL), and runs the
``activate`` and ``hot`` workloads against it; the bare grpcio baseline is measured first and
last. Rounds alternate A, B, A, B, … so a shared machine's drift falls on both variants alike.
Prints one line per phase and a summary of the means per variant (RPC/s, ratio to the baseline,
server and PostgreSQL CPU per call).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from bench.common import source_tree_env
from bench.postgres import fresh_database, postgres_server, server_facts
from bench.run import (
    BenchConfig,
    Phase,
    baseline_phase,
    dev_init,
    run_load,
    running,
    start_realname,
)

WORKLOADS = ("activate", "hot")


def variant_phases(
    tree: Path, label: str, data_dir: Path, server_url: str, cfg: BenchConfig
) -> list[Phase]:
    """One server of ``tree`` on a fresh database: every workload once."""
    with fresh_database(server_url) as url:
        dev_init(data_dir, url)
        pid = server_facts(url).get("postmaster_pid")
        env = source_tree_env(tree)
        server = start_realname(data_dir, f"postgresql-{label}", url, extra_env=env)
        with running(server, data_dir / "dev-pki"):
            watch = [server.proc.pid] + ([int(pid)] if pid else [])
            return [run_load(server, data_dir / "dev-pki", w, label, cfg, watch) for w in WORKLOADS]


def per_call_ms(phase: Phase, index: int) -> float:
    """CPU ms per completed call of the ``index``-th watched process tree."""
    shares = list(phase.result["server_cpu_pct"].values())
    if len(shares) <= index or not phase.result["rps"]:
        return float("nan")
    return 10 * shares[index] / phase.result["rps"]


def main() -> int:
    """Runs the rounds and prints the summary; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--a", type=Path, required=True, help="source tree of variant A")
    parser.add_argument("--b", type=Path, required=True, help="source tree of variant B")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args()
    cfg = BenchConfig(args.concurrency, 1, args.warmup, args.duration)
    data_dir = Path(tempfile.mkdtemp(prefix="realname-ab-"))
    dev_init(data_dir, None)
    results: dict[str, list[Phase]] = {"A": [], "B": []}
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with postgres_server() as pg:
        print(f"PostgreSQL: {pg.source}")
        baselines = [baseline_phase(data_dir, cfg, "baseline-first")]
        for _round in range(args.rounds):
            for label, tree in (("A", args.a), ("B", args.b)):
                results[label] += variant_phases(tree, label, data_dir, pg.url, cfg)
        baselines.append(baseline_phase(data_dir, cfg, "baseline-last"))
    base = statistics.mean(b.result["rps"] for b in baselines)
    print(f"\nbaseline {base:.0f} RPC/s (first/last "
          + "/".join(f"{b.result['rps']:.0f}" for b in baselines)
          + f"); load average at end: {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("variant workload  RPC/s (each round)        mean  ratio  srv ms/call  pg ms/call  OK")
    for label in ("A", "B"):
        for workload in WORKLOADS:
            phases = [p for p in results[label] if p.workload == workload]
            rps = [p.result["rps"] for p in phases]
            srv = statistics.mean(per_call_ms(p, 0) for p in phases)
            pg_ms = statistics.mean(per_call_ms(p, 1) for p in phases)
            oks = [p.result["all_codes"].get("OK", 0) for p in phases]
            print(
                f"{label:<7} {workload:<9} {' '.join(f'{r:6.0f}' for r in rps):<25} "
                f"{statistics.mean(rps):6.0f}  {statistics.mean(rps) / base:5.3f}  "
                f"{srv:11.2f}  {pg_ms:10.2f}  {oks}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
