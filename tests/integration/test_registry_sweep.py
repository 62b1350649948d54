"""One VerifySellers stream of 100,000 shops: every verdict back, in order, on both engines.

The 100,000 authorizations are real certificates issued in-process (a process pool) into one
SQLite database, whose registry tables are then copied to a PostgreSQL database: the same CAs
and rows on both engines, issued once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from services.domain.pseudonym import Pseudonymizer
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import registry_pb2 as rpb
from services.storage.database import Database, DatabaseConfig
from tests.support.databases import PostgresDatabases, SqliteDatabases
from tests.support.registry import (
    RegistryHarness,
    copy_registry,
    registry_server,
    seed_authorizations,
)
from tests.support.rpc import rich_error

SHOPS = 100_000
BATCH = 2_000
# Shops past the seeded ones: the sweep must also say which shops hold no authorization.
UNKNOWN = 500


@pytest.fixture(scope="module")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, sqlite_databases: SqliteDatabases
) -> Iterator[tuple[str, Path]]:
    """A SQLite registry with 100,000 authorizations of marketplace "bulk" (and its data dir)."""
    base = tmp_path_factory.mktemp("sweep")
    url = sqlite_databases.new(base / "db")
    db = Database(DatabaseConfig(url))
    data_dir = base / "data"
    try:
        import datetime as dt

        from services.runtime.ca_material import ensure_dev_authorities
        from tests.support.registry import CA_AGE

        ensure_dev_authorities(data_dir, db, now=dt.datetime.now(dt.UTC) - CA_AGE)
        seed_authorizations(db, operator="cmcc", marketplace="bulk", count=SHOPS, key_dir=data_dir)
    finally:
        db.dispose()
    yield url, data_dir


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sweep_db(
    request: pytest.FixtureRequest, seeded: tuple[str, Path]
) -> Iterator[tuple[Database, Path]]:
    url, data_dir = seeded
    if request.param == "sqlite":
        db = Database(DatabaseConfig(url))
        yield db, data_dir
        db.dispose()
        return
    pg: PostgresDatabases = request.getfixturevalue("pg_databases")
    target_url = pg.new()
    source, target = Database(DatabaseConfig(url)), Database(DatabaseConfig(target_url))
    try:
        copy_registry(source, target)
        yield target, data_dir
    finally:
        source.dispose()
        target.dispose()
        pg.drop(target_url)


@pytest.fixture
def server(
    sweep_db: tuple[Database, Path], pki_dir: Path, pseudonymizer: Pseudonymizer
) -> Iterator[RegistryHarness]:
    db, data_dir = sweep_db
    with registry_server(db, pki_dir, pseudonymizer, data_dir) as harness:
        yield harness


def test_one_stream_of_100000_shops(server: RegistryHarness) -> None:
    shops = [f"shop-{n:06d}" for n in range(SHOPS)] + [f"none-{n}" for n in range(UNKNOWN)]
    requests = (
        rpb.VerifySellersRequest(
            marketplace="bulk",
            shop_ids=shops[start : start + BATCH],
            card_type=cpb.CARD_TYPE_PERSONAL,
            province="44",
        )
        for start in range(0, len(shops), BATCH)
    )
    started = time.perf_counter()
    answered: list[str] = []
    reasons: dict[int, int] = {}
    for response in server.registry_service("marketplace-demo").VerifySellers(requests):
        for verdict in response.verdicts:
            answered.append(verdict.shop.shop_id)
            reasons[verdict.reason] = reasons.get(verdict.reason, 0) + 1
    elapsed = time.perf_counter() - started
    assert answered == shops
    assert reasons == {
        rpb.VERDICT_REASON_AUTHORIZED: SHOPS,
        rpb.VERDICT_REASON_UNKNOWN_STORE: UNKNOWN,
    }
    print(f"\n{len(shops):,} shops in {elapsed:.1f} s: {len(shops) / elapsed:,.0f} shops/s")


def test_a_batch_over_the_limit_is_refused(server: RegistryHarness) -> None:
    too_many = rpb.VerifySellersRequest(marketplace="bulk", shop_ids=["x"] * 5001)
    with pytest.raises(grpc.RpcError) as info:
        list(server.registry_service("marketplace-demo").VerifySellers(iter([too_many])))
    err = rich_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in err.field_violations] == ["shop_ids"]
    with pytest.raises(grpc.RpcError) as info:
        list(server.registry_service("courier-demo").VerifySellers(iter([too_many])))
    assert rich_error(info.value).reason == "ROLE_NOT_ALLOWED"
