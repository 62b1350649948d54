"""Instructions per CheckEligibility in the server, counted by valgrind's callgrind.

Unlike CPU time, an instruction count does not move with the machine's load, so it is the
figure for a before/after on a shared machine. `realname serve` (SQLite, real mTLS) runs under
``valgrind --tool=callgrind --instr-atstart=no``; after start-up and a warm-up, collection is
switched on (``callgrind_control -i on``) for a fixed number of sequential calls, and the total
over every server thread (the audit writer and the log flusher included) is divided by the calls.
Run as ``python -m bench.bench_instructions [--layers-off audit,metrics]`` (slow: minutes).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench.common import CHANNEL_OPTIONS, client_credentials, free_port
from bench.load import CHECK_DOCUMENTS, CHECK_REGION, resident_id
from bench.run import dev_init, realname_bin, server_env
from services.proto.realname.v1 import common_pb2, verification_pb2, verification_pb2_grpc


def _requests() -> list[verification_pb2.CheckEligibilityRequest]:
    return [
        verification_pb2.CheckEligibilityRequest(
            document=common_pb2.Document(
                type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(CHECK_REGION, i)
            ),
            card_type=common_pb2.CARD_TYPE_PERSONAL,
        )
        for i in range(CHECK_DOCUMENTS)
    ]


def _total_ir(out_dir: Path) -> int:
    total = 0
    for dump in out_dir.glob("callgrind.out.*"):
        for line in dump.read_text(errors="replace").splitlines():
            found = re.match(r"(?:summary|totals): (\d+)", line)
            if found:
                total += int(found.group(1))
                break
    return total


def measure(calls: int, warmup: int, env_extra: dict[str, str]) -> float:
    """Server instructions per call over ``calls`` sequential calls after ``warmup`` calls."""
    with tempfile.TemporaryDirectory(prefix="realname-ir-") as tmp:
        data_dir = Path(tmp)
        dev_init(data_dir, None)
        address = f"127.0.0.1:{free_port()}"
        out_dir = data_dir / "callgrind"
        out_dir.mkdir()
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={out_dir}/callgrind.out.%p", sys.executable,
                realname_bin(), "serve", "--data-dir", str(data_dir), "--grpc-address", address,
                "--http-address", f"127.0.0.1:{free_port()}",
                "--admin-address", f"127.0.0.1:{free_port()}"]  # fmt: skip
        log = (data_dir / "serve.log").open("w")
        env = {**server_env(None), **env_extra}
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            pki = data_dir / "dev-pki"
            channel = grpc.secure_channel(
                address, client_credentials(pki, "operator-cmcc"), CHANNEL_OPTIONS
            )
            grpc.channel_ready_future(channel).result(timeout=600)
            stub = verification_pb2_grpc.VerificationServiceStub(channel)
            requests = _requests()
            for n in range(warmup):
                stub.CheckEligibility(requests[n % len(requests)], timeout=120)
            time.sleep(1)
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True,
                           capture_output=True)  # fmt: skip
            for n in range(calls):
                stub.CheckEligibility(requests[(warmup + n) % len(requests)], timeout=120)
            time.sleep(1)  # the audit writer's batch of these calls
            subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True,
                           capture_output=True)  # fmt: skip
            channel.close()
        finally:
            proc.terminate()
            proc.wait(timeout=300)
            log.close()
        return _total_ir(out_dir) / calls


def main() -> int:
    """Prints instructions per call for the configuration given."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--env", action="append", default=[], help="NAME=value for serve")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    ir = measure(args.calls, args.warmup, env)
    print(f"instructions per CheckEligibility ({' '.join(args.env) or 'default'}): {ir:,.0f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
