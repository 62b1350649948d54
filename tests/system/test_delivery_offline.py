"""Offline delivery checks against an exported bundle, and their agreement with the service."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.authz import authorities
from registry.delivery import (
    ConfirmationQueue,
    DeliveryBundle,
    Reason,
    decode_token,
    encode_text,
    new_confirmation,
    verify_offline,
)
from registry.subscribers import mask_msisdn
from services.cli.delivery import export_bundle
from services.domain.pseudonym import Pseudonymizer
from services.features.transparency import TransparencyLog
from services.proto.realname.v1 import delivery_pb2 as dpb
from services.proto.realname.v1 import registry_pb2 as rpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.rpc.delivery import reason_of
from services.runtime.ca_material import key_directory
from services.storage.database import Database
from tests.integration.test_delivery_rpc import (
    RECIPIENT,
    STRANGER,
    Store,
    card_state,
    desk,
    document,
    new_store,
    sell,
    token_for,
)
from tests.support.identities import resident_id
from tests.support.registry import RegistryHarness, registry_server, store_key
from tests.support.server import realname_bin


@pytest.fixture
def server(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> Iterator[RegistryHarness]:
    with registry_server(db, pki_dir, pseudonymizer, tmp_path / "data") as harness:
        yield harness


def bundle_of(server: RegistryHarness, db: Database, max_age: dt.timedelta) -> DeliveryBundle:
    log = TransparencyLog.open(db, server.data_dir)
    keys = authorities.OperatorKeys(key_directory(server.data_dir).passphrase())
    return export_bundle(db, log, keys, now=dt.datetime.now(dt.UTC), max_age=max_age)


def offline(bundle: DeliveryBundle, token: bytes, number: str = RECIPIENT, **kw: object) -> Reason:
    verdict = verify_offline(token, 1, number, bundle, courier_company="demo", **kw)  # type: ignore[arg-type]
    return verdict.reason


def test_offline_verdicts_and_a_stale_bundle(server: RegistryHarness, db: Database) -> None:
    store = new_store(server, "offline-1")
    revoked = new_store(server, "offline-2")
    card = sell(server, store, 31)
    other = sell(server, revoked, 32)
    server.registry_service("operator-cmcc").RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(serial=revoked.serial)
    )
    bundle = bundle_of(server, db, dt.timedelta(hours=24))
    token = token_for(store, card)
    assert offline(bundle, token) is Reason.OK
    assert offline(bundle, token, STRANGER) is Reason.RECIPIENT_MISMATCH
    assert offline(bundle, token_for(store, card, key=store_key())) is Reason.BAD_SIGNATURE
    assert offline(bundle, token_for(revoked, other)) is Reason.SELLER_REVOKED
    never = Store(store_key(), "7abcdef1", store.certificate)
    assert offline(bundle, token_for(never, card)) is Reason.SELLER_NOT_AUTHORIZED
    expired = token_for(
        store,
        card,
        issued_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2),
        valid_for=dt.timedelta(days=1),
    )
    assert offline(bundle, expired) is Reason.TOKEN_EXPIRED
    assert offline(bundle, token_for(store, card, courier="other")) is Reason.WRONG_COURIER
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=25)
    assert offline(bundle, token, at=later, stale_policy="refuse") is Reason.STALE_BUNDLE
    warned = verify_offline(
        token, 1, RECIPIENT, bundle, courier_company="demo", at=later, stale_policy="warn"
    )
    assert warned.reason is Reason.OK and warned.stale_bundle


def test_courier_cli_verifies_offline_and_refuses_a_stale_bundle(
    server: RegistryHarness, db: Database, tmp_path: Path
) -> None:
    store = new_store(server, "offline-cli")
    card = sell(server, store, 33)
    bundle = bundle_of(server, db, dt.timedelta(hours=24))
    path = tmp_path / "bundle.json"
    bundle.save(path)
    stale = DeliveryBundle(
        trust=bundle.trust,
        log_origin=bundle.log_origin,
        log_keys=bundle.log_keys,
        checkpoint=bundle.checkpoint,
        issued_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2),
        max_age=dt.timedelta(hours=1),
        stores=bundle.stores,
    )
    stale_path = tmp_path / "stale.json"
    stale.save(stale_path)
    text = token_for(store, card)

    def courier(bundle_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).parent / "realname"), "courier", "verify",
             "--bundle", str(bundle_path), "--token", encode_text(text), "--courier", "demo",
             "--document-number-file", "-", *extra],
            input=RECIPIENT, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip

    ok = courier(path)
    assert ok.returncode == 0 and ok.stdout.startswith("OK"), ok.stdout + ok.stderr
    refused = courier(stale_path)
    assert refused.returncode == 3 and refused.stdout.startswith("STALE_BUNDLE")
    warned = courier(stale_path, "--stale", "warn")
    assert warned.returncode == 0 and "(stale bundle)" in warned.stdout


def test_offline_verdict_equals_online_verdict_when_fresh(
    server: RegistryHarness, db: Database
) -> None:
    good, revoked = new_store(server, "prop-good"), new_store(server, "prop-revoked")
    server.registry_service("operator-cmcc").RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(serial=revoked.serial)
    )
    bundle = bundle_of(server, db, dt.timedelta(hours=24))
    sequence = itertools.count(100)

    @settings(max_examples=15, deadline=None)
    @given(
        kind=st.sampled_from(["good", "revoked", "forged", "expired", "never"]),
        courier=st.sampled_from(["demo", "other"]),
        right_person=st.booleans(),
    )
    def agree(kind: str, courier: str, right_person: bool) -> None:
        seller = revoked if kind == "revoked" else good
        # Every card is sold by the good store (online sales need a valid authorization); a
        # revoked store's token names such a card, signed with the revoked store's key.
        seq = next(sequence)
        buyer = resident_id(seq)  # a buyer per card: the cap is 5 per document
        card = sell(server, good, seq, buyer)
        if kind == "forged":
            token = token_for(seller, card, number=buyer, courier=courier, key=store_key())
        elif kind == "expired":
            token = token_for(
                seller,
                card,
                number=buyer,
                courier=courier,
                issued_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2),
                valid_for=dt.timedelta(days=1),
            )
        elif kind == "never":
            token = token_for(
                Store(store_key(), "7abcdef1", seller.certificate), card, number=buyer
            )
        else:
            token = token_for(seller, card, number=buyer, courier=courier)
        number = buyer if right_person else STRANGER
        expected = offline(bundle, token, number)
        response = desk(server).VerifyDelivery(
            dpb.VerifyDeliveryRequest(token=token, presented_document=document(number))
        )
        assert reason_of(response.verdict) is expected

    agree()


def test_courier_sync_of_a_missing_queue_file_is_an_error(pki_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-queue.jsonl"
    run = subprocess.run(
        [realname_bin(), "courier", "sync", "--data-dir", str(pki_dir.parent),
         "--address", "127.0.0.1:1", "--as", "courier-demo", "--queue", str(missing)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert str(missing) in run.stderr and "No such file" in run.stderr
    assert run.stdout == ""
    assert not missing.exists()


def test_courier_verify_shows_the_parcel_and_answers_in_json(
    server: RegistryHarness, db: Database, tmp_path: Path
) -> None:
    store = new_store(server, "offline-show")
    card = sell(server, store, 34)
    path = tmp_path / "bundle.json"
    bundle_of(server, db, dt.timedelta(hours=24)).save(path)
    token = token_for(store, card)
    fields = decode_token(token).fields
    masked = mask_msisdn(card.msisdn)

    def courier(number: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [realname_bin(), "courier", "verify", "--bundle", str(path),
             "--token", encode_text(token), "--courier", "demo", "--document-number-file", "-",
             *extra],
            input=number, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip

    shown = courier(RECIPIENT)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    first, *rest = shown.stdout.splitlines()
    assert first.startswith("OK: ")  # the line scripts read is unchanged
    details = dict(line.split(": ", 1) for line in rest)
    assert details == {
        "order": fields.order_id,
        "waybill": fields.waybill,
        "iccid": card.iccid,
        "msisdn": masked,
        "expires": f"{fields.expires_at:%Y-%m-%dT%H:%M:%SZ}",
    }
    as_json = courier(STRANGER, "--json")
    assert as_json.returncode == 3
    answer = json.loads(as_json.stdout)
    assert answer == {
        "verdict": "RECIPIENT_MISMATCH",
        "detail": answer["detail"],
        "stale_bundle": False,
        "order_id": fields.order_id,
        "waybill": fields.waybill,
        "iccid": card.iccid,
        "msisdn_masked": masked,
        "expires_at": fields.expires_at.isoformat(),
        "queued_confirmation": None,
    }
    queue = tmp_path / "queue.jsonl"
    queued = courier(RECIPIENT, "--json", "--confirm", "--staff-id", "SF-1", "--queue", str(queue))
    assert queued.returncode == 0, queued.stdout + queued.stderr
    answer = json.loads(queued.stdout)
    assert answer["verdict"] == "OK"
    assert answer["queued_confirmation"] == next(ConfirmationQueue(queue).pending()).id
    for run in (shown, as_json, queued):
        assert RECIPIENT not in run.stdout and STRANGER not in run.stdout
        assert card.msisdn not in run.stdout


def test_courier_sync_reports_a_refused_handover_time_and_syncs_the_rest(
    server: RegistryHarness, tmp_path: Path
) -> None:
    store = new_store(server, "offline-sync")
    late = sell(server, store, 35)
    fine = sell(server, store, 36, number=resident_id(36))
    queue = ConfirmationQueue(tmp_path / "queue.jsonl")
    now = dt.datetime.now(dt.UTC)
    # Queued more than an offline bundle's max age ago (a device left offline too long).
    stale = new_confirmation(
        token_for(store, late, issued_at=now - dt.timedelta(hours=30)),
        1,
        RECIPIENT,
        courier_staff_id="SF-1",
        delivered_at=now - dt.timedelta(hours=26),
        offline_reason="OK",
    )
    good = new_confirmation(
        token_for(store, fine, number=resident_id(36)),
        1,
        resident_id(36),
        courier_staff_id="SF-1",
        delivered_at=now,
        offline_reason="OK",
    )
    queue.append(stale)
    queue.append(good)
    run = subprocess.run(
        [realname_bin(), "courier", "sync", "--data-dir", str(server.pki_dir.parent),
         "--address", server.address, "--as", "courier-demo", "--queue", str(queue.path)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode == 3, run.stdout + run.stderr
    assert f"{stale.id} ERROR: INVALID_ARGUMENT" in run.stderr
    assert "field delivered_at" in run.stderr
    assert f"{good.id} OK" in run.stdout
    assert [c.id for c in queue.pending()] == [stale.id]
    assert card_state(server, fine) == vpb.CARD_STATE_ACTIVE
    assert card_state(server, late) == vpb.CARD_STATE_PENDING_DELIVERY
