"""Log entry encoding: deterministic, versioned, strict, and what the monitor reads out of it."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.log.entries import (
    AuditDigest,
    Entry,
    EntryKind,
    Issuance,
    OperatorCaAdded,
    OperatorCaRevoked,
    OperatorCaRotated,
    Renewal,
    Revocation,
    StoreRef,
    certificate_sha256,
    decode_entry,
    encode_entry,
    operator_of,
    store_of,
    store_of_certificate,
)
from registry.log.errors import EntryTooLargeError, MalformedEntryError
from registry.merkle import leaf_hash
from tests.support.logdata import T0, issuance, store, store_certificate

STORE = StoreRef("cmcc", "tmall", "shop-1", "91110000000000001X")
DER = b"\x30\x03\x02\x01\x01"


def every_kind() -> list[Entry]:
    return [
        Issuance(T0, STORE, 0x1234, DER),
        Renewal(T0, STORE, 0x1235, 0x1234, DER),
        Revocation(T0, STORE, 0x1235, 1),
        OperatorCaAdded(T0, "vno1", DER),
        OperatorCaRotated(T0, "vno1", b"\x11" * 32, DER),
        OperatorCaRevoked(T0, "vno1", DER, 9),
        AuditDigest(T0, "registry-page", b"\x22" * 32),
    ]


@pytest.mark.parametrize("entry", every_kind(), ids=lambda e: e.kind.name)
def test_every_kind_round_trips_and_encodes_its_kind(entry: Entry) -> None:
    data = encode_entry(entry)
    assert data[0] == 1
    assert data[1] == entry.kind
    assert decode_entry(data) == entry
    assert encode_entry(decode_entry(data)) == data
    assert entry.leaf_hash() == leaf_hash(data)


def test_issuance_encoding_is_the_documented_layout() -> None:
    data = encode_entry(Issuance(T0, STORE, 0x1234, DER))
    millis = int(T0.timestamp() * 1000)
    expected = (
        b"\x01\x01"
        + millis.to_bytes(8, "big")
        + b"\x04cmcc\x05tmall\x06shop-1\x1291110000000000001X"
        + b"\x02\x12\x34"
        + b"\x00\x05"
        + DER
    )
    assert data == expected


def test_revocation_and_digest_layouts() -> None:
    millis = int(T0.timestamp() * 1000).to_bytes(8, "big")
    assert encode_entry(Revocation(T0, STORE, 0x80, 4)) == (
        b"\x01\x03" + millis + b"\x04cmcc\x05tmall\x06shop-1\x1291110000000000001X\x01\x80\x04"
    )
    assert encode_entry(AuditDigest(T0, "x", b"\x00" * 32)) == (
        b"\x01\x07" + millis + b"\x01x" + b"\x00" * 32
    )


def test_time_is_normalised_to_utc_milliseconds() -> None:
    local = dt.datetime(2026, 11, 1, 16, 0, 0, 123_456, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    entry = AuditDigest(local, "x", b"\x00" * 32)
    assert entry.time == dt.datetime(2026, 11, 1, 8, 0, 0, 123_000, tzinfo=dt.UTC)
    assert decode_entry(encode_entry(entry)) == entry


def test_naive_or_pre_epoch_times_are_refused() -> None:
    with pytest.raises(MalformedEntryError, match="timezone"):
        AuditDigest(dt.datetime(2026, 1, 1), "x", b"\x00" * 32)
    with pytest.raises(MalformedEntryError, match="1970"):
        AuditDigest(dt.datetime(1969, 12, 31, tzinfo=dt.UTC), "x", b"\x00" * 32)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Issuance(T0, STORE, 0, DER), "serial"),
        (lambda: Issuance(T0, STORE, 1 << 160, DER), "serial"),
        (lambda: Issuance(T0, STORE, 1, b""), "DER"),
        (lambda: Revocation(T0, STORE, 1, 7), "CRLReason"),
        (lambda: OperatorCaRevoked(T0, "vno1", DER, 11), "CRLReason"),
        (lambda: OperatorCaRotated(T0, "vno1", b"\x00" * 31, DER), "fingerprint"),
        (lambda: AuditDigest(T0, "x", b"\x00" * 33), "32 bytes"),
        (lambda: StoreRef("", "tmall", "s", "c"), "operator"),
        (lambda: StoreRef("cmcc", "tm\nall", "s", "c"), "control"),
        (lambda: StoreRef("cmcc", "tmall", "s" * 256, "c"), "255 bytes"),
    ],
)
def test_fields_the_encoding_cannot_carry_are_refused(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(MalformedEntryError, match=message):
        make()


def test_an_entry_larger_than_a_bundle_allows_is_refused() -> None:
    with pytest.raises(EntryTooLargeError):
        encode_entry(Issuance(T0, STORE, 1, b"\x00" * 0xFFFF))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"\x02" + b[1:], "version"),
        (lambda b: b[:1] + b"\x09" + b[2:], "kind"),
        (lambda b: b + b"\x00", "after the entry"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b"", "truncated"),
    ],
)
def test_malformed_bytes_are_refused(mutate: object, message: str) -> None:
    assert callable(mutate)
    data = encode_entry(Issuance(T0, STORE, 0x1234, DER))
    with pytest.raises(MalformedEntryError, match=message):
        decode_entry(mutate(data))


def test_non_canonical_serials_and_text_are_refused() -> None:
    millis = int(T0.timestamp() * 1000).to_bytes(8, "big")
    store_bytes = b"\x04cmcc\x05tmall\x06shop-1\x1291110000000000001X"
    with pytest.raises(MalformedEntryError, match="leading zero"):
        decode_entry(b"\x01\x03" + millis + store_bytes + b"\x02\x00\x80\x01")
    with pytest.raises(MalformedEntryError, match="serial length"):
        decode_entry(b"\x01\x03" + millis + store_bytes + b"\x00\x01")
    with pytest.raises(MalformedEntryError, match="UTF-8"):
        decode_entry(b"\x01\x07" + millis + b"\x01\xff" + b"\x00" * 32)
    with pytest.raises(MalformedEntryError, match="non-empty"):
        decode_entry(b"\x01\x07" + millis + b"\x00" + b"\x00" * 32)
    with pytest.raises(MalformedEntryError, match="CRLReason"):
        decode_entry(b"\x01\x03" + millis + store_bytes + b"\x01\x80\x07")


@given(
    millis=st.integers(0, (1 << 63) - 1 - 10**12),
    serial=st.integers(1, (1 << 160) - 1),
    shop=st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_characters="\x7f"),
        min_size=1,
        max_size=60,
    ),
    der=st.binary(min_size=1, max_size=300),
)
def test_round_trip_property(millis: int, serial: int, shop: str, der: bytes) -> None:
    when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=millis % 10**14)
    entry = Renewal(when, StoreRef("cmcc", "jd", shop, "X"), serial, serial, der)
    data = encode_entry(entry)
    assert decode_entry(data) == entry
    assert encode_entry(decode_entry(data)) == data


def test_accessors_name_operator_store_and_certificate() -> None:
    entries = every_kind()
    assert [operator_of(e) for e in entries] == ["cmcc"] * 3 + ["vno1"] * 3 + [None]
    assert [store_of(e) is not None for e in entries] == [True] * 3 + [False] * 4
    fingerprint = hashlib.sha256(DER).digest()
    assert [certificate_sha256(e) for e in entries] == [
        fingerprint,
        fingerprint,
        None,
        fingerprint,
        fingerprint,
        fingerprint,
        None,
    ]
    assert {e.kind for e in entries} == set(EntryKind)


def test_store_and_serial_are_read_from_a_real_certificate() -> None:
    entry = issuance(7)
    assert store_of_certificate(entry.certificate, "cmcc") == (store(7), entry.serial)
    other = store_certificate(store(8), 99)
    assert store_of_certificate(other, "cmcc") == (store(8), 99)
    with pytest.raises(MalformedEntryError, match=r"DER X\.509"):
        store_of_certificate(b"not a certificate", "cmcc")
