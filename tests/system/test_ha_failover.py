"""The primary's machine dies during 1,000 concurrent activations on a Patroni cluster.

Two `realname serve` processes share a multi-host URL (``target_session_attrs=read-write``) over
a primary and its synchronous standby (tests/support/ha_cluster.py). Mid-burst the primary's
postmaster is killed with SIGKILL, and its Patroni with it, so the standby must take over. Then:
every acknowledged activation is on the new primary, a retry with the same request_id returns
the original outcome, no document is over its cap, and both servers answer again without a
restart. The figures are printed.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from services.storage.database import libpq_params, normalize_url
from tests.support.databases import migrate_and_seed
from tests.support.faults import (
    Outcome,
    activate_all,
    activation,
    consistency_problems,
    make_data_dir,
    outcome_of,
)
from tests.support.ha_cluster import HaCluster
from tests.support.pki import channel
from tests.support.server import ServerProcess, start_server_process

CAP = 5
CARD_LIMIT = "RESOURCE_EXHAUSTED/CARD_LIMIT_REACHED"
SHARED_DOCS, PER_SHARED_DOC, DISTINCT_DOCS = 20, 10, 800  # 1,000 activations
KILL_AFTER_ANSWERS = 250


@pytest.fixture
def cluster() -> Iterator[HaCluster]:
    """A running Patroni cluster with a migrated `realname` database on its primary."""
    ha = HaCluster()
    try:
        ha.start()
        with psycopg.connect(autocommit=True, **libpq_params(ha.url())) as conn:
            conn.execute("CREATE DATABASE realname")
        migrate_and_seed(ha.url("realname"))
        yield ha
    finally:
        ha.stop()


def _burst() -> list[vpb.ActivateCardRequest]:
    requests = [
        activation(f"ha-s{d}-{k}", d, d * PER_SHARED_DOC + k)
        for d in range(SHARED_DOCS)
        for k in range(PER_SHARED_DOC)
    ]
    first = SHARED_DOCS * PER_SHARED_DOC
    requests += [activation(f"ha-d{i}", 1_000 + i, first + i) for i in range(DISTINCT_DOCS)]
    random.Random(16).shuffle(requests)
    return requests


def test_primary_killed_mid_burst_loses_no_acknowledged_activation(
    tmp_path: Path, pki_dir: Path, pepper_path: Path, cluster: HaCluster
) -> None:
    url = cluster.url("realname")
    data_dir = make_data_dir(tmp_path, pki_dir, pepper_path)
    servers: list[ServerProcess] = []
    channels: list[grpc.Channel] = []
    try:
        for _ in range(2):
            servers.append(start_server_process(data_dir, database_url=url))
        channels = [channel(s.address, data_dir / "dev-pki", "operator-cmcc") for s in servers]
        stubs = [vgrpc.VerificationServiceStub(ch) for ch in channels]
        requests = _burst()
        old_primary = cluster.primary()
        assert old_primary is not None

        started = time.monotonic()
        calls = [stubs[i % 2].ActivateCard.future(r, timeout=60) for i, r in enumerate(requests)]
        while sum(c.done() for c in calls) < KILL_AFTER_ANSWERS:
            assert time.monotonic() - started < 60, servers[0].log()
            time.sleep(0.005)
        cluster.kill_machine(old_primary)
        killed_at = time.monotonic()
        now = time.monotonic()
        first = [Outcome(o.status, o.card) for o in (outcome_of(c, now) for c in calls)]
        acked = [i for i, o in enumerate(first) if o.final]
        failed = [i for i, o in enumerate(first) if not o.final]
        assert failed, "the kill came after the burst"
        # Calls cut off by the switch: UNAVAILABLE (outcome unknown), never INTERNAL/UNKNOWN.
        assert {first[i].status.split("/")[0] for i in failed} == {"UNAVAILABLE"}, Counter(
            first[i].status for i in failed
        )

        # The first activation that succeeds after the kill: the standby was promoted.
        probe = 0
        first_ok_at = None
        while first_ok_at is None:
            assert time.monotonic() - killed_at < 120, cluster.logs()
            probe += 1
            outcome = outcome_of(
                stubs[probe % 2].ActivateCard.future(
                    activation(f"ha-probe-{probe}", 5_000 + probe, 5_000 + probe), timeout=5
                ),
                time.monotonic(),
            )
            if outcome.ok:
                first_ok_at = time.monotonic()
            else:
                assert outcome.status.startswith("UNAVAILABLE/"), outcome.status
                time.sleep(0.2)
        new_primary = cluster.primary()
        assert new_primary is not None and new_primary is not old_primary

        # Every request again, through both servers (never restarted), same request ids.
        retried = activate_all(stubs[0], requests[: len(requests) // 2])
        retried += activate_all(stubs[1], requests[len(requests) // 2 :])
        lost = [
            i
            for i in acked
            if (retried[i].status, retried[i].card) != (first[i].status, first[i].card)
        ]
        assert not lost, [(first[i].status, retried[i].status) for i in lost[:10]]
        assert all(o.final for o in retried), Counter(o.status for o in retried)
        statuses = Counter(o.status for o in retried)
        assert statuses == {
            "OK": SHARED_DOCS * CAP + DISTINCT_DOCS,
            CARD_LIMIT: SHARED_DOCS * (PER_SHARED_DOC - CAP),
        }
        problems = consistency_problems(normalize_url(cluster.node_url(new_primary, "realname")))
        over_cap = [p for p in problems if "over a cap" in p]
        assert problems == []
        for server in servers:
            assert server.proc.poll() is None, server.log()
        print(
            f"\nHA failover: acknowledged {len(acked)}, lost {len(lost)}, over cap "
            f"{len(over_cap)}, failed during the switch {len(failed)}, "
            f"seconds from the kill to the first successful activation "
            f"{first_ok_at - killed_at:.1f}"
        )
    finally:
        for ch in channels:
            ch.close()
        for server in servers:
            server.stop()
