"""Transparency log benchmark: sustained appends with concurrent writers, and proofs from 1M.

`python -m bench.bench_log` (``--help`` for sizes). Two parts, on SQLite and PostgreSQL:

1. Appends: writer *processes* (each with writer threads) append issuance-sized entries, one
   entry per transaction as the registry does, for a fixed time while the background sequencer
   integrates every 200 ms exactly as ``realname serve`` runs it. Reported: appends committed/s,
   entries sequenced/s (until the last one has a signed checkpoint), batches, and the tree
   check (the final root equals an independent RFC 6962 computation over the stored entries).
2. Proofs: a 1,000,000-entry log, then inclusion proofs of random leaves and consistency proofs
   from random earlier sizes to the latest, each in its own read transaction as the gRPC
   servicer does; p50/p99 with a cold tile cache and in steady state, proof length, nodes and
   tiles read, and SHA-256 computations per proof. Every proof is verified.

Figures are printed, not asserted; PostgreSQL is the server at REALNAME_BENCH_DATABASE_URL or
REALNAME_TEST_DATABASE_URL (else an embedded one), in a database created for the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

import registry.log.reader as reader_module
import registry.merkle as merkle_module
from bench.postgres import fresh_database, postgres_server, server_facts
from registry.log.entries import AuditDigest, Issuance, StoreRef
from registry.log.reader import LogReader
from registry.log.sequencer import Sequencer, SequencerRunner
from registry.log.storage import (
    PENDING_INSERT_SQL,
    append_entries,
    append_entry,
    log_checkpoints,
    log_entries,
    pending_count,
    pending_row,
)
from registry.merkle import (
    CompactRange,
    consistency_nodes,
    inclusion_nodes,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from registry.note import Ed25519Signer
from registry.tiles import TILE_WIDTH, tiles_for_nodes
from services.storage import migrate
from services.storage.database import Database, DatabaseConfig, sqlite_url

ORIGIN = "bench.realname.example/log"


def signer() -> Ed25519Signer:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519Signer(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))


def certificate_der() -> bytes:
    """A real store-certificate-sized DER (ECDSA P-256, the registry's extensions' size)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bench Trading Co., Ltd."),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "91110000600037341L"),
            x509.NameAttribute(NameOID.COMMON_NAME, "tmall:bench-shop-000001"),
        ]
    )
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier("http://127.0.0.1:8080/crl/cmcc.crl")],
                        None,
                        None,
                        None,
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            # Stands in for the registry's authorization extension, which is about this size.
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier("1.3.6.1.4.1.99999.1.1"), b"\x04\x78" + b"\x0c" * 120
            ),
            critical=False,
        )
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def issuance(writer: str, number: int, der: bytes) -> Issuance:
    store = StoreRef("cmcc", "tmall", f"{writer}-{number:07d}", "91110000600037341L")
    return Issuance(dt.datetime.now(dt.UTC), store, 1 + number, der)


# --- part 1: appends -------------------------------------------------------------------------


def _writer_process(
    url: str, label: str, threads: int, seconds: float, der: bytes, driver: bool, out: Any
) -> None:
    db = Database(DatabaseConfig(url, pool_size=threads + 2))
    counts = [0] * threads
    # Wall-clock times, comparable across processes: the parent measures the span in which
    # every writer was writing, not the interpreters' start-up.
    started = time.time()
    deadline = time.monotonic() + seconds

    def write(slot: int) -> None:
        number = 0
        while time.monotonic() < deadline:
            entry = issuance(f"{label}t{slot}", number, der)
            if driver:
                params, _appended = pending_row(entry)
                db.run_tx(lambda tx, params=params: tx.execute(PENDING_INSERT_SQL, params))
            else:
                db.write(lambda conn, entry=entry: append_entry(conn, entry))
            number += 1
        counts[slot] = number

    workers = [threading.Thread(target=write, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((sum(counts), started, time.time()))
    db.dispose()


@dataclass
class AppendResult:
    backend: str
    writers: str
    appended: int
    append_seconds: float
    drain_seconds: float
    checkpoints: int
    entry_bytes: int
    root_ok: bool

    def line(self) -> str:
        rate = self.appended / self.append_seconds
        sequenced = self.appended / (self.append_seconds + self.drain_seconds)
        return (
            f"| {self.backend} | {self.writers} | {self.appended:,} | {rate:,.0f} | "
            f"{sequenced:,.0f} | {self.drain_seconds * 1000:,.0f} | {self.checkpoints:,} | "
            f"{self.entry_bytes} | {'yes' if self.root_ok else 'NO'} |"
        )


def bench_appends(
    backend: str, url: str, processes: int, threads: int, seconds: float, driver: bool
) -> AppendResult:
    db = Database(DatabaseConfig(url))
    migrate.upgrade(db.engine)
    sequencer = Sequencer(db.engine, signer(), ORIGIN, transact=db.write)
    sequencer.integrate_now()
    der = certificate_der()
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    runner = SequencerRunner(sequencer, 0.2)
    runner.start()
    procs = [
        context.Process(
            target=_writer_process, args=(url, f"p{n}", threads, seconds, der, driver, queue)
        )
        for n in range(processes)
    ]
    for proc in procs:
        proc.start()
    reports = [queue.get() for _ in procs]
    appended = sum(count for count, _start, _end in reports)
    append_seconds = max(end for _c, _s, end in reports) - min(start for _c, start, _e in reports)
    while db.read(pending_count):
        time.sleep(0.01)
    drain_seconds = max(0.0, time.time() - max(end for _c, _s, end in reports))
    for proc in procs:
        proc.join()
    runner.stop()
    with db.engine.connect() as conn:
        rows = conn.execute(select(log_entries.c.entry).order_by(log_entries.c.idx))
        edge = CompactRange()
        sizes = []
        for row in rows:
            edge.append(leaf_hash(bytes(row.entry)))
            sizes.append(len(row.entry))
        checkpoint = LogReader().latest_checkpoint(conn)
        checkpoints = conn.exec_driver_sql("SELECT count(*) FROM log_checkpoints").scalar_one()
    db.dispose()
    return AppendResult(
        f"{backend} ({'driver' if driver else 'SQLAlchemy'})",
        f"{processes}x{threads}",
        appended,
        append_seconds,
        drain_seconds,
        int(checkpoints),
        int(statistics.mean(sizes)) if sizes else 0,
        edge.size == appended == checkpoint.size and edge.root() == checkpoint.root,
    )


# --- part 2: proofs --------------------------------------------------------------------------


class HashCounter:
    """Counts SHA-256 node hashes made through registry.merkle.node_hash."""

    def __init__(self) -> None:
        self.count = 0
        self._original = merkle_module.node_hash

    @contextmanager
    def counting(self) -> Iterator[None]:
        original = self._original

        def counted(left: bytes, right: bytes) -> bytes:
            self.count += 1
            return original(left, right)

        merkle_module.node_hash = counted
        reader_module.node_hash = counted  # type: ignore[attr-defined]
        try:
            yield
        finally:
            merkle_module.node_hash = original
            reader_module.node_hash = original  # type: ignore[attr-defined]


def build_log(db: Database, size: int) -> float:
    started = time.monotonic()
    now = dt.datetime.now(dt.UTC)
    chunk = 20_000
    for start in range(0, size, chunk):
        entries = [
            AuditDigest(now, "bench", (start + i).to_bytes(32, "big"))
            for i in range(min(chunk, size - start))
        ]
        db.write(lambda conn, entries=entries: append_entries(conn, entries))
    Sequencer(db.engine, signer(), ORIGIN, batch_size=50_000, transact=db.write).integrate_now()
    return time.monotonic() - started


def warmed_reader(db: Database, size: int) -> LogReader:
    """A reader in a long-running server's steady state: every full tile already expanded."""
    reader = LogReader()
    with db.engine.connect() as conn:
        for first in range(0, size, TILE_WIDTH):
            reader.inclusion_proof(conn, first, size)
    return reader


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def time_proofs(
    db: Database, make: Callable[[Any, LogReader], Any], reader: LogReader, rounds: int
) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        db.read(lambda conn: make(conn, reader))
        out.append((time.perf_counter() - started) * 1000)
    return out


def bench_proofs(backend: str, url: str, size: int, rounds: int, seed: int) -> list[str]:
    db = Database(DatabaseConfig(url))
    migrate.upgrade(db.engine)
    built = build_log(db, size)
    rng = random.Random(seed)
    entries_root = db.read(lambda conn: LogReader().latest_checkpoint(conn))
    lines = [f"  {backend}: built a {size:,}-entry log in {built:.1f} s"]

    def inclusion(conn: Any, reader: LogReader) -> None:
        index = rng.randrange(size)
        proof = reader.inclusion_proof(conn, index)
        leaf = conn.execute(
            select(log_entries.c.leaf_hash).where(log_entries.c.idx == index)
        ).scalar_one()
        verify_inclusion(bytes(leaf), index, size, proof.hashes, entries_root.root)

    checkpoint_sizes = [s for s in db.read(_checkpoint_sizes) if 0 < s < size]

    def consistency(conn: Any, reader: LogReader) -> None:
        # Roots of earlier sizes are known where the log signed them: at each batch.
        first = rng.choice(checkpoint_sizes)
        old = reader.checkpoint_at(conn, first)
        assert old is not None
        proof = reader.consistency_proof(conn, first)
        verify_consistency(first, size, proof.hashes, old.root, entries_root.root)

    # Proof cost alone (what the servicer does); verification above runs outside the timing
    # of these functions.
    def inclusion_only(conn: Any, reader: LogReader) -> None:
        reader.inclusion_proof(conn, rng.randrange(size))

    def consistency_only(conn: Any, reader: LogReader) -> None:
        reader.consistency_proof(conn, rng.randrange(1, size))

    for name, check, measure, plan in (
        (
            "inclusion",
            inclusion,
            inclusion_only,
            lambda: inclusion_nodes(rng.randrange(size), size),
        ),
        (
            "consistency",
            consistency,
            consistency_only,
            lambda: consistency_nodes(rng.randrange(1, size), size),
        ),
    ):
        time_proofs(db, check, LogReader(), 50)  # correctness: every proof verifies
        cold = time_proofs(db, measure, LogReader(tile_cache_size=1), rounds)
        warm_reader = warmed_reader(db, size)
        warm = time_proofs(db, measure, warm_reader, rounds)
        counter = HashCounter()
        lengths, nodes, tiles = [], [], []
        with counter.counting():
            cold_reader = LogReader(tile_cache_size=1)
            for _ in range(200):
                proof_plan = plan()
                lengths.append(len(proof_plan.rehash([b"\x00" * 32] * len(proof_plan.ids))))
                nodes.append(len(proof_plan.ids))
                tiles.append(len(tiles_for_nodes(proof_plan.ids, size)))
            before = counter.count
            time_proofs(db, measure, cold_reader, 200)
            hashes_cold = (counter.count - before) / 200
            before = counter.count
            time_proofs(db, measure, warm_reader, 200)
            hashes_warm = (counter.count - before) / 200
        lines.append(
            f"| {backend} | {name} | {statistics.median(cold):.3f} | "
            f"{percentile(cold, 0.99):.3f} | "
            f"{statistics.median(warm):.3f} | {percentile(warm, 0.99):.3f} | "
            f"{statistics.mean(lengths):.1f} | {statistics.mean(nodes):.1f} | "
            f"{statistics.mean(tiles):.1f} | {hashes_cold:.0f} / {hashes_warm:.1f} |"
        )
    db.dispose()
    return lines


def _checkpoint_sizes(conn: Any) -> list[int]:
    return [int(size) for size in conn.execute(select(log_checkpoints.c.size)).scalars()]


# --- driver ----------------------------------------------------------------------------------


@contextmanager
def backends(work_dir: Path, names: list[str]) -> Iterator[list[tuple[str, Callable[[], Any]]]]:
    """Yields (backend, fresh-database context factory) pairs for the requested backends."""
    out: list[tuple[str, Callable[[], Any]]] = []
    counter = iter(range(1_000_000))

    @contextmanager
    def sqlite_db() -> Iterator[str]:
        path = work_dir / f"sqlite-{next(counter)}"
        path.mkdir()
        yield sqlite_url(path)

    if "sqlite" in names:
        out.append(("sqlite", sqlite_db))
    if "postgresql" in names:
        with postgres_server() as server:
            facts = server_facts(server.url)
            print(
                f"  postgresql: {server.source}, version {facts['version']}, fsync "
                f"{facts['fsync']}, synchronous_commit {facts['synchronous_commit']}"
            )
            out.append(("postgresql", lambda: fresh_database(server.url)))
            yield out
            return
    yield out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_log", description=__doc__)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--processes", type=int, default=2, help="writer processes")
    parser.add_argument("--threads", type=int, default=4, help="writer threads per process")
    parser.add_argument("--seconds", type=float, default=10.0, help="append phase duration")
    parser.add_argument("--size", type=int, default=1_000_000, help="log size for proofs")
    parser.add_argument("--rounds", type=int, default=2000, help="proofs timed per kind")
    parser.add_argument("--skip-appends", action="store_true")
    parser.add_argument("--skip-proofs", action="store_true")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.backends.split(",") if name.strip()]
    work_dir = Path(tempfile.mkdtemp(prefix="realname-bench-log-"))
    print("=== transparency log ===")
    print(f"  nproc {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    try:
        with backends(work_dir, names) as available:
            if not args.skip_appends:
                print(
                    "\nappends: one entry per transaction, writers = processes x threads, "
                    f"{args.seconds:.0f} s, sequencer every 200 ms (target ≥ 2,000 entries/s)"
                )
                print(
                    "| backend | writers | entries | appended/s | sequenced/s | drain ms | "
                    "checkpoints | entry bytes | root verified |"
                )
                print("| --- | --: | --: | --: | --: | --: | --: | --: | :-: |")
                for backend, fresh in available:
                    for driver in (False, True):
                        with fresh() as url:
                            result = bench_appends(
                                backend, url, args.processes, args.threads, args.seconds, driver
                            )
                        print(result.line(), flush=True)
            if not args.skip_proofs:
                print(
                    f"\nproofs from a {args.size:,}-entry log, ms per proof including its read "
                    "transaction (target ≤ 1 ms); cold = no tile cache, warm = every full tile "
                    "cached (a running server's steady state)"
                )
                header = (
                    "| backend | proof | cold p50 | cold p99 | warm p50 | warm p99 | hashes in "
                    "proof | nodes | tiles | SHA-256 per proof cold / warm |"
                )
                rows = []
                for backend, fresh in available:
                    with fresh() as url:
                        rows += bench_proofs(backend, url, args.size, args.rounds, seed=7)
                print("\n".join(line for line in rows if not line.startswith("|")))
                print(header)
                print("| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: |")
                print("\n".join(line for line in rows if line.startswith("|")), flush=True)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
