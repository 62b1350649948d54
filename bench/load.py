"""The load client: N concurrent in-flight calls over grpc.aio, per-call latency, JSON result.

Runs in its own process (``python -m bench.load``) so that its GIL never competes with the
server's. It drives every workload, the baseline included, with the same code path, and prints
one JSON object on stdout for bench.run to tabulate.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import math
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2, status_pb2

from bench.common import (
    BASELINE_METHOD,
    CHANNEL_OPTIONS,
    client_credentials,
    machine_cpu_ticks,
    tree_cpu_seconds,
)
from services.domain.documents import resident_id_check_char
from services.domain.numbers import luhn_complete
from services.proto.realname.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    common_pb2,
    verification_pb2,
    verification_pb2_grpc,
)

WORKLOADS = ("empty", "check", "activate", "hot")

# Outcomes that are the workload working as intended. On the hot document only the first five
# activations can succeed; every later one must be refused with CARD_LIMIT_REACHED.
EXPECTED_CODES: dict[str, frozenset[str]] = {
    "empty": frozenset({"OK"}),
    "check": frozenset({"OK"}),
    "activate": frozenset({"OK"}),
    "hot": frozenset({"OK", "RESOURCE_EXHAUSTED"}),
}
EXPECTED_REASONS: dict[str, frozenset[str]] = {"hot": frozenset({"CARD_LIMIT_REACHED"})}

# Parsing rich error details costs client CPU that the server would otherwise get; a sample
# is enough to tell whether refusals carry the reason they should.
REASON_SAMPLE = 500
CALL_TIMEOUT_S = 30.0

# Each workload draws documents, MSISDNs and ICCIDs from its own families so that no two
# workloads (and no two calls of the distinct-document workload) ever share one.
CHECK_REGION = "120101"
ACTIVATE_REGIONS = ("110101", "310104", "440106", "510107", "330106")
HOT_DOCUMENT_FIRST17 = "32010219851212888"
ACTIVATE_PREFIXES = ("138", "139", "150", "151", "152", "158", "159", "187", "188")
HOT_PREFIXES = ("136", "137")
PER_PREFIX = 10**8  # 8 free digits after a 3-digit segment prefix
_BIRTH_EPOCH = dt.date(1940, 1, 1)
_BIRTH_SPAN_DAYS = 60 * 365  # births 1940..1999: always in the past, always a real date
CHECK_DOCUMENTS = 1000
BENCH_AGENT = "bench-agent"

Call = Callable[[int], Awaitable[object]]


def resident_id(region: str, n: int) -> str:
    """The ``n``-th distinct valid resident ID under ``region`` (GB 11643 check character)."""
    if n >= 1000 * _BIRTH_SPAN_DAYS:
        raise ValueError(f"resident ID sequence {n} exhausts region {region}")
    birth = _BIRTH_EPOCH + dt.timedelta(days=n // 1000)
    first17 = f"{region}{birth:%Y%m%d}{n % 1000:03d}"
    return first17 + resident_id_check_char(first17)


def distinct_resident_id(n: int) -> str:
    """A resident ID that no other ``n`` gets, spread over several regions."""
    per_region = 1000 * _BIRTH_SPAN_DAYS
    region_index, rest = divmod(n, per_region)
    if region_index >= len(ACTIVATE_REGIONS):
        raise ValueError(f"distinct document {n} is beyond the generator's range")
    return resident_id(ACTIVATE_REGIONS[region_index], rest)


def msisdn(prefixes: tuple[str, ...], n: int) -> str:
    """The ``n``-th distinct 11-digit MSISDN over the given cmcc segment prefixes."""
    prefix_index, rest = divmod(n, PER_PREFIX)
    if prefix_index >= len(prefixes):
        raise ValueError(f"MSISDN {n} is beyond {len(prefixes)} segments of {PER_PREFIX:,}")
    return f"{prefixes[prefix_index]}{rest:08d}"


def iccid(family: int, n: int) -> str:
    """A distinct valid 20-digit ICCID (89 86 00, a family digit, 12 digits, Luhn)."""
    return luhn_complete(f"898600{family}{n:012d}")


def activate_request(
    run_id: str, workload: str, document: str, number: str, sim: str, n: int
) -> verification_pb2.ActivateCardRequest:
    """An ActivateCard request sold at a bench agent."""
    return verification_pb2.ActivateCardRequest(
        request_id=f"bench-{run_id}-{workload}-{n}",
        document=common_pb2.Document(
            type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=document
        ),
        msisdn=number,
        iccid=sim,
        card_type=common_pb2.CARD_TYPE_PERSONAL,
        channel=verification_pb2.SalesChannel(
            agent=verification_pb2.AgentChannel(agent_id=BENCH_AGENT)
        ),
    )


def check_requests() -> list[verification_pb2.CheckEligibilityRequest]:
    """The check workload's requests: CHECK_DOCUMENTS documents, called in rotation."""
    return [
        verification_pb2.CheckEligibilityRequest(
            document=common_pb2.Document(
                type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID_CARD,
                number=resident_id(CHECK_REGION, i),
            ),
            card_type=common_pb2.CARD_TYPE_PERSONAL,
        )
        for i in range(CHECK_DOCUMENTS)
    ]


def make_call(workload: str, channel: grpc.aio.Channel, run_id: str) -> Call:
    """The coroutine function issuing the ``n``-th call of ``workload`` on ``channel``."""
    timeout = CALL_TIMEOUT_S
    if workload == "empty":
        empty = channel.unary_unary(
            BASELINE_METHOD,
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString,
        )
        request = empty_pb2.Empty()
        return lambda _n: empty(request, timeout=timeout)
    stub = verification_pb2_grpc.VerificationServiceStub(channel)
    if workload == "check":
        # Built once: the rotation exercises the lookup, not the client's request building.
        checks = check_requests()
        return lambda n: stub.CheckEligibility(checks[n % len(checks)], timeout=timeout)
    if workload == "activate":
        return lambda n: stub.ActivateCard(
            activate_request(
                run_id,
                workload,
                distinct_resident_id(n),
                msisdn(ACTIVATE_PREFIXES, n),
                iccid(1, n),
                n,
            ),
            timeout=timeout,
        )
    if workload == "hot":
        hot_document = HOT_DOCUMENT_FIRST17 + resident_id_check_char(HOT_DOCUMENT_FIRST17)
        return lambda n: stub.ActivateCard(
            activate_request(
                run_id, workload, hot_document, msisdn(HOT_PREFIXES, n), iccid(2, n), n
            ),
            timeout=timeout,
        )
    raise ValueError(f"unknown workload {workload!r}")


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a rich error status, or "-" when it carries none."""
    # The stubs type trailing metadata as the sync kind; aio's Metadata yields (key, value).
    trailing: Any = error.trailing_metadata() or ()
    for key, value in trailing:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return "-"


@dataclass
class Recorder:
    """Outcomes by phase (by completion time) and latencies of the measured window."""

    measure_start: float
    end: float
    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    warmup_codes: Counter[str] = field(default_factory=Counter)
    drain_codes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    reasons_seen: int = 0

    def record(self, started: float, finished: float, error: grpc.aio.AioRpcError | None) -> None:
        """Files one completed call under warm-up, the measured window or the drain."""
        code = "OK" if error is None else error.code().name
        if finished < self.measure_start:
            self.warmup_codes[code] += 1
        elif finished <= self.end:
            self.codes[code] += 1
            self.latencies.append(finished - started)
        else:
            self.drain_codes[code] += 1
        if error is not None and self.reasons_seen < REASON_SAMPLE:
            self.reasons_seen += 1
            reason = error_reason(error)
            self.reasons[f"{code}/{reason}"] += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{code} {reason}: {error.details()}")


async def worker(call: Call, counter: Iterator[int], rec: Recorder) -> None:
    """Keeps one call in flight until the window closes."""
    while time.perf_counter() < rec.end:
        n = next(counter)
        started = time.perf_counter()
        try:
            await call(n)
        except grpc.aio.AioRpcError as exc:
            rec.record(started, time.perf_counter(), exc)
        else:
            rec.record(started, time.perf_counter(), None)


@dataclass
class CpuSample:
    """CPU counters at one instant: this client, watched server trees, the whole machine."""

    client: float
    servers: dict[int, dict[int, float]]
    machine: tuple[int, int]
    wall: float

    @classmethod
    def take(cls, watch: list[int]) -> CpuSample:
        """Reads the counters now."""
        return cls(
            time.process_time(),
            {pid: tree_cpu_seconds(pid) for pid in watch},
            machine_cpu_ticks(),
            time.perf_counter(),
        )


async def sample_cpu(rec: Recorder, watch: list[int]) -> tuple[CpuSample, CpuSample]:
    """Samples CPU counters at the start and the end of the measured window."""
    await asyncio.sleep(max(0.0, rec.measure_start - time.perf_counter()))
    first = CpuSample.take(watch)
    await asyncio.sleep(max(0.0, rec.end - time.perf_counter()))
    return first, CpuSample.take(watch)


def cpu_report(first: CpuSample, last: CpuSample) -> dict[str, Any]:
    """CPU use over the window in percent of one core (machine busy: percent of all cores)."""
    wall = last.wall - first.wall
    servers = {}
    for pid, tree in last.servers.items():
        before = first.servers.get(pid, {})
        # Processes born inside the window (new database backends) count from zero.
        used = sum(cpu - before.get(child, 0.0) for child, cpu in tree.items())
        servers[str(pid)] = round(100 * used / wall, 1)
    busy = last.machine[0] - first.machine[0]
    total = last.machine[1] - first.machine[1]
    return {
        "client_cpu_pct": round(100 * (last.client - first.client) / wall, 1),
        "server_cpu_pct": servers,
        "machine_busy_pct": round(100 * busy / total, 1) if total else math.nan,
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs one workload against one server and returns the result record."""
    credentials = client_credentials(args.pki_dir, args.principal)
    channels = [
        grpc.aio.secure_channel(args.target, credentials, CHANNEL_OPTIONS)
        for _ in range(args.channels)
    ]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=15)
        if args.workload in ("activate", "hot"):
            # Activations by an unregistered agent are refused; registering is idempotent.
            await agents_pb2_grpc.AgentServiceStub(channels[0]).RegisterAgent(
                agents_pb2.RegisterAgentRequest(agent_id=BENCH_AGENT), timeout=CALL_TIMEOUT_S
            )
        begin = time.perf_counter()
        rec = Recorder(measure_start=begin + args.warmup, end=begin + args.warmup + args.duration)
        counter = itertools.count(args.start)
        calls = [make_call(args.workload, ch, args.run_id) for ch in channels]
        sampler = asyncio.create_task(sample_cpu(rec, args.watch_pid))
        await asyncio.gather(
            *(worker(calls[i % len(calls)], counter, rec) for i in range(args.concurrency))
        )
        first, last = await sampler
    finally:
        for channel in channels:
            await channel.close(grace=None)
    latencies = sorted(rec.latencies)
    expected = EXPECTED_CODES[args.workload]
    every = rec.warmup_codes + rec.codes + rec.drain_codes
    unexpected = {code: n for code, n in every.items() if code not in expected}
    allowed_reasons = EXPECTED_REASONS.get(args.workload)
    if allowed_reasons is not None:
        for key, n in rec.reasons.items():
            if key.split("/", 1)[1] not in allowed_reasons:
                unexpected[key] = unexpected.get(key, 0) + n
    return {
        "workload": args.workload,
        "concurrency": args.concurrency,
        "channels": args.channels,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "calls": sum(rec.codes.values()),
        "rps": sum(rec.codes.values()) / args.duration,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "mean_ms": 1000 * sum(latencies) / len(latencies) if latencies else math.nan,
        "codes": dict(rec.codes),
        "warmup_codes": dict(rec.warmup_codes),
        "drain_codes": dict(rec.drain_codes),
        "all_codes": dict(every),
        "reasons_sampled": dict(rec.reasons),
        "unexpected": unexpected,
        "error_samples": rec.error_samples,
        **cpu_report(first, last),
    }


def main() -> None:
    """Command-line entry point; prints the result as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port of the server")
    parser.add_argument("--pki-dir", type=Path, required=True, help="dev-init's dev-pki folder")
    parser.add_argument("--principal", default="operator-cmcc")
    parser.add_argument("--workload", choices=WORKLOADS, required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--run-id", default=secrets.token_hex(4))
    parser.add_argument(
        "--start", type=int, default=0,
        help="first sequence number (documents, MSISDNs, ICCIDs); rerunning against a database "
        "that already holds a run's cards needs a fresh range",
    )  # fmt: skip
    parser.add_argument(
        "--watch-pid", type=int, action="append", default=[],
        help="report CPU use of this process and its children (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
