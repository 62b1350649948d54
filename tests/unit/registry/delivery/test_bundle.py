"""Delivery bundle: JSON layout, strict loading, logged certificates, freshness."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from registry.delivery.bundle import (
    BUNDLE_FORMAT,
    DEFAULT_MAX_AGE,
    DeliveryBundle,
    LoggedCertificate,
)
from registry.delivery.errors import DeliveryBundleError
from registry.log.entries import Issuance, Renewal, Revocation, StoreRef, store_of_certificate
from registry.merkle import leaf_hash
from tests.unit.registry.delivery.support import ORIGIN, Delivery


@pytest.fixture(scope="module")
def bundle(delivery: Delivery) -> DeliveryBundle:
    return delivery.bundle()


def document(bundle: DeliveryBundle) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(bundle.to_json())
    return loaded


def test_layout(delivery: Delivery, bundle: DeliveryBundle) -> None:
    doc = document(bundle)
    assert doc["format"] == BUNDLE_FORMAT
    assert doc["version"] == 1
    assert doc["max_age_seconds"] == 86_400
    assert doc["issued_at"] == bundle.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert doc["trust"]["format"] == "realname-trust-bundle"
    assert doc["log"]["origin"] == ORIGIN
    assert doc["log"]["verifier_keys"] == [delivery.log.verifier_key]
    assert doc["log"]["checkpoint"].startswith(f"{ORIGIN}\n{delivery.log.tree.size}\n")
    assert len(doc["stores"]) == 4
    first = doc["stores"][0]
    assert set(first) == {"entry", "leaf_index", "proof"}
    assert first["leaf_index"] == delivery.indices[delivery.good.serial_number]
    assert bundle.max_age == DEFAULT_MAX_AGE


def test_logged_certificate_reads_its_entry(delivery: Delivery) -> None:
    index = delivery.indices[delivery.good.serial_number]
    logged = delivery.log.logged(index)
    assert logged.certificate == delivery.good
    assert logged.operator == "cmcc"
    assert logged.serial == delivery.good.serial_number
    assert leaf_hash(logged.entry) == delivery.log.tree.leaf_hash(index)


def test_renewal_entries_are_accepted(delivery: Delivery) -> None:
    der = delivery.good.public_bytes(serialization.Encoding.DER)
    store, serial = store_of_certificate(der, "cmcc")
    entry = Renewal(delivery.now, store, serial, 0x77, der).encode()
    assert LoggedCertificate(entry, 0, ()).serial == serial


def test_logged_certificate_refusals(delivery: Delivery) -> None:
    der = delivery.good.public_bytes(serialization.Encoding.DER)
    store, serial = store_of_certificate(der, "cmcc")
    revocation = Revocation(delivery.now, store, serial, 1).encode()
    with pytest.raises(DeliveryBundleError, match="revocation entry"):
        LoggedCertificate(revocation, 0, ())
    with pytest.raises(DeliveryBundleError, match="not a log entry"):
        LoggedCertificate(b"\x01\x01garbage", 0, ())
    wrong_serial = Issuance(delivery.now, store, serial + 1, der).encode()
    with pytest.raises(DeliveryBundleError, match="serial"):
        LoggedCertificate(wrong_serial, 0, ())
    not_der = Issuance(delivery.now, StoreRef("cmcc", "m", "s", "c"), 5, b"\x30\x00").encode()
    with pytest.raises(DeliveryBundleError, match="DER"):
        LoggedCertificate(not_der, 0, ())
    entry = Issuance(delivery.now, store, serial, der).encode()
    with pytest.raises(DeliveryBundleError, match="32 bytes"):
        LoggedCertificate(entry, 0, (b"\x00" * 31,))
    with pytest.raises(DeliveryBundleError, match="leaf index"):
        LoggedCertificate(entry, -1, ())


def test_duplicate_stores_are_refused(delivery: Delivery, bundle: DeliveryBundle) -> None:
    with pytest.raises(DeliveryBundleError, match="listed twice"):
        dataclasses.replace(bundle, stores=(*bundle.stores, bundle.stores[0]))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"log_keys": ()}, "at least one log verifier key"),
        ({"log_keys": ("not a key",)}, "malformed"),
        ({"max_age": dt.timedelta(0)}, "max_age"),
        ({"witness_threshold": 1}, "witness policy"),
        ({"issued_at": dt.datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_structural_refusals(bundle: DeliveryBundle, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(DeliveryBundleError, match=message):
        dataclasses.replace(bundle, **changes)


def test_save_and_load(tmp_path: Path, bundle: DeliveryBundle) -> None:
    path = tmp_path / "bundle.json"
    bundle.save(path)
    assert DeliveryBundle.load(path) == bundle
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.json"]


def _mutate(bundle: DeliveryBundle, edit: str) -> bytes:
    doc = document(bundle)
    if edit == "format":
        doc["format"] = "realname-trust-bundle"
    elif edit == "version":
        doc["version"] = 2
    elif edit == "issued_at":
        doc["issued_at"] = "2026-06-01 08:00:00"
    elif edit == "max_age":
        doc["max_age_seconds"] = "86400"
    elif edit == "bool max_age":
        doc["max_age_seconds"] = True
    elif edit == "trust":
        doc["trust"]["root"] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    elif edit == "stores":
        doc["stores"] = {}
    elif edit == "store item":
        doc["stores"][0] = "entry"
    elif edit == "entry base64":
        doc["stores"][0]["entry"] = doc["stores"][0]["entry"][:-2] + "!!"
    elif edit == "entry non-canonical":
        doc["stores"][0]["entry"] = "AB=="  # one zero byte, whose canonical spelling is "AA=="
    elif edit == "proof":
        doc["stores"][0]["proof"] = [1, 2]
    elif edit == "log keys":
        doc["log"]["verifier_keys"] = "key"
    elif edit == "threshold":
        doc["log"]["witness_threshold"] = "1"
    elif edit == "log":
        del doc["log"]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "edit",
    [
        "format",
        "version",
        "issued_at",
        "max_age",
        "bool max_age",
        "trust",
        "stores",
        "store item",
        "entry base64",
        "entry non-canonical",
        "proof",
        "log keys",
        "threshold",
        "log",
    ],
)
def test_malformed_json_is_refused(bundle: DeliveryBundle, edit: str) -> None:
    with pytest.raises(DeliveryBundleError):
        DeliveryBundle.from_json(_mutate(bundle, edit))


@pytest.mark.parametrize("data", [b"", b"[]", b"{", "\u2014"])
def test_not_a_bundle(data: bytes | str) -> None:
    with pytest.raises(DeliveryBundleError):
        DeliveryBundle.from_json(data)


def test_freshness(delivery: Delivery) -> None:
    bundle = delivery.bundle(max_age=dt.timedelta(hours=6))
    assert bundle.expires_at == delivery.issued_at + dt.timedelta(hours=6)
    assert bundle.fresh_until == bundle.expires_at
    assert bundle.revocation_horizon == delivery.issued_at + dt.timedelta(days=1)
    assert not bundle.is_stale(bundle.fresh_until)
    assert bundle.is_stale(bundle.fresh_until + dt.timedelta(seconds=1))


def test_freshness_follows_the_newest_crl_of_each_issuer(delivery: Delivery) -> None:
    old = delivery.crls(this_update=delivery.now - dt.timedelta(hours=23))
    new = delivery.crls(this_update=delivery.now - dt.timedelta(hours=1))
    bundle = delivery.bundle(crls=[*old, *new])
    # The superseded CRLs (lower numbers) end sooner, but only the newest per issuer counts.
    assert bundle.revocation_horizon == delivery.now + dt.timedelta(hours=23)
