"""`make bench`: the real server against a bare grpcio baseline, same mTLS, same client, one run.

Phases, each a fresh load-client process against a server subprocess:
baseline (empty handler) → SQLite (CheckEligibility, ActivateCard distinct, ActivateCard hot)
→ PostgreSQL (the same three) → baseline again. The baseline is measured at both ends and
averaged, so a shared machine's drift during the run shows up instead of skewing the ratios.
Figures are printed, not asserted; the exit code is non-zero only when the harness or a
workload went wrong (unexpected errors, a server that would not start), not for a missed target.

Then, as module subprocesses adding their sections to the same results file: the feature benches,
PostgreSQL `--workers 1` vs 2 and default vs SERIALIZABLE (bench.bench_scale), CheckEligibility
p99 at 10,000 vs 10,000,000 cards, and the soak (bench.bench_soak); first of them the per-layer
costs (bench.bench_layers) and their instruction counts under callgrind
(bench.bench_instructions). `--only soak` (or `scale`, `workers`, `isolation`, `features`,
`layers`, `instructions`, `main`, comma-separated) runs just those.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.common import ServerProcess, free_port, start_process, wait_serving
from bench.postgres import fresh_database, postgres_server, server_facts

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "latest.md"
PKI_BENCH_MODULE = "bench.bench_pki_verify"

# Issue 17's targets: ratio of RPC/s to the baseline's RPC/s measured in the same run.
TARGETS: dict[tuple[str, str], float] = {
    ("check", "sqlite"): 0.50,
    ("check", "postgresql"): 0.40,
    ("activate", "postgresql"): 0.20,
}
WORKLOAD_TITLES = {
    "empty": "baseline: bare grpcio, empty handler",
    "check": "CheckEligibility (1000 rotating documents)",
    "activate": "ActivateCard, distinct documents",
    "hot": "ActivateCard, one hot document",
}
REAL_WORKLOADS = ("check", "activate", "hot")
BASELINE_DRIFT_WARNING = 0.20


@dataclass
class Phase:
    """One workload measured against one server."""

    workload: str
    backend: str
    result: dict[str, Any]

    @property
    def unexpected(self) -> dict[str, int]:
        """Error outcomes the workload should never produce."""
        return dict(self.result.get("unexpected", {}))


@dataclass
class BenchConfig:
    """Load shape shared by every phase."""

    concurrency: int
    channels: int
    warmup: float
    duration: float
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))


# ---------------------------------------------------------------------------------------------
# Processes


def realname_bin() -> str:
    """The `realname` console script of the interpreter running the bench."""
    path = Path(sys.executable).parent / "realname"
    found = str(path) if path.exists() else shutil.which("realname")
    if not found:
        raise RuntimeError("the realname console script is not installed (run `make venv`)")
    return found


def server_env(database_url: str | None) -> dict[str, str]:
    """The environment for realname commands: SQLite unless a database URL is given."""
    env = dict(os.environ)
    # An inherited URL would silently turn the SQLite phase into a second PostgreSQL phase.
    env.pop("REALNAME_DATABASE_URL", None)
    if database_url is not None:
        env["REALNAME_DATABASE_URL"] = database_url
    return env


def dev_init(data_dir: Path, database_url: str | None) -> None:
    """Runs `realname dev-init` (PKI, pepper, migrations, demo segments) for one backend."""
    done = subprocess.run(
        [realname_bin(), "dev-init", "--data-dir", str(data_dir)],
        env=server_env(database_url),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"realname dev-init failed ({done.returncode}):\n{done.stderr}")
    print(f"  {done.stdout.strip()}")


# Harness problems that do not stop the run but must fail it (e.g. an unclean server exit).
PROBLEMS: list[str] = []


@contextmanager
def running(server: ServerProcess, pki_dir: Path) -> Iterator[ServerProcess]:
    """Waits for health SERVING, yields the server, then stops it with SIGTERM."""
    try:
        wait_serving(server, pki_dir)
        yield server
    finally:
        code = server.stop()
        if code != 0:
            PROBLEMS.append(f"{server.name} exited with {code} after SIGTERM")
            print(f"!!! {server.name} exited with {code}; last log lines:\n{server.log_tail()}")


def start_baseline(data_dir: Path, label: str) -> ServerProcess:
    """Starts the bare grpcio server on a free port."""
    address = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "bench.baseline_server", "--address", address,
            "--pki-dir", str(data_dir / "dev-pki")]  # fmt: skip
    return start_process(label, argv, address, data_dir / f"{label}.log")


def start_realname(
    data_dir: Path,
    backend: str,
    database_url: str | None,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> ServerProcess:
    """Starts `realname serve` with real mTLS on free loopback ports."""
    address = f"127.0.0.1:{free_port()}"
    argv = [realname_bin(), "serve", "--data-dir", str(data_dir), "--grpc-address", address,
            "--http-address", f"127.0.0.1:{free_port()}", "--workers", str(workers),
            "--admin-address", f"127.0.0.1:{free_port()}"]  # fmt: skip
    return start_process(
        f"realname-{backend}", argv, address, data_dir / f"serve-{backend}.log",
        env={**server_env(database_url), **(extra_env or {})},
    )  # fmt: skip


def run_load(
    server: ServerProcess,
    pki_dir: Path,
    workload: str,
    backend: str,
    cfg: BenchConfig,
    watch: list[int],
) -> Phase:
    """Runs one load-client process and returns its parsed result."""
    argv = [
        sys.executable, "-m", "bench.load", "--target", server.address, "--pki-dir", str(pki_dir),
        "--workload", workload, "--concurrency", str(cfg.concurrency),
        "--channels", str(cfg.channels), "--warmup", str(cfg.warmup),
        "--duration", str(cfg.duration), "--run-id", cfg.run_id,
        *(arg for pid in watch for arg in ("--watch-pid", str(pid))),
    ]  # fmt: skip
    print(f"  {backend:<10} {workload:<9} ", end="", flush=True)
    done = subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, check=False,
        timeout=cfg.warmup + cfg.duration + 120,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"load client failed ({done.returncode}) on {workload}/{backend}:\n{done.stderr}\n"
            f"server log:\n{server.log_tail()}"
        )
    phase = Phase(workload, backend, json.loads(done.stdout.strip().splitlines()[-1]))
    r = phase.result
    print(
        f"{r['rps']:8.0f} RPC/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
        f"outcomes {r['all_codes']}"
    )
    if phase.unexpected:
        print(
            f"!!! UNEXPECTED ERRORS in {workload}/{backend}: {phase.unexpected}\n"
            + "".join(f"!!!   {s}\n" for s in r["error_samples"])
            + f"!!! server log tail:\n{server.log_tail(10)}"
        )
    return phase


# ---------------------------------------------------------------------------------------------
# Phases


def baseline_phase(data_dir: Path, cfg: BenchConfig, label: str) -> Phase:
    """Measures the bare grpcio server."""
    server = start_baseline(data_dir, label)
    with running(server, data_dir / "dev-pki"):
        return run_load(server, data_dir / "dev-pki", "empty", "baseline", cfg, [server.proc.pid])


def realname_phases(
    data_dir: Path,
    backend: str,
    cfg: BenchConfig,
    database_url: str | None,
    db_pid: int | None,
    *,
    workers: int = 1,
    workloads: tuple[str, ...] = REAL_WORKLOADS,
) -> list[Phase]:
    """Measures realname workloads against one server (``workers`` processes) on one backend."""
    server = start_realname(data_dir, backend, database_url, workers)
    with running(server, data_dir / "dev-pki"):
        # With --workers the parent only supervises: account the CPU of the forked workers.
        pids = [server.proc.pid] + [c.pid for c in psutil.Process(server.proc.pid).children()]
        watch = pids + ([db_pid] if db_pid is not None else [])
        return [
            run_load(server, data_dir / "dev-pki", workload, backend, cfg, watch)
            for workload in workloads
        ]


# ---------------------------------------------------------------------------------------------
# Report


def fs_type(path: Path) -> str:
    """The filesystem type under ``path`` (SQLite's fsync cost depends on it)."""
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        mount = parts[1]
        inside = str(path).startswith(mount.rstrip("/") + "/") or str(path) == mount
        if inside and len(mount) > len(best):
            best, kind = mount, parts[2]
    return f"{kind} ({best})"


def machine_facts(work_dir: Path) -> list[tuple[str, str]]:
    """Facts that bound the figures: cores, CPU, interpreter, libraries, load at start."""
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load1, load5, _ = os.getloadavg()

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return [
        ("nproc", f"{len(os.sched_getaffinity(0))} (cpu_count {os.cpu_count()}), {model}"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("grpcio", version("grpcio")),
        (
            "protobuf / sqlalchemy / psycopg",
            "/".join(map(version, ("protobuf", "sqlalchemy", "psycopg"))),
        ),
        ("kernel", platform.release()),
        ("load average at start", f"{load1:.2f} (1 min), {load5:.2f} (5 min)"),
        ("work dir filesystem", fs_type(work_dir)),
    ]


def fmt(value: float, digits: int = 1) -> str:
    """A number for the table, or n/a."""
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def outcome_text(phase: Phase) -> str:
    """The whole-run outcome split (warm-up + window + drain) in a few words."""
    codes = phase.result["all_codes"]
    parts = [f"{code} {n:,}" for code, n in sorted(codes.items(), key=lambda kv: -kv[1])]
    if phase.workload == "hot":
        reasons = phase.result["reasons_sampled"]
        limited = reasons.get("RESOURCE_EXHAUSTED/CARD_LIMIT_REACHED", 0)
        sampled = sum(reasons.values())
        parts.append(f"(CARD_LIMIT_REACHED {limited}/{sampled} sampled)")
        if codes.get("OK", 0) != 5:
            parts.append(f"!! expected exactly 5 OK, got {codes.get('OK', 0)}")
    return ", ".join(parts)


def cpu_text(phase: Phase) -> str:
    """Server CPU (watched trees, % of one core) / client CPU / machine busy %."""
    servers = "+".join(f"{v:.0f}" for v in phase.result["server_cpu_pct"].values())
    return (
        f"{servers} / {phase.result['client_cpu_pct']:.0f} / {phase.result['machine_busy_pct']:.0f}"
    )


def merge_baselines(baselines: list[Phase]) -> Phase:
    """One baseline row: mean RPC/s and latencies, summed outcomes, of both measurements."""
    results = [b.result for b in baselines]
    merged = dict(results[0])
    for key in ("rps", "p50_ms", "p99_ms", "client_cpu_pct", "machine_busy_pct"):
        merged[key] = sum(r[key] for r in results) / len(results)
    merged["server_cpu_pct"] = {
        "server": sum(sum(r["server_cpu_pct"].values()) for r in results) / len(results)
    }
    codes: dict[str, int] = {}
    for r in results:
        for code, n in r["all_codes"].items():
            codes[code] = codes.get(code, 0) + n
    merged["all_codes"] = codes
    merged["unexpected"] = {k: v for r in results for k, v in r["unexpected"].items()}
    return Phase("empty", "baseline", merged)


def cpu_per_call(phase: Phase) -> str:
    """CPU milliseconds the server process spent per completed call.

    Less sensitive to other tenants of a shared machine than RPC/s, so it is the figure to
    compare when judging an optimisation. The first watched process is the gRPC server.
    """
    shares = list(phase.result["server_cpu_pct"].values())
    if not shares or not phase.result["rps"]:
        return "n/a"
    return f"{10 * shares[0] / phase.result['rps']:.2f}"


def table_rows(phases: list[Phase], baseline_rps: float) -> list[list[str]]:
    """The result table: one row per workload and backend."""
    rows = []
    for p in phases:
        ratio = p.result["rps"] / baseline_rps if baseline_rps else math.nan
        target = TARGETS.get((p.workload, p.backend))
        if p.unexpected:
            verdict = "ERROR"
        elif target is None:
            verdict = "—"
        else:
            verdict = "PASS" if ratio >= target else "MISS"
        rows.append(
            [
                WORKLOAD_TITLES[p.workload],
                p.backend,
                fmt(p.result["rps"], 0),
                fmt(p.result["p50_ms"]),
                fmt(p.result["p99_ms"]),
                fmt(ratio, 2),
                f"≥ {target:.2f}" if target is not None else "—",
                verdict,
                cpu_text(p),
                cpu_per_call(p),
                outcome_text(p),
            ]
        )
    return rows


HEADERS = ["workload", "backend", "RPC/s", "p50 ms", "p99 ms", "ratio", "target", "verdict",
           "CPU % srv/cli/machine", "srv CPU ms/call", "outcomes (whole run)"]  # fmt: skip


def text_table(rows: list[list[str]]) -> str:
    """A fixed-width table for the terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    numeric = {2, 3, 4, 5, 9}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(HEADERS), rule, *(line(r) for r in rows)])


def markdown_table(rows: list[list[str]]) -> str:
    """The same table in Markdown, for bench/results/latest.md and docs/performance.md."""
    align = ["---", "---", "--:", "--:", "--:", "--:", "--:", ":-:", "--:", "--:", "---"]
    out = ["| " + " | ".join(HEADERS) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def notes(cfg: BenchConfig, baselines: list[Phase], pg_facts: dict[str, str] | None) -> list[str]:
    """How the figures were made, printed under the table."""
    lines = [
        f"Load: one load-client process (grpc.aio), {cfg.concurrency} calls in flight over "
        f"{cfg.channels} mTLS channel(s), {cfg.warmup:g} s warm-up then {cfg.duration:g} s "
        "measured; p50/p99 over calls completed in the measured window.",
        "Baseline: bare grpcio sync server, same thread pool and mTLS, empty unary handler; "
        "measured first and last, ratios use the mean ("
        + ", ".join(fmt(b.result["rps"], 0) for b in baselines)
        + " RPC/s).",
        "Servers: `realname serve` subprocesses at the default log level (one JSON line per RPC); "
        "SQLite in the data dir (WAL, synchronous=FULL).",
        "CPU: server process (+ PostgreSQL server processes) and client in % of one core, "
        "machine busy in % of all cores, over the measured window; srv CPU ms/call is the gRPC "
        "server process's CPU per completed call (steadier than RPC/s on a shared machine).",
    ]
    if pg_facts:
        lines.append(
            "PostgreSQL: "
            + ", ".join(f"{k} {v}" for k, v in pg_facts.items() if k != "postmaster_pid")
        )
    return lines


def write_markdown(
    facts: list[tuple[str, str]], rows: list[list[str]], note_lines: list[str], when: str
) -> None:
    """Writes the table and its context to bench/results/latest.md."""
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    body = [
        f"## Performance ({when})",
        "",
        *(f"- {k}: {v}" for k, v in facts),
        "",
        markdown_table(rows),
        "",
        *(f"- {n}" for n in note_lines),
        "",
    ]
    RESULTS_PATH.write_text("\n".join(body))


FEATURE_BENCHES = (
    PKI_BENCH_MODULE,
    "bench.bench_registry",
    "bench.bench_log",
    "bench.bench_delivery",
    "bench.bench_courier_browser",
    "bench.bench_legacy",
    "bench.bench_proofing",
)


def run_module_bench(module: str, *args: str) -> int:
    """Runs one feature bench module; returns its exit code."""
    print(f"\n=== {' '.join((module, *args))} ===", flush=True)
    code = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, check=False)
    if code.returncode != 0:
        print(f"!!! {module} failed with exit code {code.returncode}")
    return code.returncode


# Phases `--only` can pick; "main" is the table above, the others run as module subprocesses.
PHASES = (
    "main",
    "layers",
    "instructions",
    "features",
    "workers",
    "isolation",
    "ha",
    "scale",
    "soak",
)


def run_extra_phases(args: argparse.Namespace, only: set[str]) -> int:
    """Runs the selected phases after the main table; returns 1 if any of them failed."""
    codes = []
    if "layers" in only:
        codes.append(run_module_bench("bench.bench_layers"))
    if "instructions" in only:
        codes.append(run_module_bench("bench.bench_instructions"))
    if "features" in only and not args.skip_pki:
        codes += [run_module_bench(module) for module in FEATURE_BENCHES]
    shape = ["--concurrency", str(args.concurrency), "--warmup", str(args.warmup),
             "--duration", str(args.duration)]  # fmt: skip
    for phase in ("workers", "isolation", "ha"):
        if phase in only:
            codes.append(run_module_bench("bench.bench_scale", phase, *shape))
    if "scale" in only:
        codes.append(
            run_module_bench("bench.bench_scale", "scale", "--cards", str(args.scale_cards))
        )
    if "soak" in only:
        codes.append(run_module_bench("bench.bench_soak", "--seconds", f"{args.soak_seconds:g}"))
    return 1 if any(codes) else 0


# ---------------------------------------------------------------------------------------------
# Main


def measure(
    work_dir: Path, cfg: BenchConfig, backends: list[str]
) -> tuple[list[Phase], list[Phase], dict[str, str] | None]:
    """Runs every phase; returns (baselines, realname phases, PostgreSQL facts)."""
    data_dir = work_dir / "data"
    print("setup:")
    dev_init(data_dir, None)
    print("measure:")
    baselines = [baseline_phase(data_dir, cfg, "baseline-first")]
    phases: list[Phase] = []
    pg_facts: dict[str, str] | None = None
    if "sqlite" in backends:
        phases += realname_phases(data_dir, "sqlite", cfg, None, None)
        # The same server as two processes (--workers 2, SO_REUSEPORT); several connections
        # so the kernel spreads them. The baseline stays one process: this row shows scale-out.
        phases += realname_phases(
            data_dir, "sqlite, --workers 2", replace(cfg, channels=max(cfg.channels, 4)),
            None, None, workers=2, workloads=("check", "activate"),
        )  # fmt: skip
    if "postgresql" in backends:
        with postgres_server() as pg, fresh_database(pg.url) as url:
            # Same data dir (PKI, pepper); the URL points dev-init's migrations at PostgreSQL.
            dev_init(data_dir, url)
            pg_facts = {"source": pg.source, **server_facts(url)}
            pid = pg_facts.get("postmaster_pid")
            phases += realname_phases(data_dir, "postgresql", cfg, url, int(pid) if pid else None)
    baselines.append(baseline_phase(data_dir, cfg, "baseline-last"))
    return baselines, phases, pg_facts


def main(argv: list[str] | None = None) -> int:
    """Runs the whole bench and prints the table; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--channels", type=int, default=1, help="client channels (connections)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per phase")
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (server logs)")
    parser.add_argument(
        "--skip-pki",
        action="store_true",
        help="do not run the feature benches (PKI, registry, log, delivery)",
    )
    parser.add_argument(
        "--only", default=",".join(PHASES),
        help=f"comma-separated phases to run (default all): {','.join(PHASES)}",
    )  # fmt: skip
    parser.add_argument(
        "--soak-seconds", type=float, default=600.0, help="soak: seconds of mixed load"
    )
    parser.add_argument(
        "--scale-cards", type=int, default=10_000_000,
        help="scale: cards loaded for the large side of the p99 comparison",
    )  # fmt: skip
    args = parser.parse_args(argv)
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    if only - set(PHASES):
        parser.error(f"unknown phases: {sorted(only - set(PHASES))}")
    if "main" not in only:
        return run_extra_phases(args, only)
    cfg = BenchConfig(args.concurrency, args.channels, args.warmup, args.duration)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown backends: {sorted(unknown)}")

    work_dir = Path(tempfile.mkdtemp(prefix="realname-bench-"))
    facts = machine_facts(work_dir)
    print("realname bench")
    for key, value in facts:
        print(f"  {key}: {value}")
    if os.environ.get("REALNAME_DB_ISOLATION"):
        facts.append(("REALNAME_DB_ISOLATION", os.environ["REALNAME_DB_ISOLATION"]))
    try:
        baselines, phases, pg_facts = measure(work_dir, cfg, backends)
    finally:
        if args.keep:
            print(f"work dir kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)

    first, last = (b.result["rps"] for b in baselines)
    baseline_rps = (first + last) / 2
    if abs(first - last) > BASELINE_DRIFT_WARNING * baseline_rps:
        print(
            f"!!! the baseline drifted during the run ({first:.0f} → {last:.0f} RPC/s): the "
            "machine's load changed; treat the ratios with care"
        )
    baseline_row = merge_baselines(baselines)
    rows = table_rows([baseline_row, *phases], baseline_rps)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    note_lines = notes(cfg, baselines, pg_facts)
    print(f"\nresults ({when}):\n")
    print(text_table(rows))
    print()
    for line in note_lines:
        print(f"- {line}")
    write_markdown(facts, rows, note_lines, when)
    print(f"\nMarkdown: {RESULTS_PATH.relative_to(REPO_ROOT)}")

    failed = [p for p in [*baselines, *phases] if p.unexpected]
    hot_wrong = [p for p in phases if p.workload == "hot" and p.result["all_codes"].get("OK") != 5]
    for p in failed:
        print(f"!!! {p.workload}/{p.backend} had unexpected errors: {p.unexpected}")
    for p in hot_wrong:
        ok = p.result["all_codes"].get("OK", 0)
        print(f"!!! hot/{p.backend}: {ok} activations succeeded, not 5")
    for problem in PROBLEMS:
        print(f"!!! {problem}")
    pki_code = run_extra_phases(args, only)
    return 1 if failed or hot_wrong or PROBLEMS or pki_code else 0


if __name__ == "__main__":
    sys.exit(main())
