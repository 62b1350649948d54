"""Instructions per call, counted by valgrind's callgrind: figures the machine's load cannot move.

On a shared machine the server's CPU time per call moves by more than a layer costs; an
instruction count does not. Each configuration's `realname serve` (SQLite, real mTLS) runs under
``valgrind --tool=callgrind``; after its start-up and a few unmeasured calls, the bench zeroes
callgrind's counters (a client request made by a watcher thread that bench/callgrind/
sitecustomize.py starts in the server only), sends a fixed number of sequential
CheckEligibility calls from one client, dumps the counters, then zeroes and dumps them again
over as long a time without calls. The first count minus the second, divided by the calls, is
what one call costs the server: the background threads' own work (the log sequencer, periodic
jobs, pollers) is subtracted; the audit writer's work for the calls' records stays in. Valgrind
runs every thread of the server on one core, one at a time, so this counts the work a call
needs, not the cost of threads contending for the GIL (which bench.bench_layers and bench.run
measure, with the noise that brings).

``--source DIR`` serves an earlier tree's ``services``/``registry`` (e.g. ``git worktree add``)
for before/after figures in the same run. Not part of the default `make bench` (a run takes
several minutes per configuration); run as ``python -m bench.bench_instructions``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench.bench_layers import CONFIGS
from bench.common import (
    ServerProcess,
    client_credentials,
    free_port,
    source_tree_env,
    start_process,
    update_results_section,
    wait_serving,
)
from bench.load import check_requests
from bench.run import RESULTS_PATH, dev_init, realname_bin, server_env
from services.proto.realname.v1 import verification_pb2_grpc

# A dump's own cost ("summary" is the running total since the start).
_TOTALS = re.compile(r"^totals: (\d+)", re.MULTILINE)
HOOKS_DIR = Path(__file__).parent / "callgrind"
WARMUP_CALLS = 30


def build_hooks(work: Path) -> Path:
    """Compiles the callgrind client-request hooks (needs gcc and valgrind's headers)."""
    library = work / "callgrind_hooks.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", "-o", str(library), str(HOOKS_DIR / "hooks.c")],
        check=True,
    )
    return library


def _request(server: ServerProcess, marks: Path, request: str, ack: str) -> None:
    # Asks sitecustomize's watcher in the server for a client request; waits until it is made.
    (marks / ack).unlink(missing_ok=True)
    (marks / request).touch()
    deadline = time.monotonic() + 600
    while not (marks / ack).exists():
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} did not make the {request}:\n{server.log_tail()}")
        time.sleep(0.1)


def count_instructions(
    data_dir: Path, env: dict[str, str], hooks: Path, calls: int, label: str
) -> tuple[int, int]:
    """(instructions during ``calls`` sequential calls, during as long a time with none)."""
    out = data_dir / f"callgrind-{label}.out"
    marks = data_dir / f"marks-{label}"
    marks.mkdir()
    address = f"127.0.0.1:{free_port()}"
    path = os.pathsep.join(p for p in (str(HOOKS_DIR), env.get("PYTHONPATH", "")) if p)
    env = {**env, "PYTHONPATH": path, "REALNAME_CALLGRIND_HOOKS": str(hooks),
           "REALNAME_CALLGRIND_MARKS": str(marks)}  # fmt: skip
    argv = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-line=no",
        sys.executable, realname_bin(), "serve", "--data-dir", str(data_dir),
        "--grpc-address", address, "--http-address", f"127.0.0.1:{free_port()}",
        "--admin-address", f"127.0.0.1:{free_port()}",
    ]  # fmt: skip
    server = start_process(label, argv, address, data_dir / f"{label}.log", env=env)
    try:
        wait_serving(server, data_dir / "dev-pki", timeout=900)
        credentials = client_credentials(data_dir / "dev-pki", "operator-cmcc")
        with grpc.secure_channel(address, credentials) as channel:
            stub = verification_pb2_grpc.VerificationServiceStub(channel)
            requests = check_requests()
            for n in range(WARMUP_CALLS):  # first calls fill caches and start threads
                stub.CheckEligibility(requests[n % len(requests)], timeout=120)
            _request(server, marks, "zero", "zeroed")
            began = time.monotonic()
            for n in range(calls):
                stub.CheckEligibility(requests[(WARMUP_CALLS + n) % len(requests)], timeout=120)
            busy = time.monotonic() - began
            _request(server, marks, "dump", "dumped")
            # The same time without calls: what the background threads cost meanwhile.
            _request(server, marks, "zero", "zeroed")
            time.sleep(busy)
            _request(server, marks, "dump", "dumped")
    finally:
        # Both counts are dumped: the shutdown's own count is not wanted. (Under valgrind a
        # SIGTERM may reach a thread other than the main one, whose wait it then does not end.)
        server.proc.kill()
        server.proc.wait()
    parts = sorted(data_dir.glob(f"callgrind-{label}.out.*"), key=lambda p: int(p.suffix[1:]))
    totals = []
    for part in parts:
        found = _TOTALS.search(part.read_text())
        if found is None:
            raise RuntimeError(f"{label}: no instruction total in {part}")
        totals.append(int(found.group(1)))
    if len(totals) < 2:
        raise RuntimeError(f"{label}: expected two dumps, found {[p.name for p in parts]}")
    return totals[0], totals[1]


def main() -> int:
    """Counts each configuration's instructions per call and files the table in the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300, help="measured calls per run")
    parser.add_argument("--source", type=Path, help="serve this tree's code as 'before'")
    parser.add_argument("--configs", default="all", help="comma-separated config indexes")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("gcc") is None:
        print("needs valgrind and gcc (Debian packages valgrind, gcc)", file=sys.stderr)
        return 2
    names = list(CONFIGS)
    if args.configs != "all":
        names = [names[int(i)] for i in args.configs.split(",")]
    variants: list[tuple[str, dict[str, str]]] = [("this tree", {})]
    if args.source is not None:
        variants.insert(0, (f"before ({args.source.name})", source_tree_env(args.source)))
    rows = []
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="realname-instr-") as tmp:
        data_dir = Path(tmp)
        dev_init(data_dir, None)
        hooks = build_hooks(data_dir)
        for name in names:
            for variant, extra in variants:
                env = {**server_env(None), **CONFIGS[name], **extra}
                if extra and "guards" in CONFIGS[name].get("REALNAME_LAYERS_OFF", ""):
                    continue  # an older tree has no such switch (its serve refuses the name)
                busy, idle = count_instructions(data_dir, env, hooks, args.calls, f"r{len(rows)}")
                per_call = (busy - idle) / args.calls
                print(f"  {name} / {variant}: {per_call:,.0f} per call ({busy:,} - {idle:,} idle)")
                rows.append((name, variant, per_call, busy, idle))
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Instructions per CheckEligibility call on SQLite (callgrind, {when}; {args.calls} "
        f"sequential calls per run after {WARMUP_CALLS} unmeasured, minus as long a time idle; "
        f"load average {load_start:.1f} at the start; {time.monotonic() - started:.0f} s)",
        "",
        "| configuration | code | instructions per call | layer's cost (default minus this) "
        "| during the calls / idle as long |",
        "| --- | --- | --: | --: | --: |",
    ]
    default = {variant: per for name, variant, per, _, _ in rows if name == names[0]}
    for name, variant, per_call, busy, idle in rows:
        cost = "—" if name == names[0] else f"{default[variant] - per_call:+,.0f}"
        lines.append(f"| {name} | {variant} | {per_call:,.0f} | {cost} | {busy:,} / {idle:,} |")
    table = "\n".join(lines)
    print(table)
    update_results_section(RESULTS_PATH, "instructions", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
