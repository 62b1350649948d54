"""The courier app's endpoints behind the courier company's client certificate, on SQLite and
PostgreSQL: the current delivery bundle, and queued handovers (the JSONL of
registry/delivery/queue.py) recorded as ConfirmDelivery records them, a replayed sync
confirming nothing twice."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from registry.delivery import DeliveryBundle, new_confirmation, verify_offline
from registry.subscribers import DocumentType
from services.domain.pseudonym import Pseudonymizer
from services.http.courier import SYNC_METHOD
from services.proto.realname.v1 import verification_pb2 as vpb
from services.storage.database import Database
from services.storage.schema import shipments
from tests.integration.test_delivery_rpc import RECIPIENT, STRANGER, card_state, new_store, sell
from tests.integration.test_delivery_rpc import token_for as signed_token
from tests.support.courier import Served, courier_served


@pytest.fixture
def served(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> Iterator[Served]:
    with courier_served(db, pki_dir, pseudonymizer, tmp_path / "data") as served:
        yield served


def call(
    served: Served, principal: str, path: str, body: bytes | None = None
) -> tuple[int, bytes, dict[str, str]]:
    pki = served.harness.pki_dir
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(
        str(pki / "clients" / f"{principal}.pem"), str(pki / "clients" / f"{principal}.key")
    )
    request = urllib.request.Request(
        served.url + path, data=body, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=60) as reply:
            return reply.status, reply.read(), {k.lower(): v for k, v in reply.headers.items()}
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(), {k.lower(): v for k, v in error.headers.items()}


def test_a_courier_downloads_the_current_bundle(served: Served) -> None:
    store = new_store(served.harness, "http-1")
    card = sell(served.harness, store, 41)
    token = signed_token(store, card)
    status, _, _ = call(served, "operator-cmcc", "/courier/api/bundle")
    assert status == 403
    status, body, headers = call(served, "courier-demo", "/courier/api/bundle")
    assert status == 200, body
    assert headers["x-courier-company"] == "demo"
    assert headers["cache-control"] == "no-store"
    bundle = DeliveryBundle.from_json(body)
    assert json.loads(body)["format"] == "realname-delivery-bundle"
    # The bundle proves the store just authorized: the offline check passes with it.
    verdict = verify_offline(
        token, DocumentType.RESIDENT_ID_CARD, RECIPIENT, bundle, courier_company="demo"
    )
    assert verdict.reason.value == "OK"
    # The page is served on the same origin, so its calls need no cross-origin rules.
    status, page, _ = call(served, "courier-demo", "/courier/")
    assert status == 200 and b"app.js" in page


def test_a_synced_queue_is_recorded_once_as_confirm_delivery_records_it(
    served: Served, db: Database
) -> None:
    store = new_store(served.harness, "http-2")
    card = sell(served.harness, store, 42)
    other = sell(served.harness, store, 43)
    token, wrong = signed_token(store, card), signed_token(store, other)
    # A second ahead: the store was authorized this very second (its certificate starts now).
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    lines = [
        new_confirmation(token, DocumentType.RESIDENT_ID_CARD, RECIPIENT,
                         courier_staff_id="staff-9", delivered_at=at, offline_reason="OK"),
        new_confirmation(wrong, DocumentType.RESIDENT_ID_CARD, STRANGER,
                         courier_staff_id="staff-9", delivered_at=at, offline_reason="OK"),
    ]  # fmt: skip
    body = b"".join(line.to_line() for line in lines)
    status, _, _ = call(served, "operator-cmcc", "/courier/api/confirmations", body)
    assert status == 403
    assert card_state(served.harness, card) == vpb.CARD_STATE_PENDING_DELIVERY

    status, reply, _ = call(served, "courier-demo", "/courier/api/confirmations", body)
    assert status == 200, reply
    first = json.loads(reply)["results"]
    assert [(r["id"], r["reason"], r["recorded"], r["final"]) for r in first] == [
        (lines[0].id, "OK", True, False),
        (lines[1].id, "RECIPIENT_MISMATCH", False, True),
    ]
    assert card_state(served.harness, card) == vpb.CARD_STATE_ACTIVE
    assert card_state(served.harness, other) == vpb.CARD_STATE_PENDING_DELIVERY

    def recorded() -> list[tuple[str | None, dt.datetime | None]]:
        query = select(shipments.c.courier_staff_id, shipments.c.delivered_at).where(
            shipments.c.delivered_at.is_not(None)
        )
        return [(row[0], row[1]) for row in db.read(lambda conn: conn.execute(query).all())]

    # Each synced handover is in the audit trail, as a ConfirmDelivery call would be.
    trail = served.harness.app.audit if served.harness.app is not None else None
    assert trail is not None
    trail.flush()
    synced = [r for r in trail.query(principal="courier-demo") if r.method == SYNC_METHOD]
    assert len(synced) >= 2 and {r.outcome for r in synced} == {"OK"}

    once = recorded()
    assert len(once) == 1 and once[0][0] == "staff-9"
    # The handover keeps its offline time.
    assert once[0][1] is not None and once[0][1].replace(tzinfo=dt.UTC) == at

    # A replayed sync (the reply was lost) confirms nothing twice.
    status, reply, _ = call(served, "courier-demo", "/courier/api/confirmations", body)
    assert status == 200
    again = json.loads(reply)["results"]
    assert (again[0]["reason"], again[0]["recorded"]) == ("OK", True)
    assert again[0]["detail"] == "delivery already recorded"
    assert recorded() == once

    status, reply, _ = call(served, "courier-demo", "/courier/api/confirmations", b"{not json}\n")
    assert status == 400
    assert recorded() == once
