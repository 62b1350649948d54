from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.pki.authority import create_operator_ca, create_root_ca
from registry.pki.bundle import TrustBundle
from registry.pki.errors import BundleError
from registry.pki.verify import Verifier
from tests.unit.registry.pki.factory import World


def test_json_round_trip(world: World, tmp_path: Path) -> None:
    bundle = world.bundle()
    path = tmp_path / "bundle.json"
    bundle.save(path)
    loaded = TrustBundle.load(path)
    assert loaded == bundle
    document = json.loads(path.read_text())
    assert document["format"] == "realname-trust-bundle"
    assert document["version"] == 1
    assert len(document["operator_cas"]) == len(world.operators)
    assert Verifier(loaded).verify(world.issue()).authorized


def test_with_crls_replaces_only_crls(world: World) -> None:
    bundle = world.bundle()
    fresh = [world.crl(world.root)]
    updated = bundle.with_crls(fresh)
    assert updated.crls == tuple(fresh)
    assert updated.operator_cas == bundle.operator_cas


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"format": "other", "version": 1}', "realname-trust-bundle"),
        (b'{"format": "realname-trust-bundle", "version": 2}', "version 2"),
        (b'{"format": "realname-trust-bundle", "version": 1, "root": 5}', "PEM string"),
        (
            b'{"format": "realname-trust-bundle", "version": 1, "root": "x", "operator_cas": [1]}',
            "lists of PEM",
        ),
        (
            b'{"format": "realname-trust-bundle", "version": 1, "root": "x", "operator_cas": []}',
            "unreadable",
        ),
    ],
)
def test_malformed_documents(document: bytes, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        TrustBundle.from_json(document)


def test_roles_are_checked(world: World) -> None:
    with pytest.raises(BundleError, match="self-issued"):
        TrustBundle(root=world.operators["cmcc"].certificate, operator_cas=())
    store = world.issue()
    with pytest.raises(BundleError, match="not a CA"):
        TrustBundle(root=world.root.certificate, operator_cas=(store,))
    other_root = create_root_ca(common_name="Some Other Root", now=world.epoch)
    stranger = create_operator_ca(other_root, "cmcc", now=world.epoch)
    with pytest.raises(BundleError, match="issued under"):
        TrustBundle(root=world.root.certificate, operator_cas=(stranger.certificate,))
    # The root listed as an operator CA passes the shape check but is no operator CA.
    confused = TrustBundle(root=world.root.certificate, operator_cas=(world.root.certificate,))
    with pytest.raises(BundleError, match="unusable"):
        Verifier(confused)
