"""Soak: mixed load against one `realname serve` on PostgreSQL for ten minutes (by default).

The load client (its own process, ``python -m bench.bench_soak client``) keeps calls in flight
mixing CheckEligibility, ActivateCard, DeactivateCard, GetCard and ListCards as an operator with
VerifySeller as a marketplace (against 200 seeded store authorizations). Activations use fresh
documents, three cards each at most, and deactivations retire the oldest live cards, so every
call has one right answer: any status other than OK is an error, RESOURCE_EXHAUSTED included
(rate limits are switched off for the bench server). The orchestrator samples the server's
resident memory: "start" once the warm-up is over, "end" as the load stops.

Targets (issue 8): RSS growth <= 10 %, 0 errors. Run: ``python -m bench.bench_soak --seconds 600``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil

import bench.run as run
from bench.bench_scale import BENCH_SERVER_ENV
from bench.common import CHANNEL_OPTIONS, ServerProcess, client_credentials, update_results_section
from bench.load import (
    BENCH_AGENT,
    activate_request,
    error_reason,
    iccid,
    msisdn,
    percentile,
    resident_id,
)
from bench.postgres import fresh_database, postgres_server
from services.proto.realname.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    common_pb2,
    registry_pb2,
    registry_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)
from services.storage.database import Database, DatabaseConfig
from tests.support.registry import seed_authorizations

RSS_GROWTH_TARGET = 0.10
SOAK_REGION = "140105"
SOAK_PREFIXES = ("182", "183", "184")
SOAK_ICCID_FAMILY = 3
CARDS_PER_DOCUMENT = 3  # under the cap of 5: an activation is never refused
MARKETPLACE = "bench"
SHOPS = 200
# Operation mix (weights) and the live-card pool the operations work on.
MIX = {"check": 30, "activate": 20, "deactivate": 15, "get": 15, "list": 10, "verify": 10}
LIVE_LOW, LIVE_HIGH = 50, 2000
SAMPLE_EVERY_S = 5.0
REPORT_EVERY_S = 60.0


# ---------------------------------------------------------------------------------------------
# The load client


@dataclass
class SoakState:
    """What the client's coroutines share: the live cards and every outcome."""

    run_id: str
    live: deque[tuple[str, str]] = field(default_factory=deque)  # (msisdn, document number)
    activations: int = 0
    deactivations: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)


def document(number: str) -> common_pb2.Document:
    """A resident ID card message."""
    return common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=number)


def choose(state: SoakState, rng: random.Random) -> str:
    """The next operation, steered so the live pool stays between its bounds."""
    op = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    if len(state.live) < LIVE_LOW and op in ("deactivate", "get", "list", "check"):
        return "activate"
    if len(state.live) > LIVE_HIGH and op == "activate":
        return "deactivate"
    return op


def operation(
    op: str,
    state: SoakState,
    rng: random.Random,
    cards: verification_pb2_grpc.VerificationServiceStub,
    registry: registry_pb2_grpc.RegistryServiceStub,
) -> tuple[Callable[[], Awaitable[object]], Callable[[], None]]:
    """The call to make for ``op`` and what to record when it succeeds."""
    if op == "activate":
        k = state.activations
        state.activations += 1
        number = resident_id(SOAK_REGION, k // CARDS_PER_DOCUMENT)
        phone = msisdn(SOAK_PREFIXES, k)
        request = activate_request(
            state.run_id, "soak", number, phone, iccid(SOAK_ICCID_FAMILY, k), k
        )
        return (
            lambda: cards.ActivateCard(request, timeout=30),
            lambda: state.live.append((phone, number)),
        )
    if op == "deactivate":
        phone, _ = state.live.popleft()
        state.deactivations += 1
        deactivate = verification_pb2.DeactivateCardRequest(
            request_id=f"soak-{state.run_id}-off-{state.deactivations}", msisdn=phone
        )
        return lambda: cards.DeactivateCard(deactivate, timeout=30), lambda: None
    if op == "verify":
        shop = registry_pb2.Shop(
            marketplace=MARKETPLACE, shop_id=f"shop-{rng.randrange(SHOPS):06d}"
        )
        verify = registry_pb2.VerifySellerRequest(
            shop=shop, card_type=common_pb2.CARD_TYPE_PERSONAL, province="11"
        )
        return lambda: registry.VerifySeller(verify, timeout=30), lambda: None
    phone, number = state.live[rng.randrange(len(state.live))]
    if op == "get":
        get = verification_pb2.GetCardRequest(msisdn=phone)
        return lambda: cards.GetCard(get, timeout=30), lambda: None
    if op == "list":
        listing = verification_pb2.ListCardsRequest(document=document(number))
        return lambda: cards.ListCards(listing, timeout=30), lambda: None
    check = verification_pb2.CheckEligibilityRequest(
        document=document(number), card_type=common_pb2.CARD_TYPE_PERSONAL
    )
    return lambda: cards.CheckEligibility(check, timeout=30), lambda: None


async def soak_worker(
    state: SoakState,
    seed: int,
    end: float,
    cards: verification_pb2_grpc.VerificationServiceStub,
    registry: registry_pb2_grpc.RegistryServiceStub,
) -> None:
    """Keeps one call in flight until ``end``."""
    rng = random.Random(seed)
    while time.perf_counter() < end:
        op = choose(state, rng)
        call, on_success = operation(op, state, rng, cards, registry)
        started = time.perf_counter()
        try:
            await call()
        except grpc.aio.AioRpcError as exc:
            key = f"{op}/{exc.code().name}/{error_reason(exc)}"
            state.errors[key] += 1
            state.outcomes[f"{op}/{exc.code().name}"] += 1
            if len(state.error_samples) < 10:
                state.error_samples.append(f"{key}: {exc.details()}")
            continue
        state.latencies.setdefault(op, []).append(time.perf_counter() - started)
        state.outcomes[f"{op}/OK"] += 1
        on_success()


async def report_progress(state: SoakState, begin: float, end: float) -> None:
    """A line on stderr every minute, so a long soak shows it is alive."""
    last, last_at = 0, begin
    while time.perf_counter() < end:
        await asyncio.sleep(min(REPORT_EVERY_S, max(0.0, end - time.perf_counter())))
        total, now = sum(state.outcomes.values()), time.perf_counter()
        print(
            f"    soak client {now - begin:5.0f} s: {total:,} calls "
            f"({(total - last) / max(now - last_at, 1e-9):,.0f}/s lately), "
            f"{len(state.live):,} live cards, {sum(state.errors.values())} errors",
            file=sys.stderr,
            flush=True,
        )
        last, last_at = total, now


async def client(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the mixed load for ``args.seconds``; returns outcomes and latencies by operation."""
    state = SoakState(run_id=args.run_id)
    operator = client_credentials(args.pki_dir, "operator-cmcc")
    marketplace = client_credentials(args.pki_dir, "marketplace-demo")
    async with (
        grpc.aio.secure_channel(args.target, operator, CHANNEL_OPTIONS) as op_channel,
        grpc.aio.secure_channel(args.target, marketplace, CHANNEL_OPTIONS) as mp_channel,
    ):
        for channel in (op_channel, mp_channel):
            await asyncio.wait_for(channel.channel_ready(), timeout=15)
        # Activations by an unregistered agent are refused; registering is idempotent.
        await agents_pb2_grpc.AgentServiceStub(op_channel).RegisterAgent(
            agents_pb2.RegisterAgentRequest(agent_id=BENCH_AGENT), timeout=30
        )
        cards = verification_pb2_grpc.VerificationServiceStub(op_channel)
        registry = registry_pb2_grpc.RegistryServiceStub(mp_channel)  # type: ignore[no-untyped-call]
        begin = time.perf_counter()
        end = begin + args.seconds
        progress = asyncio.create_task(report_progress(state, begin, end))
        await asyncio.gather(
            *(soak_worker(state, i, end, cards, registry) for i in range(args.concurrency))
        )
        elapsed = time.perf_counter() - begin
        progress.cancel()
    by_op = {}
    for op in MIX:
        latencies = sorted(state.latencies.get(op, []))
        by_op[op] = {
            "ok": len(latencies),
            "p50_ms": 1000 * percentile(latencies, 0.50),
            "p99_ms": 1000 * percentile(latencies, 0.99),
        }
    return {
        "seconds": elapsed,
        "calls": sum(state.outcomes.values()),
        "by_op": by_op,
        "errors": dict(state.errors),
        "error_samples": state.error_samples,
        "activations": state.activations,
        "deactivations": state.deactivations,
        "live_at_end": len(state.live),
    }


# ---------------------------------------------------------------------------------------------
# The orchestrator


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its children (the workers of `--workers N`)."""
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


@dataclass
class RssTrace:
    """Server RSS samples over the soak (seconds since the load began, bytes)."""

    samples: list[tuple[float, int]] = field(default_factory=list)
    start: int = 0
    end: int = 0


def watch_rss(
    server: ServerProcess, load: subprocess.Popen[str], warmup: float, begin: float
) -> RssTrace:
    """Samples RSS until the load client exits; start is the first sample after the warm-up."""
    trace = RssTrace()
    next_report = warmup
    while load.poll() is None:
        elapsed = time.monotonic() - begin
        rss = tree_rss(server.proc.pid)
        trace.samples.append((elapsed, rss))
        if elapsed >= warmup and not trace.start:
            trace.start = rss
            print(f"  RSS at start (after {elapsed:.0f} s of warm-up): {rss / 2**20:.1f} MiB")
        if trace.start:
            trace.end = rss
        if elapsed >= next_report and trace.start:
            print(f"  RSS at {elapsed:4.0f} s: {rss / 2**20:.1f} MiB", flush=True)
            next_report += REPORT_EVERY_S
        time.sleep(SAMPLE_EVERY_S)
    return trace


def soak(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Runs the soak; returns (Markdown lines, problems)."""
    warmup = args.warmup if args.warmup is not None else min(60.0, args.seconds / 5)
    with tempfile.TemporaryDirectory(prefix="realname-bench-soak-") as tmp:
        data_dir = Path(tmp)
        with postgres_server() as pg, fresh_database(pg.url) as url:
            run.dev_init(data_dir, url)
            db = Database(DatabaseConfig(url))
            try:
                seed_authorizations(
                    db, operator="cmcc", marketplace=MARKETPLACE, count=SHOPS, key_dir=data_dir
                )
            finally:
                db.dispose()
            server = run.start_realname(data_dir, "pg-soak", url, extra_env=BENCH_SERVER_ENV)
            with run.running(server, data_dir / "dev-pki"):
                argv = [sys.executable, "-m", "bench.bench_soak", "client",
                        "--target", server.address, "--pki-dir", str(data_dir / "dev-pki"),
                        "--seconds", f"{warmup + args.seconds:g}",
                        "--concurrency", str(args.concurrency),
                        "--run-id", secrets.token_hex(4)]  # fmt: skip
                print(
                    f"  soak: {warmup:g} s warm-up + {args.seconds:g} s, {args.concurrency} calls "
                    f"in flight, server pid {server.proc.pid}",
                    flush=True,
                )
                begin = time.monotonic()
                load = subprocess.Popen(argv, cwd=run.REPO_ROOT, stdout=subprocess.PIPE, text=True)
                trace = watch_rss(server, load, warmup, begin)
                out, _ = load.communicate()
                if load.returncode != 0:
                    raise RuntimeError(
                        f"soak client failed ({load.returncode}); server log:\n{server.log_tail()}"
                    )
                print("  load done; stopping the server", flush=True)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report(args, warmup, trace, result)


def report(
    args: argparse.Namespace, warmup: float, trace: RssTrace, result: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """Prints the soak figures and returns (Markdown lines, problems)."""
    growth = (trace.end - trace.start) / trace.start if trace.start else float("nan")
    peak = max((rss for t, rss in trace.samples if t >= warmup), default=0)
    errors = sum(result["errors"].values())
    mib = 2**20
    rss_text = (
        f"server RSS start {trace.start / mib:.1f} MiB, end {trace.end / mib:.1f} MiB, "
        f"growth {100 * growth:+.1f} % (target ≤ {100 * RSS_GROWTH_TARGET:.0f} %: "
        f"{'met' if growth <= RSS_GROWTH_TARGET else 'MISSED'}), peak {peak / mib:.1f} MiB"
    )
    error_text = f"errors {errors} (target 0: {'met' if errors == 0 else 'MISSED'})"
    rate = result["calls"] / result["seconds"]
    print(f"\nsoak ({args.seconds:g} s after {warmup:g} s warm-up, PostgreSQL):")
    print(f"  {rss_text}")
    print(f"  {error_text}; {result['calls']:,} calls, {rate:,.0f}/s")
    lines = [
        f"### Soak: {args.seconds / 60:.4g} minutes of mixed load (PostgreSQL)",
        "",
        "| operation | OK calls | p50 ms | p99 ms |",
        "| --- | --: | --: | --: |",
    ]
    for op, figures in result["by_op"].items():
        print(
            f"  {op:<11}{figures['ok']:>10,} OK  p50 {figures['p50_ms']:6.1f} ms  "
            f"p99 {figures['p99_ms']:6.1f} ms"
        )
        lines.append(
            f"| {op} | {figures['ok']:,} | {figures['p50_ms']:.1f} | {figures['p99_ms']:.1f} |"
        )
    for key, n in result["errors"].items():
        print(f"!!! soak error {key}: {n}")
    for sample in result["error_samples"]:
        print(f"!!!   {sample}")
    lines += [
        "",
        f"- {rss_text}.",
        f"- {error_text}; {result['calls']:,} calls in {result['seconds']:.0f} s "
        f"({rate:,.0f}/s, warm-up included), {result['activations']:,} activations, "
        f"{result['deactivations']:,} deactivations, {result['live_at_end']:,} cards live at the "
        "end.",
        f"- Load: one client process, {args.concurrency} calls in flight (operator channel and "
        f"marketplace channel), mix {', '.join(f'{k} {v} %' for k, v in MIX.items())}; "
        "`realname serve` (one process) with rate limits off; RSS of the server process, start "
        f"sampled after {warmup:g} s of warm-up, end as the load stops.",
    ]
    problems = [f"soak: {errors} errors {result['errors']}"] if errors else []
    if not growth <= RSS_GROWTH_TARGET:
        problems.append(f"soak: RSS grew {100 * growth:.1f} %")
    return lines, problems


def main(argv: list[str] | None = None) -> int:
    """Runs the soak (or, with ``client``, the load client); see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", nargs="?", choices=["soak", "client"], default="soak")
    parser.add_argument("--seconds", type=float, default=600.0, help="seconds of mixed load")
    parser.add_argument("--warmup", type=float, help="warm-up seconds (default min(60, 1/5))")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--target", help="client: host:port")
    parser.add_argument("--pki-dir", type=Path, help="client: dev-pki folder")
    parser.add_argument("--run-id", default=secrets.token_hex(4), help="client: request id part")
    args = parser.parse_args(argv)
    if args.role == "client":
        print(json.dumps(asyncio.run(client(args))), flush=True)
        return 0
    lines, problems = soak(args)
    problems += run.PROBLEMS
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    facts = dict(run.machine_facts(Path(tempfile.gettempdir())))
    lines[1:1] = [
        "",
        f"Measured {when}; nproc {facts['nproc']}; load average at the end "
        f"{facts['load average at start']}.",
    ]
    update_results_section(run.RESULTS_PATH, "soak", "\n".join(lines))
    print(f"  written to {run.RESULTS_PATH.relative_to(run.REPO_ROOT)} (section soak)")
    for problem in problems:
        print(f"!!! {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
