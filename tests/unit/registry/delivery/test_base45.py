"""Base45 (RFC 9285): the RFC's examples, round trips, and strict decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.delivery.base45 import ALPHABET, Base45Error, b45decode, b45encode


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"AB", "BB8"),
        (b"Hello!!", "%69 VD92EX0"),
        (b"base-45", "UJCLQE7W581"),
        (b"ietf!", "QED8WEX0"),
        (b"", ""),
        (b"\x00", "00"),
        (b"\xff\xff", "FGW"),
    ],
)
def test_rfc9285_examples(data: bytes, text: str) -> None:
    assert b45encode(data) == text
    assert b45decode(text) == data


@given(st.binary(max_size=400))
def test_round_trip_in_the_qr_alphanumeric_set(data: bytes) -> None:
    text = b45encode(data)
    assert set(text) <= set(ALPHABET)
    assert b45decode(text) == data


@pytest.mark.parametrize(
    "text",
    [
        "GGW",  # 65536 does not fit two bytes
        ":::",  # 44 + 44*45 + 44*2025, far beyond
        "U7",  # 30 + 7*45 = 345 does not fit one byte
        "A",  # length 1 mod 3
        "BB8A",  # length 1 mod 3
        "bb8",  # lower case is outside the alphabet
        "BB\u00e9",
    ],
)
def test_strict_decoding_refuses(text: str) -> None:
    with pytest.raises(Base45Error):
        b45decode(text)


@given(st.text(max_size=60))
def test_random_text_decodes_or_raises_base45_error(text: str) -> None:
    try:
        data = b45decode(text)
    except Base45Error:
        return
    assert b45encode(data) == text
