"""The shared delivery vectors (tests/vectors/delivery/): the Python offline verifier gives every
one its expected verdict, they cover every offline verdict, and they match their generator."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from registry.delivery import DeliveryBundle, Reason
from tests.support import delivery_vectors as vectors
from tests.support.delivery_vectors import OUT_DIR, check, drift, load, problems

BUNDLE_JSON, DOCUMENT, EXTRAS = load(OUT_DIR)
CASES = {case["name"]: case for case in DOCUMENT["cases"]}
OFFLINE_REASONS = set(Reason) - {Reason.ALREADY_DELIVERED, Reason.LOCKED}
# An 18-character resident ID number standing alone (not inside base64 or hex).
RESIDENT_ID = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")


@pytest.fixture(scope="module")
def verifier() -> Any:
    return vectors.verifier_of(BUNDLE_JSON, DOCUMENT)


@pytest.mark.parametrize("name", list(CASES))
def test_each_vector_gets_its_verdict_from_the_python_verifier(verifier: Any, name: str) -> None:
    case = CASES[name]
    expected = (case["expect"]["verdict"], case["expect"]["stale_bundle"])
    assert vectors.verdict_of(verifier, case) == expected


@pytest.mark.parametrize("case", DOCUMENT["bundle_cases"], ids=lambda case: case["name"])
def test_each_variant_bundle_is_accepted_or_refused_as_expected(case: dict[str, Any]) -> None:
    only = {**DOCUMENT, "bundle_cases": [case]}
    assert problems(BUNDLE_JSON, only, EXTRAS) == []


def test_the_vectors_cover_every_offline_verdict() -> None:
    assert {case["expect"]["verdict"] for case in CASES.values()} == OFFLINE_REASONS
    assert any(case["expect"]["stale_bundle"] for case in CASES.values())


def test_the_bundle_is_what_bundle_export_writes() -> None:
    assert json.loads(BUNDLE_JSON)["format"] == "realname-delivery-bundle"
    for bundle in (BUNDLE_JSON, *EXTRAS.values()):
        assert DeliveryBundle.from_json(bundle).to_json() == bundle


def test_the_committed_vectors_match_their_generator() -> None:
    assert check() == []


def test_the_drift_check_notices_a_changed_expectation_or_case() -> None:
    changed = copy.deepcopy(DOCUMENT)
    changed["cases"][0]["expect"]["verdict"] = "RECIPIENT_MISMATCH"
    assert problems(BUNDLE_JSON, changed) == [
        "ok: expected ('RECIPIENT_MISMATCH', False), got ('OK', False)"
    ]
    assert drift(changed, DOCUMENT) != []
    fewer = copy.deepcopy(DOCUMENT)
    del fewer["cases"][-1]
    assert drift(fewer, DOCUMENT) != []
    swapped = copy.deepcopy(DOCUMENT)
    swapped["cases"][0]["token"] = CASES["wrong_courier"]["token"]
    assert drift(swapped, DOCUMENT) != []
    # A token of the same shape committed to another document: the verdict check catches it.
    swapped["cases"][0]["token"] = CASES["ok_passport"]["token"]
    assert problems(BUNDLE_JSON, swapped) != []


def test_no_identity_number_but_the_synthetic_ones_is_in_clear() -> None:
    text = (OUT_DIR / "vectors.json").read_text("utf-8")
    found = {match.upper() for match in RESIDENT_ID.findall(text)}
    # Only the two synthetic numbers of tests.support.identities (count only, never the values).
    assert found <= {vectors.RECIPIENT, vectors.STRANGER}, f"{len(found)} numbers found"
    for bundle in (BUNDLE_JSON, *EXTRAS.values()):
        assert not RESIDENT_ID.search(bundle.decode("utf-8"))
