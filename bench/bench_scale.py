"""Scale-out benches on PostgreSQL: workers 1 vs 2, default vs SERIALIZABLE, 10k vs 10M cards,
a synchronous standby vs one server.

Four phases, each runnable alone (``python -m bench.bench_scale workers|isolation|scale``):

- ``workers``: CheckEligibility and ActivateCard (distinct documents) against `realname serve
  --workers 1` and `--workers 2`, each on its own fresh database, measured alternately so that a
  shared machine's drift hits both sides; the ratio is workers 2 over workers 1.
- ``isolation``: ActivateCard on distinct documents and on one hot document with the server's
  default isolation and with ``REALNAME_DB_ISOLATION=serializable``; a fresh server per
  measurement, so that PostgreSQL's own count of rolled-back transactions (which includes
  serialization-failure retries) can be read per workload once its sessions have closed.
- ``scale``: CheckEligibility p99 over a fixed number of calls against a database holding 10,000
  cards and one holding 10,000,000 (``--cards``), alternating rounds. The documents called are a
  known subset loaded through the real pseudonymizer (the same in both databases); the bulk is
  generated in SQL (``generate_series``, SHA-256-derived 32-byte keys, unique MSISDNs and
  Luhn-valid ICCIDs, holdings counting the cards) with the secondary indexes built after the load.

- ``ha``: ActivateCard on distinct documents against a Patroni primary with a synchronous
  standby (tests/support/ha_cluster.py) and against the single server, alternately in one run
  (the ratio), then the failover time: the primary's machine killed, to the first write
  committed through the multi-host URL.

Each phase prints its figures and writes its section of bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
import psycopg
from sqlalchemy.engine import make_url

import bench.run as run
from bench.bench_compliance import report_lines, time_report
from bench.common import CHANNEL_OPTIONS, ServerProcess, client_credentials, update_results_section
from bench.load import percentile, resident_id
from bench.postgres import fresh_database, postgres_server, server_facts
from registry.subscribers import DocumentType
from services.domain.documents import Document
from services.domain.numbers import luhn_complete
from services.proto.realname.v1 import common_pb2, verification_pb2, verification_pb2_grpc
from services.runtime.key_files import load_pepper
from services.storage.database import libpq_params, normalize_url
from tests.support.ha_cluster import HaCluster

# A generous rate-limit default would throttle one principal driving hundreds of calls a second,
# and the regulator's HTTPS listener has a fixed default port that two bench servers (or a server
# already running on the machine) would contend for; the benches measure neither.
BENCH_SERVER_ENV = {
    "REALNAME_RATE_PRINCIPAL": "off",
    "REALNAME_RATE_DOCUMENT": "off",
    "REALNAME_ADMIN_ADDRESS": "off",
}
SERIALIZABLE = {"REALNAME_DB_ISOLATION": "serializable"}
SCALE_TARGET = 1.3
SMALL_CARDS = 10_000

# The known subset: documents whose keys come from the real pseudonymizer, two cards each with
# cmcc, in both databases; CheckEligibility calls draw from them.
KNOWN_REGION = "130102"
KNOWN_DOCS = 5_000
CARDS_PER_DOC = 2
KNOWN_MSISDN_PREFIX = "198"
KNOWN_ICCID_FAMILY = "8"
# The bulk: card i belongs to document i / 2, whose two cards are with two different operators
# (so holdings has one row per card); MSISDN prefix per operator, ICCID family 7.
BULK_OPERATORS = ("cmcc", "cucc", "ctcc")
BULK_PREFIXES = ("147", "145", "149")
BULK_ICCID_STEM = "8986007"
BULK_CHUNK = 1_000_000


def psycopg_conninfo(url: str) -> str:
    """The SQLAlchemy URL as a libpq URI for psycopg.connect."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def postmaster_pid(url: str) -> int | None:
    """The local PostgreSQL server's pid, so its CPU is counted with the server's."""
    pid = server_facts(url).get("postmaster_pid")
    return int(pid) if pid else None


def server_pids(server: ServerProcess) -> list[int]:
    """The serving process and its forked workers."""
    return [server.proc.pid] + [c.pid for c in psutil.Process(server.proc.pid).children()]


@contextmanager
def fresh_server(
    data_dir: Path, pg_url: str, label: str, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[tuple[ServerProcess, str]]:
    """A fresh migrated database and a `realname serve` on it; yields (server, database URL)."""
    with fresh_database(pg_url) as url:
        run.dev_init(data_dir, url)
        server = run.start_realname(
            data_dir, label, url, workers, extra_env={**BENCH_SERVER_ENV, **(env or {})}
        )
        with run.running(server, data_dir / "dev-pki"):
            yield server, url


def ratio(a: float, b: float) -> str:
    """a / b with two decimals."""
    return f"{a / b:.2f}" if b else "n/a"


def phase_line(name: str, phase: run.Phase) -> str:
    """One Markdown table row for a load-client phase."""
    r = phase.result
    return (
        f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
        f"{run.cpu_per_call(phase)} | {run.outcome_text(phase)} |"
    )


PHASE_HEADER = [
    "| workload | RPC/s | p50 ms | p99 ms | srv CPU ms/call | outcomes (whole run) |",
    "| --- | --: | --: | --: | --: | --- |",
]


def check_phases(phases: list[run.Phase]) -> list[str]:
    """Problems a phase's outcomes show (unexpected codes, a hot document not at exactly 5)."""
    problems = [
        f"{p.workload}/{p.backend}: unexpected {p.unexpected}" for p in phases if p.unexpected
    ]
    for p in phases:
        if p.workload == "hot" and p.result["all_codes"].get("OK") != 5:
            problems.append(f"hot/{p.backend}: {p.result['all_codes'].get('OK', 0)} OK, not 5")
    return problems


# ---------------------------------------------------------------------------------------------
# workers 1 vs 2


# Issue 17: two workers serve CheckEligibility at least this many times as fast as one.
WORKERS_TARGET = 1.6


def workers_phase(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Measures --workers 1 and 2 alternately; returns (Markdown lines, problems)."""
    # Several connections for both sides, so that SO_REUSEPORT can spread them over two workers.
    cfg = run.BenchConfig(args.concurrency, 4, args.warmup, args.duration)
    phases: dict[tuple[str, int], run.Phase] = {}
    with tempfile.TemporaryDirectory(prefix="realname-bench-workers-") as tmp:
        data_dir = Path(tmp)
        with postgres_server() as pg, ExitStack() as stack:
            servers = {
                n: stack.enter_context(fresh_server(data_dir, pg.url, f"pg-workers{n}", n))
                for n in (1, 2)
            }
            db_pid = postmaster_pid(pg.url)
            for workload in ("check", "activate"):
                for n, (server, _url) in servers.items():
                    watch = server_pids(server) + ([db_pid] if db_pid else [])
                    phases[workload, n] = run.run_load(
                        server, data_dir / "dev-pki", workload, f"pg, workers {n}", cfg, watch
                    )
    rows, summary = [], []
    print("\nworkers 1 vs 2 (PostgreSQL, 4 client channels):")
    for workload, title in (("check", "CheckEligibility"), ("activate", "ActivateCard, distinct")):
        one, two = phases[workload, 1], phases[workload, 2]
        rows += [phase_line(f"{title}, workers 1", one), phase_line(f"{title}, workers 2", two)]
        text = (
            f"{title}: workers 1 {one.result['rps']:,.0f} RPC/s, workers 2 "
            f"{two.result['rps']:,.0f} RPC/s, ratio 2/1 = "
            f"{ratio(two.result['rps'], one.result['rps'])}"
        )
        if workload == "check":
            met = two.result["rps"] >= WORKERS_TARGET * one.result["rps"]
            text += f" (target ≥ {WORKERS_TARGET}: {'met' if met else 'missed'})"
        print(f"  {text}")
        summary.append(f"- {text}")
    lines = [
        "### PostgreSQL, `--workers 1` vs `--workers 2`",
        "",
        *PHASE_HEADER,
        *rows,
        "",
        *summary,
        f"- Load: {cfg.concurrency} calls in flight over 4 mTLS channels, {cfg.warmup:g} s "
        f"warm-up, {cfg.duration:g} s measured; each server on its own fresh database; client, "
        "servers and PostgreSQL share the machine's cores.",
    ]
    return lines, check_phases(list(phases.values()))


# ---------------------------------------------------------------------------------------------
# default vs SERIALIZABLE


def rollbacks(url: str) -> int:
    """PostgreSQL's count of rolled-back transactions in this database (sessions closed)."""
    with psycopg.connect(psycopg_conninfo(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def isolation_phase(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Measures ActivateCard distinct and hot under both isolation levels."""
    cfg = run.BenchConfig(args.concurrency, 1, args.warmup, args.duration)
    results: dict[tuple[str, str], tuple[run.Phase, int]] = {}
    levels = {"default": {}, "serializable": SERIALIZABLE}
    with tempfile.TemporaryDirectory(prefix="realname-bench-isolation-") as tmp:
        data_dir = Path(tmp)
        with postgres_server() as pg, ExitStack() as stack:
            urls = {level: stack.enter_context(fresh_database(pg.url)) for level in levels}
            for url in urls.values():
                run.dev_init(data_dir, url)
            db_pid = postmaster_pid(pg.url)
            for workload in ("activate", "hot"):
                for level, env in levels.items():
                    url = urls[level]
                    before = rollbacks(url)
                    server = run.start_realname(
                        data_dir, f"pg-{level}", url, extra_env={**BENCH_SERVER_ENV, **env}
                    )
                    with run.running(server, data_dir / "dev-pki"):
                        watch = server_pids(server) + ([db_pid] if db_pid else [])
                        phase = run.run_load(
                            server, data_dir / "dev-pki", workload, f"pg, {level}", cfg, watch
                        )
                    # Backends report their statistics when they exit, shortly after the server.
                    time.sleep(1.5)
                    results[workload, level] = (phase, rollbacks(url) - before)
    lines = [
        "### PostgreSQL, default isolation (READ COMMITTED) vs "
        "`REALNAME_DB_ISOLATION=serializable`",
        "",
        "| workload | RPC/s | p50 ms | p99 ms | srv CPU ms/call | outcomes (whole run) "
        "| rolled-back transactions |",
        "| --- | --: | --: | --: | --: | --- | --: |",
    ]
    print("\ndefault vs SERIALIZABLE (PostgreSQL):")
    summary = []
    for workload, title in (("activate", "ActivateCard, distinct"), ("hot", "ActivateCard, hot")):
        for level in levels:
            phase, rolled = results[workload, level]
            lines.append(f"{phase_line(f'{title}, {level}', phase)} {rolled:,} |")
        base, ser = results[workload, "default"][0], results[workload, "serializable"][0]
        text = (
            f"{title}: default {base.result['rps']:,.0f} RPC/s, serializable "
            f"{ser.result['rps']:,.0f} RPC/s, ratio serializable/default = "
            f"{ratio(ser.result['rps'], base.result['rps'])}; rolled back "
            f"{results[workload, 'default'][1]:,} vs {results[workload, 'serializable'][1]:,}; "
            f"errors {sum(base.unexpected.values())} vs {sum(ser.unexpected.values())}"
        )
        print(f"  {text}")
        summary.append(f"- {text}")
    lines += [
        "",
        *summary,
        "- Rolled-back transactions: PostgreSQL's `pg_stat_database.xact_rollback` over the "
        "measurement (each serialization failure retried by the server is one; so is the fast "
        "path's deliberate re-run on a surprise such as a full cap); errors: calls answered with "
        "anything the workload does not expect (e.g. UNAVAILABLE TRANSACTION_CONFLICT after 40 "
        "lost rounds).",
        f"- Load: {cfg.concurrency} calls in flight on one mTLS channel, {cfg.warmup:g} s warm-up, "
        f"{cfg.duration:g} s measured; a fresh server per row, one database per isolation level.",
    ]
    return lines, check_phases([phase for phase, _ in results.values()])


# ---------------------------------------------------------------------------------------------
# CheckEligibility p99 at 10,000 vs 10,000,000 cards


def known_document(n: int) -> Document:
    """The ``n``-th document of the known subset."""
    return Document(DocumentType.RESIDENT_ID_CARD, resident_id(KNOWN_REGION, n))


def iccid_sql(stem: str) -> str:
    """SQL for ``stem`` + the 12 digits of ``i`` + the Luhn check digit, without string loops."""
    # The payload is 19 digits; counted from the right, digits at odd positions (the last one
    # first) are doubled. The stem's share of the sum is a constant.
    payload_len = len(stem) + 12
    doubled = "(ARRAY[0,2,4,6,8,1,3,5,7,9])"

    def weight(pos_from_right: int, digit: str) -> str:
        return f"{doubled}[{digit} + 1]" if pos_from_right % 2 == 1 else digit

    constant = 0
    for index, ch in enumerate(stem):
        d = int(ch)
        constant += (2 * d if 2 * d < 10 else 2 * d - 9) if (payload_len - index) % 2 == 1 else d
    terms = [
        weight(12 - k, f"((i / {10 ** (11 - k)}) % 10)::int")  # k-th of the 12 varying digits
        for k in range(12)
    ]
    total = f"({constant} + {' + '.join(terms)})"
    return f"'{stem}' || lpad(i::text, 12, '0') || ((10 - {total} % 10) % 10)::text"


def bulk_cards_sql() -> str:
    """INSERT ... SELECT of bulk cards ``i`` in [%s, %s]."""
    ops = "ARRAY[" + ",".join(f"'{o}'" for o in BULK_OPERATORS) + "]"
    prefixes = "ARRAY[" + ",".join(f"'{p}'" for p in BULK_PREFIXES) + "]"
    slot = "((i / 2 + i % 2) % 3) + 1"
    return (
        "INSERT INTO cards (operator_id, msisdn, iccid, id_key, document_type, document_masked, "
        "card_type, state, channel, agent_id, activated_at) "
        f"SELECT ({ops})[{slot}], ({prefixes})[{slot}] || lpad(i::text, 8, '0'), "
        f"{iccid_sql(BULK_ICCID_STEM)}, "
        "sha256(convert_to('bench-bulk:' || (i / 2)::text, 'UTF8')), 1, "
        "'1301**********' || lpad(((i / 2) % 10000)::text, 4, '0'), 1, 'ACTIVE', 'agent', "
        "'bench-bulk', now() - make_interval(secs => i % 31536000) "
        "FROM generate_series(%s::bigint, %s::bigint) AS i"
    ).replace(" % ", " %% ")  # modulo, not a placeholder


def bulk_holdings_sql() -> str:
    """INSERT ... SELECT of the holdings of bulk cards ``i`` in [%s, %s] (one per card)."""
    ops = "ARRAY[" + ",".join(f"'{o}'" for o in BULK_OPERATORS) + "]"
    return (
        "INSERT INTO holdings (id_key, operator_id, active) "
        "SELECT sha256(convert_to('bench-bulk:' || (i / 2)::text, 'UTF8')), "
        f"({ops})[((i / 2 + i % 2) % 3) + 1], 1 "
        "FROM generate_series(%s::bigint, %s::bigint) AS i"
    ).replace(" % ", " %% ")  # modulo, not a placeholder


def load_known(conn: psycopg.Connection[Any], pepper_path: Path) -> None:
    """Loads the known subset: keys from the real pseudonymizer, two cmcc cards per document."""
    pseudo = load_pepper(pepper_path)
    cards: list[tuple[object, ...]] = []
    holdings: list[tuple[object, ...]] = []
    for n in range(KNOWN_DOCS):
        doc = known_document(n)
        key = pseudo.document_key(doc)
        holdings.append((key, "cmcc", CARDS_PER_DOC))
        for c in range(CARDS_PER_DOC):
            seq = n * CARDS_PER_DOC + c
            cards.append(
                ("cmcc", f"{KNOWN_MSISDN_PREFIX}{seq:08d}",
                 luhn_complete(f"898600{KNOWN_ICCID_FAMILY}{seq:012d}"), key, 1, doc.masked(),
                 1, "ACTIVE", "agent", "bench-known")
            )  # fmt: skip
    with conn.cursor() as cur:
        with cur.copy(
            "COPY cards (operator_id, msisdn, iccid, id_key, document_type, document_masked, "
            "card_type, state, channel, agent_id, activated_at) FROM STDIN"
        ) as copy:
            for row in cards:
                copy.write_row((*row, "now"))
        with cur.copy("COPY holdings (id_key, operator_id, active) FROM STDIN") as copy:
            for row in holdings:
                copy.write_row(row)


def secondary_indexes(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str | None, str]]:
    """(table, index, constraint or None, definition) of indexes the bulk load can drop."""
    rows = conn.execute(
        "SELECT t.relname, i.relname, c.conname, "
        "COALESCE(pg_get_constraintdef(c.oid), pg_get_indexdef(i.oid)) "
        "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_class t ON t.oid = x.indrelid "
        "LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.contype IN ('p', 'u') "
        "WHERE t.relname IN ('cards', 'holdings') AND t.relnamespace = 'public'::regnamespace "
        "ORDER BY t.relname, i.relname"
    ).fetchall()
    # cards' primary key is referenced by foreign keys (and grows in order anyway): it stays.
    return [(t, i, c, d) for t, i, c, d in rows if not (t == "cards" and c is not None)]


def load_cards(url: str, pepper_path: Path, total: int) -> dict[str, float]:
    """Loads ``total`` cards (the known subset, then the bulk); returns seconds per step."""
    bulk = total - KNOWN_DOCS * CARDS_PER_DOC
    if bulk < 0:
        raise ValueError(f"at least {KNOWN_DOCS * CARDS_PER_DOC:,} cards")
    steps: dict[str, float] = {}
    with psycopg.connect(psycopg_conninfo(url), autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        started = time.perf_counter()
        with conn.transaction():
            load_known(conn, pepper_path)
        steps["known subset"] = time.perf_counter() - started
        if bulk:
            indexes = secondary_indexes(conn)
            for table, index, constraint, _ in indexes:
                if constraint:
                    conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"')
                else:
                    conn.execute(f'DROP INDEX "{index}"')
            # Generated rows name operators that exist (checked by verify_load): skip the
            # per-row foreign-key triggers, which cost twice the insert itself.
            conn.execute("SET session_replication_role = replica")
            started = time.perf_counter()
            for first in range(0, bulk, BULK_CHUNK):
                last = min(first + BULK_CHUNK, bulk) - 1
                with conn.transaction():
                    conn.execute(bulk_cards_sql(), (first, last))
                    conn.execute(bulk_holdings_sql(), (first, last))
                print(f"    {last + 1:>12,} / {bulk:,} bulk cards", flush=True)
            steps["bulk insert"] = time.perf_counter() - started
            conn.execute("SET session_replication_role = DEFAULT")
            started = time.perf_counter()
            for table, _index, constraint, definition in indexes:
                if constraint:
                    conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{constraint}" {definition}')
                else:
                    conn.execute(definition)
            steps["indexes"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) cards")
        conn.execute("VACUUM (ANALYZE) holdings")
        steps["vacuum analyze"] = time.perf_counter() - started
        verify_load(conn, total)
    return steps


def verify_load(conn: psycopg.Connection[Any], total: int) -> None:
    """Checks the load: card count, holdings counting the cards, bulk ICCIDs Luhn-valid."""
    cards, held = conn.execute(
        "SELECT (SELECT count(*) FROM cards), (SELECT sum(active) FROM holdings)"
    ).fetchone() or (0, 0)
    if cards != total or held != total:
        raise RuntimeError(f"loaded {cards} cards and holdings for {held}, expected {total}")
    orphans = conn.execute(
        "SELECT count(*) FROM (SELECT DISTINCT operator_id FROM holdings UNION "
        "SELECT DISTINCT operator_id FROM cards) used "
        "WHERE operator_id NOT IN (SELECT id FROM operators)"
    ).fetchone()
    if orphans is None or orphans[0]:
        raise RuntimeError("loaded rows name operators that do not exist")
    for (iccid,) in conn.execute(
        "SELECT iccid FROM cards WHERE agent_id = 'bench-bulk' ORDER BY id LIMIT 50"
    ):
        if luhn_complete(iccid[:-1]) != iccid:
            raise RuntimeError(f"bulk ICCID {iccid} fails its Luhn check")


def relation_sizes(url: str) -> str:
    """Table + index sizes of cards and holdings, for the report."""
    with psycopg.connect(psycopg_conninfo(url)) as conn:
        row = conn.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('cards')), "
            "pg_size_pretty(pg_total_relation_size('holdings'))"
        ).fetchone()
    return f"cards {row[0]}, holdings {row[1]}" if row else "?"


def run_probe(server: ServerProcess, pki_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One probe-client process: a fixed number of CheckEligibility calls."""
    argv = [sys.executable, "-m", "bench.bench_scale", "probe", "--target", server.address,
            "--pki-dir", str(pki_dir), "--calls", str(args.calls),
            "--probe-concurrency", str(args.probe_concurrency)]  # fmt: skip
    done = subprocess.run(
        argv, cwd=run.REPO_ROOT, capture_output=True, text=True, check=False, timeout=1200
    )
    if done.returncode != 0:
        raise RuntimeError(f"probe failed:\n{done.stderr}\nserver log:\n{server.log_tail()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def scale_phase(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Loads both databases, then alternates probe rounds between them."""
    sizes = {"small": SMALL_CARDS, "large": max(args.cards, SMALL_CARDS)}
    loads: dict[str, dict[str, float]] = {}
    footprint: dict[str, str] = {}
    rounds: dict[str, list[dict[str, Any]]] = {"small": [], "large": []}
    with tempfile.TemporaryDirectory(prefix="realname-bench-scale-") as tmp:
        data_dir = Path(tmp)
        with postgres_server() as pg, ExitStack() as stack:
            urls = {side: stack.enter_context(fresh_database(pg.url)) for side in sizes}
            for side, cards in sizes.items():
                run.dev_init(data_dir, urls[side])
                print(f"  loading {cards:,} cards ({side})", flush=True)
                loads[side] = load_cards(urls[side], data_dir / "pepper", cards)
                footprint[side] = relation_sizes(urls[side])
                if side == "large":
                    # Issue 7: the regulator's report over the same 10,000,000 cards.
                    report_timing = time_report(urls[side])
                    print(
                        f"  compliance report over {cards:,} cards: best "
                        f"{report_timing['best_s']:.2f} s, worst {report_timing['worst_s']:.2f} s",
                        flush=True,
                    )
                print(
                    f"  loaded {cards:,} cards in {sum(loads[side].values()):.1f} s ("
                    + ", ".join(f"{k} {v:.1f} s" for k, v in loads[side].items())
                    + f"); {footprint[side]}",
                    flush=True,
                )
            for side in sizes:
                # The code may have gained a migration during a long load; serve refuses a
                # database behind it.
                run.dev_init(data_dir, urls[side])
            servers = {
                side: stack.enter_context(
                    run.running(
                        run.start_realname(
                            data_dir, f"pg-{side}", urls[side], extra_env=BENCH_SERVER_ENV
                        ),
                        data_dir / "dev-pki",
                    )
                )
                for side in sizes
            }
            for index in range(args.rounds):
                for side, cards in sizes.items():
                    result = run_probe(servers[side], data_dir / "dev-pki", args)
                    rounds[side].append(result)
                    print(
                        f"  round {index + 1} {cards:>12,} cards: p50 {result['p50_ms']:.2f} "
                        f"ms, p99 {result['p99_ms']:.2f} ms, {result['rps']:,.0f} RPC/s, "
                        f"codes {result['codes']}",
                        flush=True,
                    )
    pooled = {side: sorted(x for r in rounds[side] for x in r["latencies_ms"]) for side in sizes}
    p99 = {side: percentile(pooled[side], 0.99) for side in sizes}
    p50 = {side: percentile(pooled[side], 0.50) for side in sizes}
    scale_ratio = p99["large"] / p99["small"]
    verdict = "met" if scale_ratio <= SCALE_TARGET else "MISSED"
    problems = [
        f"scale/{side}: codes {r['codes']}"
        for side in sizes
        for r in rounds[side]
        if set(r["codes"]) != {"OK"}
    ]
    print("\nCheckEligibility p99, 10,000 vs 10,000,000 cards (PostgreSQL):")
    lines = [
        "### CheckEligibility p99 at 10,000 vs 10,000,000 cards (PostgreSQL)",
        "",
        "| cards loaded | load time | size | p50 ms | p99 ms | p99 per round ms | RPC/s (mean) |",
        "| --: | --: | --- | --: | --: | --- | --: |",
    ]
    for side, cards in sizes.items():
        per_round = ", ".join(f"{r['p99_ms']:.2f}" for r in rounds[side])
        rps = sum(r["rps"] for r in rounds[side]) / len(rounds[side])
        row = (
            f"| {cards:,} | {sum(loads[side].values()):.1f} s | {footprint[side]} | "
            f"{p50[side]:.2f} | {p99[side]:.2f} | {per_round} | {rps:,.0f} |"
        )
        lines.append(row)
        print(
            f"  {cards:>12,} cards: load {sum(loads[side].values()):.1f} s, p50 {p50[side]:.2f} "
            f"ms, p99 {p99[side]:.2f} ms (rounds: {per_round}), {rps:,.0f} RPC/s"
        )
    text = (
        f"p99 ratio {sizes['large']:,} / {sizes['small']:,} cards = {scale_ratio:.2f} "
        f"(target ≤ {SCALE_TARGET}: {verdict})"
    )
    print(f"  {text}")
    lines += [
        "",
        f"- {text}",
        "- Load of the large side: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in loads["large"].items())
        + " (bulk in SQL, secondary indexes built after it).",
        f"- Probe: {args.calls:,} CheckEligibility calls per round after 1,000 warm-up calls, "
        f"{args.probe_concurrency} in flight, {args.rounds} rounds alternating between the two "
        f"servers; p50/p99 pooled over the rounds; documents drawn from the {KNOWN_DOCS:,} "
        "loaded through the pseudonymizer (two cards each with the caller).",
    ]
    lines += report_lines(sizes["large"], report_timing)
    return lines, problems


# ---------------------------------------------------------------------------------------------
# The probe client (its own process, like bench.load)


@dataclass
class ProbeState:
    """Shared between the probe's coroutines."""

    total: int
    warmup: int
    next_call: int = 0


async def probe(args: argparse.Namespace) -> dict[str, Any]:
    """Issues warm-up + ``calls`` CheckEligibility calls; returns latencies of the measured ones."""
    order = list(range(KNOWN_DOCS))
    random.Random(8).shuffle(order)
    requests = [
        verification_pb2.CheckEligibilityRequest(
            document=common_pb2.Document(
                type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(KNOWN_REGION, n)
            ),
            card_type=common_pb2.CARD_TYPE_PERSONAL,
        )
        for n in order
    ]
    warmup = 1000
    state = ProbeState(total=warmup + args.calls, warmup=warmup)
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    credentials = client_credentials(args.pki_dir, "operator-cmcc")
    async with grpc.aio.secure_channel(args.target, credentials, CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=15)
        stub = verification_pb2_grpc.VerificationServiceStub(channel)

        async def worker() -> None:
            while state.next_call < state.total:
                n = state.next_call
                state.next_call += 1
                started = time.perf_counter()
                try:
                    await stub.CheckEligibility(requests[n % len(requests)], timeout=30)
                    code = "OK"
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                if n >= state.warmup:
                    latencies.append(1000 * (time.perf_counter() - started))
                    codes[code] += 1

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.probe_concurrency)))
        elapsed = time.perf_counter() - begin
    ordered = sorted(latencies)
    return {
        "calls": len(latencies),
        "rps": state.total / elapsed,
        "p50_ms": percentile(ordered, 0.50),
        "p99_ms": percentile(ordered, 0.99),
        "codes": dict(codes),
        "latencies_ms": [round(x, 3) for x in latencies],
    }


# ---------------------------------------------------------------------------------------------
# Main


# ---------------------------------------------------------------------------------------------
# a synchronous standby (Patroni) vs one server, and the failover time


def first_write_after(url: str, limit: float = 120.0) -> float:
    """Seconds until a write commits through the multi-host ``url`` (polling every 0.1 s)."""
    started = time.monotonic()
    params = libpq_params(url)
    params["connect_timeout"] = 2
    while time.monotonic() - started < limit:
        try:
            with psycopg.connect(autocommit=True, **params) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS bench_failover (at timestamptz)")
                conn.execute("INSERT INTO bench_failover VALUES (now())")
                return time.monotonic() - started
        except psycopg.Error:
            time.sleep(0.1)
    raise RuntimeError(f"no write committed within {limit:g} s of the kill")


def ha_phase(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """ActivateCard (distinct documents) on a Patroni primary with a synchronous standby against
    the single server, alternately, in one run; then the primary's machine is killed and the
    time to the first committed write through the multi-host URL is measured."""
    cfg = run.BenchConfig(args.concurrency, 1, args.warmup, args.duration)
    phases: dict[tuple[str, int], run.Phase] = {}
    cluster = HaCluster()
    try:
        cluster.start()
        with tempfile.TemporaryDirectory(prefix="realname-bench-ha-") as tmp:
            data_dir = Path(tmp)
            ha_url = normalize_url(cluster.url())
            with postgres_server() as pg, ExitStack() as stack:
                sides = {
                    "single": stack.enter_context(fresh_server(data_dir, pg.url, "pg-single")),
                    "sync standby": stack.enter_context(
                        fresh_server(data_dir, ha_url, "pg-sync-standby")
                    ),
                }
                for round_ in range(2):
                    for side, (server, _url) in sides.items():
                        phases[side, round_] = run.run_load(
                            server, data_dir / "dev-pki", "activate", f"pg, {side}", cfg, []
                        )
        primary = cluster.primary()
        assert primary is not None
        cluster.kill_machine(primary)
        failover_s = first_write_after(cluster.url())
    finally:
        cluster.stop()

    def rps(side: str) -> float:
        return sum(phases[side, r].result["rps"] for r in range(2)) / 2

    rows = [
        phase_line(f"ActivateCard, {side}, round {r + 1}", p) for (side, r), p in phases.items()
    ]
    text = (
        f"ActivateCard, distinct documents: single server {rps('single'):,.0f} RPC/s, primary "
        f"with a synchronous standby {rps('sync standby'):,.0f} RPC/s, ratio standby/single = "
        f"{ratio(rps('sync standby'), rps('single'))}"
    )
    failover = (
        f"failover: primary's postmaster and Patroni killed (SIGKILL) → first write committed "
        f"on the promoted standby through the multi-host URL: {failover_s:.1f} s (Patroni ttl 20 s)"
    )
    print(f"\nsynchronous standby vs single server:\n  {text}\n  {failover}")
    lines = [
        "### PostgreSQL with a synchronous standby (Patroni) vs a single server",
        "",
        *PHASE_HEADER,
        *rows,
        "",
        f"- {text}",
        f"- {failover}",
        f"- Load: {cfg.concurrency} calls in flight over one mTLS channel, {cfg.warmup:g} s "
        f"warm-up, {cfg.duration:g} s measured, two rounds per side alternately; the cluster "
        "(tests/support/ha_cluster.py) runs on the same machine, so the standby's replay "
        "competes with the server for the same cores, and replication is over loopback.",
    ]
    return lines, check_phases(list(phases.values()))


SECTIONS = {
    "workers": workers_phase,
    "isolation": isolation_phase,
    "scale": scale_phase,
    "ha": ha_phase,
}


def main(argv: list[str] | None = None) -> int:
    """Runs one phase (or the probe client); see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("phase", choices=[*SECTIONS, "probe"])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--cards", type=int, default=10_000_000, help="scale: large side")
    parser.add_argument("--calls", type=int, default=20_000, help="scale: calls per round")
    parser.add_argument("--rounds", type=int, default=2, help="scale: rounds per side")
    parser.add_argument("--probe-concurrency", type=int, default=8, help="scale: calls in flight")
    parser.add_argument("--target", help="probe: host:port")
    parser.add_argument("--pki-dir", type=Path, help="probe: dev-pki folder")
    args = parser.parse_args(argv)
    if args.phase == "probe":
        print(json.dumps(asyncio.run(probe(args))), flush=True)
        return 0
    lines, problems = SECTIONS[args.phase](args)
    problems += run.PROBLEMS
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    facts = dict(run.machine_facts(Path(tempfile.gettempdir())))
    lines[1:1] = [
        "",
        f"Measured {when}; nproc {facts['nproc']}; load average at the end "
        f"{facts['load average at start']}.",
    ]
    update_results_section(run.RESULTS_PATH, args.phase, "\n".join(lines))
    print(f"  written to {run.RESULTS_PATH.relative_to(run.REPO_ROOT)} (section {args.phase})")
    for problem in problems:
        print(f"!!! {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
