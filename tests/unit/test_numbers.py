"""MSISDN and ICCID format checks (ITU-T E.118 Luhn), request ids, masking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.subscribers import mask_msisdn
from services.domain.numbers import (
    iccid_problem,
    luhn_complete,
    luhn_valid,
    msisdn_problem,
    request_id_problem,
)


@pytest.mark.parametrize("good", ["13800138000", "17031234567", "19912345678"])
def test_valid_msisdns(good: str) -> None:
    assert msisdn_problem(good) is None


@pytest.mark.parametrize(
    "bad", ["1380013800", "138001380001", "12800138000", "+8613800138000", "1380013800a", ""]
)
def test_invalid_msisdns(bad: str) -> None:
    assert msisdn_problem(bad) is not None


def test_known_luhn_values() -> None:
    assert luhn_valid("79927398713")  # the textbook Luhn example
    assert not luhn_valid("79927398710")
    assert iccid_problem("89860012345678901201") == "the Luhn check digit does not match"


@given(st.text(alphabet="0123456789", min_size=17, max_size=18))
def test_completed_iccids_pass_and_altered_ones_fail(body: str) -> None:
    iccid = luhn_complete("89" + body[:-1])  # 19 or 20 digits with the check digit
    assert iccid_problem(iccid) is None
    last = int(iccid[-1])
    assert iccid_problem(iccid[:-1] + str((last + 1) % 10)) == "the Luhn check digit does not match"


@pytest.mark.parametrize(
    "bad",
    ["8986001234567890", "9986001234567890120", "898600123456789012345", "89860012345678901x"],
)
def test_iccid_shape_is_checked(bad: str) -> None:
    assert iccid_problem(bad) == "must be 19-20 digits starting with 89"


def test_masking_and_request_ids() -> None:
    assert mask_msisdn("13812341234") == "138****1234"
    assert request_id_problem("order-42:try.1") is None
    assert request_id_problem("") is not None
    assert request_id_problem("x" * 65) is not None
    assert request_id_problem("has space") is not None
