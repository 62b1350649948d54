"""A legacy import killed with SIGKILL mid-commit resumes where it stopped, through the real CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc

from services.proto.realname.v1 import legacy_pb2 as lpb
from services.storage.database import Database
from tests.integration.test_legacy import legacy
from tests.support.legacy_rows import file_id, good_rows, write_csv
from tests.support.server import GrpcHarness, realname_bin


def count_cards(db: Database, import_id: str) -> tuple[int, int]:
    def work(tx: object) -> tuple[int, int]:
        row = tx.one(  # type: ignore[attr-defined]
            "SELECT COUNT(*), COUNT(DISTINCT msisdn) FROM cards WHERE import_id = ?", (import_id,)
        )
        return int(row[0]), int(row[1])

    return db.run_tx(work, readonly=True)


def test_a_killed_import_resumes_where_it_stopped(
    grpc_server: GrpcHarness, db: Database, tmp_path: Path
) -> None:
    total = 6000
    path = write_csv(tmp_path / "big.csv", good_rows(total, start=10_000))
    argv = [
        realname_bin(), "import", "legacy", "--data-dir", str(grpc_server.pki_dir.parent),
        "--address", grpc_server.address, "--as", "operator-cmcc", "--batch-size", "20",
        str(path),
    ]  # fmt: skip
    stub = legacy(grpc_server)
    import_id = file_id(path)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            committed = stub.GetImport(
                lpb.GetImportRequest(import_id=import_id)
            ).legacy_import.committed_rows
        except grpc.RpcError:
            committed = 0
        if committed >= 200:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the import finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(0.5)  # the server notices the cut stream
    state = stub.GetImport(lpb.GetImportRequest(import_id=import_id)).legacy_import
    assert 200 <= state.committed_rows < total
    assert state.state == lpb.IMPORT_STATE_IMPORTING
    assert count_cards(db, import_id) == (state.committed_rows, state.committed_rows)

    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming after row {state.committed_rows:,}" in rerun.stderr
    done = stub.GetImport(lpb.GetImportRequest(import_id=import_id)).legacy_import
    assert done.state == lpb.IMPORT_STATE_COMPLETED
    assert (done.imported_rows, done.failed_rows) == (total, 0)
    assert count_cards(db, import_id) == (total, total)


def shown_counts(lines: list[str]) -> list[int]:
    """The row counts of the import progress lines (``import [##…] 1,200/6,000 (20%) …``)."""
    found = (re.search(r"\] ([\d,]+)/", line) for line in lines if line.startswith("import ["))
    return [int(m.group(1).replace(",", "")) for m in found if m is not None]


def test_the_progress_line_shows_only_committed_rows(
    grpc_server: GrpcHarness, tmp_path: Path
) -> None:
    """Killed mid-commit, the CLI has never shown more rows than the server had committed."""
    total = 6000
    path = write_csv(tmp_path / "watched.csv", good_rows(total, start=30_000))
    argv = [
        realname_bin(), "import", "legacy", "--data-dir", str(grpc_server.pki_dir.parent),
        "--address", grpc_server.address, "--as", "operator-cmcc", "--batch-size", "20",
        str(path),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    deadline = time.monotonic() + 60
    # Until the line shows a tenth of the file: rows sent run far ahead of rows committed.
    while time.monotonic() < deadline and not any(n >= total // 10 for n in shown_counts(lines)):
        assert proc.poll() is None, "the import ended before it showed 10 %"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    reader.join(timeout=10)
    proc.stderr.close()
    time.sleep(0.5)  # the server notices the cut stream
    state = legacy(grpc_server).GetImport(lpb.GetImportRequest(import_id=file_id(path)))
    committed = state.legacy_import.committed_rows
    shown = shown_counts(lines)
    assert shown and max(shown) >= total // 10
    assert committed < total, "the import finished before it could be killed"
    assert max(shown) <= committed, (max(shown), committed)
