"""Registry benchmarks: VerifySeller at 32 concurrent callers next to the bare-grpcio baseline,
and one VerifySellers sweep over 100,000 shops.

Targets (issue 3): VerifySeller p99 <= 2 ms at 32 concurrent callers; the sweep >= 20,000
shops/s. Both servers are subprocesses with the same mTLS; the clients run in this process
(grpc.aio for the unary load, through bench.load's worker and recorder, so the baseline and
VerifySeller are driven by the same code). The registry is SQLite in a fresh data directory,
seeded with 100,000 authorizations issued in-process. Figures are printed, not asserted.

Issue 17's targets, as ratios to the baseline measured in the same run (servers alternated round
by round): VerifySeller's p99 <= 1.5x the baseline's, its throughput >= 0.6 of the baseline's.
``--before DIR`` also serves VerifySeller from another source tree (e.g. ``git archive`` of the
previous commit) in the same rounds, for a before/after comparison.

Run: ``.venv/bin/python -m bench.bench_registry [--shops N] [--duration S] [--rounds N]
[--before DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

import grpc

from bench.common import CHANNEL_OPTIONS, client_credentials, source_tree_env
from bench.load import Recorder, make_call, percentile, worker
from bench.postgres import fresh_database, postgres_server
from bench.run import dev_init, running, start_baseline, start_realname
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import registry_pb2 as rpb
from services.proto.realname.v1 import registry_pb2_grpc as rgrpc
from services.storage.database import Database, DatabaseConfig, sqlite_url
from tests.support.registry import seed_authorizations

MARKETPLACE = "bench"
BATCH = 2000


async def load(
    target: str,
    pki_dir: Path,
    principal: str,
    make: Callable[[grpc.aio.Channel], Callable[[int], Awaitable[object]]],
    *,
    concurrency: int,
    warmup: float,
    duration: float,
) -> dict[str, float]:
    """Keep ``concurrency`` calls in flight; return RPC/s, p50 and p99 of the measured window."""
    credentials = client_credentials(pki_dir, principal)
    async with grpc.aio.secure_channel(target, credentials, CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=15)
        begin = time.perf_counter()
        rec = Recorder(measure_start=begin + warmup, end=begin + warmup + duration)
        call = make(channel)
        counter = itertools.count()
        await asyncio.gather(*(worker(call, counter, rec) for _ in range(concurrency)))
    latencies = sorted(rec.latencies)
    errors = {code: n for code, n in rec.codes.items() if code != "OK"}
    if errors:
        raise RuntimeError(f"unexpected outcomes {errors}: {rec.error_samples}")
    return {
        "rps": sum(rec.codes.values()) / duration,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
    }


def verify_seller_call(
    shops: int,
) -> Callable[[grpc.aio.Channel], Callable[[int], Awaitable[object]]]:
    """VerifySeller by shop over the seeded shops, personal cards in Guangdong."""

    def make(channel: grpc.aio.Channel) -> Callable[[int], Awaitable[object]]:
        stub = rgrpc.RegistryServiceStub(channel)  # type: ignore[no-untyped-call]
        requests = [
            rpb.VerifySellerRequest(
                shop=rpb.Shop(marketplace=MARKETPLACE, shop_id=f"shop-{n:06d}"),
                card_type=cpb.CARD_TYPE_PERSONAL,
                province="44",
            )
            for n in range(min(shops, 5000))
        ]
        return lambda n: stub.VerifySeller(requests[n % len(requests)], timeout=30)

    return make


def sweep(target: str, pki_dir: Path, shops: int) -> tuple[float, int]:
    """One VerifySellers stream over every seeded shop; returns (seconds, authorized count)."""
    credentials = client_credentials(pki_dir, "marketplace-demo")
    with grpc.secure_channel(target, credentials, CHANNEL_OPTIONS) as channel:
        stub = rgrpc.RegistryServiceStub(channel)
        ids = [f"shop-{n:06d}" for n in range(shops)]
        requests = (
            rpb.VerifySellersRequest(marketplace=MARKETPLACE, shop_ids=ids[i : i + BATCH])
            for i in range(0, shops, BATCH)
        )
        started = time.perf_counter()
        authorized = sum(
            1
            for response in stub.VerifySellers(requests)
            for verdict in response.verdicts
            if verdict.authorized
        )
        return time.perf_counter() - started, authorized


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    """Run both benchmarks and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shops", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of every server")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="also serve VerifySeller from the code in this source tree (an A/B in one run)",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    with (
        ExitStack() as databases,
        tempfile.TemporaryDirectory(prefix="realname-bench-registry-") as tmp,
    ):
        data_dir = Path(tmp)
        url: str | None = None
        if args.backend == "postgresql":
            pg = databases.enter_context(postgres_server())
            url = databases.enter_context(fresh_database(pg.url))
        dev_init(data_dir, url)
        pki_dir = data_dir / "dev-pki"
        db = Database(DatabaseConfig(url or sqlite_url(data_dir)))
        started = time.perf_counter()
        seed_authorizations(
            db, operator="cmcc", marketplace=MARKETPLACE, count=args.shops, key_dir=data_dir
        )
        db.dispose()
        print(f"  seeded {args.shops:,} authorizations in {time.perf_counter() - started:.1f} s")
        shape = {"concurrency": args.concurrency, "warmup": args.warmup, "duration": args.duration}
        loads = {
            "baseline": lambda channel: make_call("empty", channel, "bench"),
            "verify": verify_seller_call(args.shops),
        }
        with ExitStack() as stack:
            servers = {
                "baseline": stack.enter_context(
                    running(start_baseline(data_dir, "baseline"), pki_dir)
                ),
                "verify": stack.enter_context(
                    running(start_realname(data_dir, args.backend, url), pki_dir)
                ),
            }
            if args.before is not None:
                before_env = source_tree_env(args.before)
                servers["before"] = stack.enter_context(
                    running(
                        start_realname(
                            data_dir, f"{args.backend}-before", url, extra_env=before_env
                        ),
                        pki_dir,
                    )
                )
                loads["before"] = loads["verify"]
            # Alternate the servers round by round, so each sees the same neighbours' noise.
            figures: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
            for _ in range(args.rounds):
                for name, server in servers.items():
                    figures[name].append(
                        asyncio.run(
                            load(server.address, pki_dir, "marketplace-demo", loads[name], **shape)
                        )
                    )
            seconds, authorized = sweep(servers["verify"].address, pki_dir, args.shops)
    labels = {
        "baseline": "baseline: bare grpcio, empty handler",
        "verify": "VerifySeller by shop",
        "before": f"VerifySeller by shop, code at {args.before}",
    }
    print(
        f"\nregistry bench, {args.backend}, {args.concurrency} callers, one mTLS channel, "
        f"{args.rounds} alternating rounds; load average {os.getloadavg()[0]:.2f}"
    )
    print(f"  {'workload':<52}{'RPC/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for name, rounds in figures.items():
        for n, f in enumerate(rounds, 1):
            print(
                f"  {labels[name] + f' (round {n})':<52}{f['rps']:>9,.0f}{f['p50_ms']:>9.2f}"
                f"{f['p99_ms']:>9.2f}"
            )
    base = figures["baseline"]
    base_rps, base_p99 = _median([f["rps"] for f in base]), _median([f["p99_ms"] for f in base])
    print("  ratios to the baseline of the same run (medians over the rounds):")
    for name in (n for n in figures if n != "baseline"):
        rps = _median([f["rps"] for f in figures[name]])
        p99 = _median([f["p99_ms"] for f in figures[name]])
        throughput, tail = rps / base_rps, p99 / base_p99
        print(
            f"  {labels[name]:<52} throughput {throughput:.2f} (target >= 0.6: "
            f"{'met' if throughput >= 0.6 else 'MISSED'}), p99 {tail:.2f}x (target <= 1.5: "
            f"{'met' if tail <= 1.5 else 'MISSED'})"
        )
    verify_p99 = _median([f["p99_ms"] for f in figures["verify"]])
    print(f"  VerifySeller p99 target <= 2 ms: {'met' if verify_p99 <= 2 else 'MISSED'}")
    rate = args.shops / seconds
    print(
        f"  VerifySellers sweep: {args.shops:,} shops in {seconds:.1f} s = {rate:,.0f} shops/s "
        f"({authorized:,} authorized); target >= 20,000/s: {'met' if rate >= 20_000 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
