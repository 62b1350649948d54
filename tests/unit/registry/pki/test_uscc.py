from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.pki.errors import InvalidCreditCodeError
from registry.pki.uscc import (
    ALPHABET,
    CATEGORIES,
    WEIGHTS,
    check_character,
    is_valid_credit_code,
    parse_credit_code,
    validate_credit_code,
)
from tests.unit.registry.pki.factory import REAL_CODES


def test_weights_are_powers_of_three_mod_31() -> None:
    assert WEIGHTS == (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


@pytest.mark.parametrize("code", REAL_CODES)
def test_published_codes_are_valid(code: str) -> None:
    assert is_valid_credit_code(code)
    assert check_character(code[:17]) == code[17]


def test_parts_of_a_published_code() -> None:
    parsed = parse_credit_code("91350100M000100Y43")
    assert parsed.registration_authority == "9"
    assert parsed.category == "1"
    assert parsed.region == "350100"
    assert parsed.province == "35"
    assert parsed.subject_id == "M000100Y4"
    assert parsed.check == "3"
    assert str(parsed) == "91350100M000100Y43"


def test_canonical_form_trims_and_upper_cases() -> None:
    assert validate_credit_code("  91110000802100433b ") == "91110000802100433B"


def test_check_char_31_is_written_zero() -> None:
    # A 17-character body whose weighted sum is 0 mod 31: its check value 31 becomes "0".
    body = "91110000" + "0" * 8 + "G"
    assert sum(ALPHABET.index(c) * w for c, w in zip(body, WEIGHTS, strict=True)) % 31 == 0
    assert check_character(body) == "0"
    assert is_valid_credit_code(body + "0")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("91350100M000100Y44", "check character"),  # last character changed
        ("91350100M000100Y34", "check character"),  # adjacent transposition
        ("91350100M000100Y4", "18 characters"),
        ("91350100M000100Y433", "18 characters"),
        ("91350100M00010OY43", "alphabet"),  # letter O is not in the alphabet
        ("91350100I000100Y43", "alphabet"),
        ("B1350100M000100Y43", "registration authority"),
        ("94350100M000100Y43", "category"),
        ("Y2350100M000100Y43", "category"),
        ("91990100M000100Y43", "region"),  # 99 is no province
        ("913501A0M000100Y43", "region"),
    ],
)
def test_corrupted_codes_are_refused(code: str, message: str) -> None:
    assert not is_valid_credit_code(code)
    with pytest.raises(InvalidCreditCodeError, match=message):
        parse_credit_code(code)


def test_central_registrations_use_region_100000() -> None:
    body = "11100000" + "000013127"
    code = body + check_character(body)
    assert parse_credit_code(code).province is None


_body_chars = st.sampled_from(ALPHABET)
_prefix = st.sampled_from(
    [authority + category for authority, cats in CATEGORIES.items() for category in sorted(cats)]
)
_region = st.sampled_from(["110000", "350100", "440300", "650102", "100000"])


@st.composite
def credit_codes(draw: st.DrawFn) -> str:
    body = (
        draw(_prefix) + draw(_region) + "".join(draw(st.lists(_body_chars, min_size=9, max_size=9)))
    )
    return body + check_character(body)


@given(credit_codes())
def test_generated_codes_validate(code: str) -> None:
    assert validate_credit_code(code) == code


@given(credit_codes(), st.integers(min_value=0, max_value=17), _body_chars)
def test_any_single_substitution_is_detected(code: str, position: int, replacement: str) -> None:
    # 31 is prime and every weight is invertible mod 31, so one changed character always
    # changes the weighted sum; the check (or a structural rule) must reject it.
    mutated = code[:position] + replacement + code[position + 1 :]
    assert is_valid_credit_code(mutated) == (mutated == code)


@given(credit_codes(), st.integers(min_value=8, max_value=16))
def test_adjacent_transpositions_are_detected(code: str, position: int) -> None:
    swapped = code[:position] + code[position + 1] + code[position] + code[position + 2 :]
    assert is_valid_credit_code(swapped) == (swapped == code)
