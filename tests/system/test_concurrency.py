"""The cap is exact under concurrency: many activations for one document across two processes."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text

from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from tests.support.databases import PostgresDatabases, SqliteDatabases
from tests.support.identities import iccid, msisdn, resident_id
from tests.support.pki import channel
from tests.support.rpc import rich_error
from tests.support.server import ServerProcess, start_server_process

CALLS = 240
PROCESSES = 2


def make_data_dir(tmp_path: Path, pki_dir: Path, pepper_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copytree(pki_dir, data_dir / "dev-pki")
    shutil.copyfile(pepper_path, data_dir / "pepper")
    return data_dir


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-serializable"])
def cluster(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    pki_dir: Path,
    pepper_path: Path,
    sqlite_databases: SqliteDatabases,
) -> Iterator[tuple[list[ServerProcess], str, Path]]:
    """Two `realname serve` processes sharing one database."""
    data_dir = make_data_dir(tmp_path, pki_dir, pepper_path)
    env: dict[str, str] = {}
    pg: PostgresDatabases | None = None
    if request.param == "sqlite":
        url = sqlite_databases.new(data_dir)
        db_url = None
    else:
        pg = request.getfixturevalue("pg_databases")
        url = db_url = pg.new()
        if request.param.endswith("serializable"):
            env["REALNAME_DB_ISOLATION"] = "serializable"
    servers = [
        start_server_process(data_dir, database_url=db_url, env=env) for _ in range(PROCESSES)
    ]
    yield servers, url, data_dir
    for server in servers:
        assert server.stop() == 0, server.log()
    if pg is not None:
        pg.drop(url)


def test_exactly_five_of_many_concurrent_activations_succeed(
    cluster: tuple[list[ServerProcess], str, Path],
) -> None:
    servers, url, data_dir = cluster
    document = cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(77))
    channels = [channel(s.address, data_dir / "dev-pki", "operator-cmcc") for s in servers]
    stubs = [vgrpc.VerificationServiceStub(ch) for ch in channels]
    futures = []
    for i in range(CALLS):
        request = vpb.ActivateCardRequest(
            request_id=f"burst-{i}",
            document=document,
            msisdn=msisdn("139", i),
            iccid=iccid(900_000 + i),
            card_type=cpb.CARD_TYPE_PERSONAL,
            channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id=f"shop-{i % 7}")),
        )
        futures.append(stubs[i % PROCESSES].ActivateCard.future(request, timeout=120))
    outcomes: Counter[str] = Counter()
    for future in futures:
        try:
            future.result()
            outcomes["OK"] += 1
        except grpc.RpcError as exc:
            err = rich_error(exc)
            outcomes[f"{err.code.name}/{err.reason}"] += 1
    for ch in channels:
        ch.close()
    assert outcomes == {"OK": 5, "RESOURCE_EXHAUSTED/CARD_LIMIT_REACHED": CALLS - 5}
    engine = create_engine(url)
    with engine.connect() as conn:
        live = conn.execute(text("SELECT count(*) FROM cards WHERE state = 'ACTIVE'")).scalar()
        held = conn.execute(text("SELECT active FROM holdings")).scalars().all()
    engine.dispose()
    assert live == 5
    assert held == [5]
    # Both processes served part of the burst.
    for server in servers:
        assert '"method":"/realname.v1.VerificationService/ActivateCard"' in server.log()
