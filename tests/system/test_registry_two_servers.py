"""Two `realname serve` processes on one database: a change made through one is in force in the
other's VerifySeller within the staleness bound, though each answers from memory (SQLite and
PostgreSQL)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.features.seller_checks import STALENESS_BOUND
from services.proto.realname.v1 import registry_pb2 as rpb
from services.proto.realname.v1 import registry_pb2_grpc as rgrpc
from services.runtime.ca_material import ensure_dev_authorities
from services.storage.database import Database, DatabaseConfig
from tests.support.databases import PostgresDatabases, SqliteDatabases
from tests.support.pki import channel
from tests.support.registry import authorize_with
from tests.support.server import ServerProcess, start_server_process


@pytest.fixture(params=["sqlite", "postgresql"])
def servers(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    pki_dir: Path,
    pepper_path: Path,
    sqlite_databases: SqliteDatabases,
) -> Iterator[tuple[list[ServerProcess], Path]]:
    """Two server processes sharing one database with the demo CAs."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copytree(pki_dir, data_dir / "dev-pki")
    shutil.copyfile(pepper_path, data_dir / "pepper")
    pg: PostgresDatabases | None = None
    if request.param == "sqlite":
        url = sqlite_databases.new(data_dir)
        served_url = None
    else:
        pg = request.getfixturevalue("pg_databases")
        url = served_url = pg.new()
    db = Database(DatabaseConfig(url))
    try:
        ensure_dev_authorities(data_dir, db)
    finally:
        db.dispose()
    running = [start_server_process(data_dir, database_url=served_url) for _ in range(2)]
    yield running, data_dir
    for server in running:
        assert server.stop() == 0, server.log()
    if pg is not None:
        pg.drop(url)


def stub(server: ServerProcess, data_dir: Path, principal: str) -> rgrpc.RegistryServiceStub:
    return rgrpc.RegistryServiceStub(channel(server.address, data_dir / "dev-pki", principal))  # type: ignore[no-untyped-call]


def issue(server: ServerProcess, data_dir: Path, shop_id: str) -> rpb.Authorization:
    return authorize_with(lambda principal: stub(server, data_dir, principal), shop_id=shop_id)


def verdict(server: ServerProcess, data_dir: Path, shop_id: str) -> rpb.SellerVerdict:
    request = rpb.VerifySellerRequest(shop=rpb.Shop(marketplace="demo", shop_id=shop_id))
    return stub(server, data_dir, "marketplace-demo").VerifySeller(request).verdict


def test_a_change_through_one_server_reaches_the_other_within_the_bound(
    servers: tuple[list[ServerProcess], Path],
) -> None:
    (first, second), data_dir = servers
    auth = issue(first, data_dir, "two-servers")
    time.sleep(STALENESS_BOUND)
    assert verdict(second, data_dir, "two-servers").serial == auth.serial
    # Cached by the second server as it stands: authorized, and the other shop unknown.
    assert verdict(second, data_dir, "two-servers").authorized
    assert verdict(second, data_dir, "later").reason == rpb.VERDICT_REASON_UNKNOWN_STORE
    # One change at a time, so each is alone in moving the generation the second server polls.
    later = issue(first, data_dir, "later")
    time.sleep(STALENESS_BOUND)
    assert verdict(second, data_dir, "later").serial == later.serial
    stub(first, data_dir, "operator-cmcc").RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(serial=auth.serial)
    )
    time.sleep(STALENESS_BOUND)
    assert verdict(second, data_dir, "two-servers").reason == rpb.VERDICT_REASON_REVOKED
