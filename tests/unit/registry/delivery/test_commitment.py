"""Recipient commitment: Argon2id at the floor, layout, normalisation, hiding, strict inputs.

The layout and normalisation tests use :data:`CHEAP` parameters (``commit`` takes any cost
Argon2 accepts) so that they run in microseconds; the production parameters, the floor and its
enforcement are tested here and in test_token / test_offline with real tokens.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from hypothesis import given
from hypothesis import strategies as st

from registry.delivery.commitment import (
    COMMITMENT_LABEL,
    DEFAULT_PARAMS,
    FLOOR,
    MAX_MEMORY_KIB,
    MAX_WORK,
    SALT_SIZE,
    Kdf,
    KdfParams,
    check_params,
    commit,
    matches,
    new_salt,
)
from registry.delivery.errors import InvalidDocumentError, WeakCommitmentError
from registry.subscribers import DocumentType, normalise_number
from tests.support.paths import VECTORS_DIR

NUMBER = "11010519491231002X"
SALT = bytes(range(16))
CHEAP = KdfParams(Kdf.ARGON2ID, memory_kib=64, iterations=1, parallelism=1)
"""Far under the floor: only for tests of layout and normalisation, never in a token."""


def test_layout_is_argon2id_over_label_type_number() -> None:
    expected = Argon2id(salt=SALT, length=32, iterations=1, lanes=1, memory_cost=64).derive(
        b"realname/recipient-commitment/v2\x00" + b"\x01" + NUMBER.encode()
    )
    assert COMMITMENT_LABEL == b"realname/recipient-commitment/v2\x00"
    assert commit(DocumentType.RESIDENT_ID_CARD, NUMBER, SALT, CHEAP) == expected


def _vectors() -> list[dict[str, Any]]:
    document = json.loads((VECTORS_DIR / "recipient-commitment.json").read_text())
    cases: list[dict[str, Any]] = document["cases"]
    return cases


@pytest.mark.parametrize("case", _vectors(), ids=lambda case: f"m{case['memory_kib']}")
def test_known_answers_shared_with_hash_wasm(case: dict[str, Any]) -> None:
    params = KdfParams(
        Kdf[case["kdf"].upper()], case["memory_kib"], case["iterations"], case["parallelism"]
    )
    salt = bytes.fromhex(case["salt_hex"])
    kind = DocumentType(case["document_type"])
    password = COMMITMENT_LABEL + bytes((kind,)) + normalise_number(case["number"]).encode()
    assert password.hex() == case["password_hex"]
    assert commit(kind, case["number"], salt, params).hex() == case["commitment_hex"]


def test_the_default_vector_is_at_the_production_parameters() -> None:
    first = _vectors()[0]
    assert (first["memory_kib"], first["iterations"], first["parallelism"]) == (
        DEFAULT_PARAMS.memory_kib,
        DEFAULT_PARAMS.iterations,
        DEFAULT_PARAMS.parallelism,
    )


def test_production_parameters_are_memory_hard_and_at_least_the_floor() -> None:
    # OWASP's least Argon2id configuration is 19 MiB, 2 passes, 1 lane: never go under it.
    assert FLOOR.kdf is Kdf.ARGON2ID
    assert FLOOR.memory_kib >= 19_456 and FLOOR.iterations >= 2
    assert DEFAULT_PARAMS.kdf is FLOOR.kdf
    assert DEFAULT_PARAMS.memory_kib >= FLOOR.memory_kib
    assert DEFAULT_PARAMS.iterations >= FLOOR.iterations
    # hash-wasm (issue 15's browser check) takes memory in KiB, one lane, a 32-byte tag.
    assert DEFAULT_PARAMS.parallelism == 1
    check_params(DEFAULT_PARAMS)
    check_params(FLOOR)


def test_the_commitment_is_not_the_old_single_sha256() -> None:
    old = hashlib.sha256(
        b"realname/delivery/recipient-commitment/v1\x00" + SALT + b"\x01" + NUMBER.encode()
    ).digest()
    assert commit(DocumentType.RESIDENT_ID_CARD, NUMBER, SALT, DEFAULT_PARAMS) != old


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        (KdfParams(Kdf.ARGON2ID, FLOOR.memory_kib - 1, FLOOR.iterations, 1), "under the floor"),
        (KdfParams(Kdf.ARGON2ID, FLOOR.memory_kib, FLOOR.iterations - 1, 1), "under the floor"),
        (CHEAP, "under the floor"),
        (KdfParams(Kdf.ARGON2ID, FLOOR.memory_kib, FLOOR.iterations, 0), "parallelism"),
        (KdfParams(Kdf.ARGON2ID, FLOOR.memory_kib, FLOOR.iterations, 5), "parallelism"),
        (KdfParams(Kdf.ARGON2ID, MAX_MEMORY_KIB + 1024, FLOOR.iterations, 1), "past what"),
        (KdfParams(Kdf.ARGON2ID, FLOOR.memory_kib, MAX_WORK // FLOOR.memory_kib + 1, 1), "past"),
    ],
)
def test_check_params_refuses_weak_or_unbounded_costs(params: KdfParams, problem: str) -> None:
    with pytest.raises(WeakCommitmentError, match=problem):
        check_params(params)


def test_document_types_are_the_proto_enum_numbers() -> None:
    assert [(t.name, t.value) for t in DocumentType] == [
        ("RESIDENT_ID_CARD", 1),
        ("PASSPORT", 2),
        ("HK_MACAO_PERMIT", 3),
        ("TAIWAN_PERMIT", 4),
        ("FOREIGN_PERMANENT_RESIDENCE", 5),
    ]


@pytest.mark.parametrize(
    "spelling",
    [
        "11010519491231002X",
        "110105 19491231 002x",
        "110105-19491231-002x",
        " 1101\t0519491231002x\n",
    ],
)
def test_normalised_spellings_match(spelling: str) -> None:
    commitment = commit(1, NUMBER, SALT, CHEAP)
    assert matches(commitment, SALT, CHEAP, DocumentType.RESIDENT_ID_CARD, spelling)


def test_normalisation_is_the_services_rule() -> None:
    # services/domain/documents.py::normalise_number: strip \s and '-', upper-case.
    assert normalise_number(" e12-34 5678\u3000a ") == "E12345678A"


def test_other_number_type_salt_or_parameters_do_not_match() -> None:
    commitment = commit(DocumentType.RESIDENT_ID_CARD, NUMBER, SALT, CHEAP)
    kind = DocumentType.RESIDENT_ID_CARD
    assert not matches(commitment, SALT, CHEAP, kind, "110105194912310011")
    assert not matches(commitment, SALT, CHEAP, DocumentType.PASSPORT, NUMBER)
    assert not matches(commitment, bytes(16), CHEAP, kind, NUMBER)
    other = KdfParams(Kdf.ARGON2ID, memory_kib=64, iterations=2, parallelism=1)
    assert not matches(commitment, SALT, other, kind, NUMBER)


def test_salts_are_fresh() -> None:
    salts = {new_salt() for _ in range(64)}
    assert len(salts) == 64
    assert all(len(salt) == SALT_SIZE for salt in salts)


@pytest.mark.parametrize(
    ("doc_type", "number", "salt"),
    [
        (0, NUMBER, SALT),
        (6, NUMBER, SALT),
        (1, " - ", SALT),
        (1, "", SALT),
        (1, "A" * 65, SALT),
        (1, "1101\x00", SALT),
        (1, NUMBER, b"short"),
    ],
)
def test_bad_inputs_raise(doc_type: int, number: str, salt: bytes) -> None:
    with pytest.raises(InvalidDocumentError):
        commit(doc_type, number, salt, CHEAP)


def test_a_cost_argon2_refuses_is_a_weak_commitment() -> None:
    with pytest.raises(WeakCommitmentError):
        commit(1, NUMBER, SALT, KdfParams(Kdf.ARGON2ID, memory_kib=4, iterations=1, parallelism=1))


def test_matches_refuses_a_commitment_of_the_wrong_size() -> None:
    with pytest.raises(InvalidDocumentError):
        matches(b"\x00" * 31, SALT, CHEAP, 1, NUMBER)


@given(st.text(min_size=1, max_size=30), st.binary(min_size=16, max_size=16))
def test_commitment_never_contains_the_number(number: str, salt: bytes) -> None:
    normal = normalise_number(number)
    if not normal or not normal.isprintable() or len(normal) > 64:
        return
    commitment = commit(DocumentType.PASSPORT, number, salt, CHEAP)
    assert len(commitment) == 32
    assert matches(commitment, salt, CHEAP, DocumentType.PASSPORT, number)
    if len(normal.encode()) >= 4:
        assert normal.encode() not in commitment + salt
