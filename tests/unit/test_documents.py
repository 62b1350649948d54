"""Document validation: GB 11643-1999 check digits, dates, regions, other types; masking."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.subscribers import DocumentType, normalise_number
from services.domain.documents import (
    document_problem,
    mask_document_number,
    resident_id_check_char,
    resident_id_problem,
)
from tests.support.identities import resident_id

TODAY = dt.date(2026, 11, 28)


def test_published_example_number_is_valid() -> None:
    # The worked example of GB 11643-1999 Annex: 11010519491231002X.
    assert resident_id_check_char("11010519491231002") == "X"
    assert resident_id_problem("11010519491231002X", TODAY) is None


def with_check(first17: str) -> str:
    """Completes 17 digits with their correct check character."""
    return first17 + resident_id_check_char(first17)


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("11010519491231002", "must be 18 characters"),
        ("110105194912310021", "check character does not match"),
        ("1101051949123100X2", "first 17 characters must be digits"),
        ("11010519491231002Y", "check character must be a digit or X"),
        (with_check("99010519491231002"), "region code is not a known province"),
        (with_check("11010519490230002"), "birth date is not a real date"),
        (with_check("11010520300101001"), "birth date is in the future"),
        (with_check("11010518000101001"), "implausibly early"),
        (with_check("44030620000229123"), None),  # a leap day is a real date
        (with_check("65010119000101001"), None),  # the earliest plausible birth date
    ],
)
def test_resident_id_rules(number: str, problem: str | None) -> None:
    found = resident_id_problem(number, TODAY)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_region_code_without_prefecture_is_refused() -> None:
    first17 = "11000019900307001"
    number = first17 + resident_id_check_char(first17)
    assert resident_id_problem(number, TODAY) == "the region code names no prefecture or county"


@given(st.integers(min_value=0, max_value=999))
def test_every_generated_id_is_valid_and_any_other_check_char_is_not(seq: int) -> None:
    number = resident_id(seq)
    assert resident_id_problem(number, TODAY) is None
    for wrong in "0123456789X":
        if wrong != number[17]:
            assert resident_id_problem(number[:17] + wrong, TODAY) is not None


@given(st.integers(min_value=0, max_value=16), st.sampled_from("0123456789"))
def test_any_single_digit_change_is_caught(position: int, digit: str) -> None:
    number = resident_id(123)
    changed = number[:position] + digit + number[position + 1 :]
    if changed != number:
        assert resident_id_problem(changed, TODAY) is not None


@pytest.mark.parametrize(
    ("doc_type", "good", "bad"),
    [
        (DocumentType.PASSPORT, "E12345678", "E12"),
        (DocumentType.PASSPORT, "G12345678", "E1234567890123456789"),
        (DocumentType.HK_MACAO_PERMIT, "H1234567801", "X12345678"),
        (DocumentType.HK_MACAO_PERMIT, "M12345678", "H123456"),
        (DocumentType.TAIWAN_PERMIT, "12345678", "1234567"),
        (DocumentType.FOREIGN_PERMANENT_RESIDENCE, "USA110090101234", "US1100901012345"),
        (DocumentType.FOREIGN_PERMANENT_RESIDENCE, "911234199001011234", "811234199001011234"),
    ],
)
def test_other_document_formats(doc_type: DocumentType, good: str, bad: str) -> None:
    assert document_problem(doc_type, good, TODAY) is None
    assert document_problem(doc_type, bad, TODAY) is not None


def test_normalisation_and_masking() -> None:
    assert normalise_number(" 110105 19491231 002x ") == "11010519491231002X"
    assert mask_document_number("11010519491231002X") == "1101**********002X"
    masked = mask_document_number("E1234567")
    assert masked.startswith("E1") and masked.endswith("67") and "345" not in masked
