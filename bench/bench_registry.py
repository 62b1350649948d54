"""Registry benchmarks: VerifySeller at 32 concurrent callers next to the bare-grpcio baseline,
and one VerifySellers sweep over 100,000 shops.

Targets (issue 3): VerifySeller p99 <= 2 ms at 32 concurrent callers; the sweep >= 20,000
shops/s. Both servers are subprocesses with the same mTLS; the clients run in this process
(grpc.aio for the unary load, through bench.load's worker and recorder, so the baseline and
VerifySeller are driven by the same code). The registry is SQLite in a fresh data directory,
seeded with 100,000 authorizations issued in-process. Figures are printed, not asserted.

Run: ``.venv/bin/python -m bench.bench_registry [--shops N] [--duration S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from bench.common import CHANNEL_OPTIONS, client_credentials
from bench.load import Recorder, make_call, percentile, worker
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


def main() -> None:
    """Run both benchmarks and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shops", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="realname-bench-registry-") as tmp:
        data_dir = Path(tmp)
        dev_init(data_dir, None)
        pki_dir = data_dir / "dev-pki"
        db = Database(DatabaseConfig(sqlite_url(data_dir)))
        started = time.perf_counter()
        seed_authorizations(
            db, operator="cmcc", marketplace=MARKETPLACE, count=args.shops, key_dir=data_dir
        )
        db.dispose()
        print(f"  seeded {args.shops:,} authorizations in {time.perf_counter() - started:.1f} s")
        shape = {"concurrency": args.concurrency, "warmup": args.warmup, "duration": args.duration}
        with running(start_baseline(data_dir, "baseline"), pki_dir) as baseline:
            base = asyncio.run(
                load(
                    baseline.address,
                    pki_dir,
                    "marketplace-demo",
                    lambda channel: make_call("empty", channel, "bench"),
                    **shape,
                )
            )
        with running(start_realname(data_dir, "sqlite", None), pki_dir) as server:
            verify = asyncio.run(
                load(
                    server.address,
                    pki_dir,
                    "marketplace-demo",
                    verify_seller_call(args.shops),
                    **shape,
                )
            )
            seconds, authorized = sweep(server.address, pki_dir, args.shops)
    print(f"\nregistry bench, SQLite, {args.concurrency} concurrent callers, one mTLS channel")
    print(f"  {'workload':<42}{'RPC/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}")
    for name, figures in (
        ("baseline: bare grpcio, empty handler", base),
        ("VerifySeller by shop", verify),
    ):
        print(
            f"  {name:<42}{figures['rps']:>9,.0f}{figures['p50_ms']:>9.1f}{figures['p99_ms']:>9.1f}"
            f"{figures['rps'] / base['rps']:>8.2f}"
        )
    print(f"  VerifySeller p99 target <= 2 ms: {'met' if verify['p99_ms'] <= 2 else 'MISSED'}")
    rate = args.shops / seconds
    print(
        f"  VerifySellers sweep: {args.shops:,} shops in {seconds:.1f} s = {rate:,.0f} shops/s "
        f"({authorized:,} authorized); target >= 20,000/s: {'met' if rate >= 20_000 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
