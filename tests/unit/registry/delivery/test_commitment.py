"""Recipient commitment: normalisation, domain separation, hiding, strict inputs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.delivery.commitment import COMMITMENT_LABEL, SALT_SIZE, commit, matches, new_salt
from registry.delivery.errors import InvalidDocumentError
from registry.subscribers import DocumentType, normalise_number

NUMBER = "11010519491231002X"
SALT = bytes(range(16))


def test_layout_is_label_salt_type_number() -> None:
    expected = hashlib.sha256(COMMITMENT_LABEL + SALT + b"\x01" + NUMBER.encode()).digest()
    assert commit(DocumentType.RESIDENT_ID_CARD, NUMBER, SALT) == expected


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
    commitment = commit(1, NUMBER, SALT)
    assert matches(commitment, SALT, DocumentType.RESIDENT_ID_CARD, spelling)


def test_normalisation_is_the_services_rule() -> None:
    # services/domain/documents.py::normalise_number: strip \s and '-', upper-case.
    assert normalise_number(" e12-34 5678\u3000a ") == "E12345678A"


def test_other_number_type_or_salt_does_not_match() -> None:
    commitment = commit(DocumentType.RESIDENT_ID_CARD, NUMBER, SALT)
    assert not matches(commitment, SALT, DocumentType.RESIDENT_ID_CARD, "110105194912310011")
    assert not matches(commitment, SALT, DocumentType.PASSPORT, NUMBER)
    assert not matches(commitment, bytes(16), DocumentType.RESIDENT_ID_CARD, NUMBER)


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
        commit(doc_type, number, salt)


def test_matches_refuses_a_commitment_of_the_wrong_size() -> None:
    with pytest.raises(InvalidDocumentError):
        matches(b"\x00" * 31, SALT, 1, NUMBER)


@given(st.text(min_size=1, max_size=30), st.binary(min_size=16, max_size=16))
def test_commitment_never_contains_the_number(number: str, salt: bytes) -> None:
    normal = normalise_number(number)
    if not normal or not normal.isprintable() or len(normal) > 64:
        return
    commitment = commit(DocumentType.PASSPORT, number, salt)
    assert len(commitment) == 32
    assert matches(commitment, salt, DocumentType.PASSPORT, number)
    if len(normal.encode()) >= 4:
        assert normal.encode() not in commitment + salt
