"""The log's HTTP API (C2SP tlog-tiles) on SQLite and PostgreSQL: bytes, headers, statuses."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from registry.checkpoint import open_checkpoint
from registry.log.client import TileClient
from registry.log.entries import encode_entry
from registry.log.monitor import Monitor, Watch
from registry.log.storage import append_entries
from registry.merkle import MemoryTree, NodeID, tree_root, verify_consistency, verify_inclusion
from registry.note import WitnessPolicy, sign_note
from registry.tiles import (
    TILE_WIDTH,
    EntryBundle,
    Tile,
    decode_entry_bundle,
    read_node_from_tiles,
)
from services.cli.log import HttpFetcher, log_url
from services.features.transparency import TransparencyLog
from services.http.app import create_app
from services.http.log_routes import MAX_COSIGN_BODY, log_routes
from services.storage.database import Database
from tests.support.http import http_server
from tests.support.logdata import ORIGIN, audit, issuance, log_signer, witness_signer

SIGNER = log_signer()
WITNESSES = [witness_signer(0), witness_signer(1)]


@pytest.fixture
def transparency(db: Database) -> TransparencyLog:
    return TransparencyLog.create(db, SIGNER, witnesses=[w.verifier() for w in WITNESSES])


@pytest.fixture
def client(transparency: TransparencyLog) -> Iterator[httpx.Client]:
    app = create_app(lambda: True, log_routes(transparency))
    with http_server(app) as url, httpx.Client(base_url=url) as http_client:
        yield http_client


def fill(transparency: TransparencyLog, count: int, start: int = 0) -> list[bytes]:
    entries = [audit(start + i) for i in range(count)]
    transparency.db.write(lambda conn: append_entries(conn, entries))
    transparency.sequencer.integrate_now()
    return [encode_entry(e) for e in entries]


def test_no_checkpoint_before_the_first_integration(client: httpx.Client) -> None:
    response = client.get("/log/checkpoint")
    assert response.status_code == 404
    assert client.get("/log/tile/0/000.p/1").status_code == 404


def test_checkpoint_is_a_signed_note_that_must_be_revalidated(
    client: httpx.Client, transparency: TransparencyLog
) -> None:
    fill(transparency, 3)
    response = client.get("/log/checkpoint")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    opened = open_checkpoint(response.content, origin=ORIGIN, log_verifier=SIGNER.verifier())
    assert opened.checkpoint.size == 3
    assert response.text.startswith(f"{ORIGIN}\n3\n")


def test_tiles_and_bundles_rebuild_the_tree(
    client: httpx.Client, transparency: TransparencyLog
) -> None:
    entries = fill(transparency, TILE_WIDTH + 30)
    tree = MemoryTree(entries)
    full = client.get("/log/tile/0/000")
    assert full.status_code == 200
    assert full.headers["content-type"] == "application/octet-stream"
    assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert full.content == b"".join(tree.node(0, i) for i in range(TILE_WIDTH))
    partial = client.get("/log/tile/0/001.p/30")
    assert partial.headers["cache-control"] == "public, max-age=5"
    assert partial.content == b"".join(tree.node(0, TILE_WIDTH + i) for i in range(30))
    assert client.get("/log/tile/1/000.p/1").content == tree.node(8, 0)
    bundle = client.get("/log/tile/entries/001.p/30")
    assert bundle.status_code == 200
    assert bundle.headers["content-type"] == "application/octet-stream"
    assert bundle.headers["cache-control"] == "public, max-age=5"
    assert client.get("/log/tile/entries/000").headers["cache-control"].endswith("immutable")

    # The root, rebuilt from nothing but served tiles, is the checkpoint's.
    tiles = TileClient(HttpFetcher(client, log_url(str(client.base_url))))
    size = tree.size

    def node(level: int, index: int) -> bytes:
        return read_node_from_tiles(NodeID(level, index), size, tiles.tile_hashes)

    assert tree_root(size, node) == tree.root()
    # And proofs built from served tiles verify.
    verify_inclusion(tree.node(0, 7), 7, size, tiles.inclusion_proof(7, size), tree.root())
    proof = tiles.consistency_proof(100, size)
    verify_consistency(100, size, proof, tree.root(100), tree.root())


BAD_PATHS = [
    ("/log/tile/0/001", 404),  # only partial so far
    ("/log/tile/0/001.p/31", 404),  # wider than the tree
    ("/log/tile/0/002.p/1", 404),
    ("/log/tile/1/000.p/2", 404),
    ("/log/tile/2/000.p/1", 404),
    ("/log/tile/entries/001", 404),
    ("/log/tile/entries/001.p/31", 404),
    ("/log/tile/0/x000/001", 400),  # non-canonical index
    ("/log/tile/0/000.p/256", 400),
    ("/log/tile/0/000.p/0", 400),
    ("/log/tile/64/000", 400),
    ("/log/tile/a/000", 400),
    ("/log/tile/entries/000.p/", 400),
]


def test_tiles_beyond_the_tree_are_404_and_malformed_paths_400(
    client: httpx.Client, transparency: TransparencyLog
) -> None:
    fill(transparency, TILE_WIDTH + 30)
    answers = {path: client.get(path) for path, _status in BAD_PATHS}
    assert {path: r.status_code for path, r in answers.items()} == dict(BAD_PATHS)
    assert {r.headers["cache-control"] for r in answers.values()} == {"no-store"}


def test_a_partial_tile_stays_served_after_its_tile_fills(
    client: httpx.Client, transparency: TransparencyLog
) -> None:
    fill(transparency, 10)
    before = client.get("/log/tile/0/000.p/10").content
    fill(transparency, TILE_WIDTH, start=10)
    assert client.get("/log/tile/0/000.p/10").content == before
    assert client.get("/log/tile/0/000").content.startswith(before)


def test_a_monitor_over_http_verifies_and_watches(
    client: httpx.Client, transparency: TransparencyLog
) -> None:
    fill(transparency, 40)
    transparency.db.write(lambda conn: append_entries(conn, [issuance(3)]))
    transparency.sequencer.integrate_now()
    monitor = Monitor(
        TileClient(HttpFetcher(client, log_url(str(client.base_url)))),
        origin=ORIGIN,
        log_verifier=SIGNER.verifier(),
        watch=Watch.parse(["tmall/shop-3"]),
    )
    report, _state = monitor.check(None)
    assert report.size == 41 and [event.index for event in report.events] == [40]


def test_cosign_endpoint_stores_accepted_cosignatures(
    client: httpx.Client, transparency: TransparencyLog
) -> None:
    fill(transparency, 5)
    note = client.get("/log/checkpoint").content
    cosigned = sign_note(note_of(note), WITNESSES[0])
    response = client.post("/log/cosign", content=cosigned)
    assert response.status_code == 200, response.text
    served = client.get("/log/checkpoint").content
    assert served == response.content
    policy = WitnessPolicy([w.verifier() for w in WITNESSES], 1)
    opened = open_checkpoint(
        served, origin=ORIGIN, log_verifier=SIGNER.verifier(), witness_policy=policy
    )
    assert [w.name for w in opened.witnesses] == [WITNESSES[0].name]

    stranger = sign_note(note_of(note), witness_signer(5))
    assert client.post("/log/cosign", content=stranger).status_code == 403
    lie = sign_note(f"{ORIGIN}\n5\n{'A' * 43}=\n", SIGNER, WITNESSES[1])
    assert client.post("/log/cosign", content=lie).status_code == 409
    assert client.post("/log/cosign", content=b"nonsense").status_code == 400
    huge = client.post("/log/cosign", content=b"x" * (MAX_COSIGN_BODY + 1))
    assert huge.status_code == 413
    assert client.get("/log/cosign").status_code == 405


def note_of(data: bytes):  # type: ignore[no-untyped-def]
    """The opened note of a served checkpoint, to add cosignatures to."""
    return open_checkpoint(data, origin=ORIGIN, log_verifier=SIGNER.verifier()).note


def test_entry_bundle_for_an_index_range_is_exact(
    client: httpx.Client, transparency: TransparencyLog
) -> None:
    entries = fill(transparency, 3)
    body = client.get("/log/" + EntryBundle(0, 3).path()).content
    assert decode_entry_bundle(body, 3) == entries
    assert client.get("/log/" + Tile(0, 0, 3).path()).status_code == 200
