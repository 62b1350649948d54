"""Shipment token: layout, size, signatures, strict decoding, and no document number inside."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.delivery.commitment import (
    DEFAULT_PARAMS,
    FLOOR,
    MAX_MEMORY_KIB,
    Kdf,
    KdfParams,
    commit,
    matches,
)
from registry.delivery.errors import (
    InvalidShipmentError,
    MalformedFieldError,
    OversizeFieldError,
    TextFormError,
    TokenDecodeError,
    TokenSignatureError,
    TrailingBytesError,
    TruncatedTokenError,
    UnsupportedVersionError,
    WeakCommitmentError,
)
from registry.delivery.token import (
    MAX_TOKEN_SIZE,
    SIGNING_LABEL,
    TEXT_PREFIX,
    ShipmentFields,
    decode_text,
    decode_token,
    decode_token_text,
    encode_body,
    encode_text,
    new_shipment,
    sign_shipment,
    signed_message,
    verify_token_signature,
)
from registry.pki.keys import generate_private_key
from registry.subscribers import DocumentType, mask_msisdn, normalise_number
from tests.support.tokens import as_version_1, sign_body, with_params
from tests.unit.registry.delivery.support import ICCID, ID_NUMBER, Delivery

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
T = dt.datetime(2026, 6, 1, 8, 0, tzinfo=dt.UTC)
SALT = bytes(range(16))
# Hashed once for the module: each commitment costs a production Argon2id (tens of ms).
COMMITMENT = commit(1, ID_NUMBER, SALT, DEFAULT_PARAMS)


def fields(**overrides: object) -> ShipmentFields:
    values: dict[str, object] = {
        "order_id": "TB-20260601-000123",
        "waybill": "SF1234567890123",
        "courier": "sf-express",
        "iccid": ICCID,
        "msisdn_masked": "138****1234",
        "operator": "cmcc",
        "store_serial": 0x1234_5678_9ABC_DEF0_1122_3344_5566_7788_99AA_BBCC,
        "issued_at": T,
        "expires_at": T + dt.timedelta(days=15),
        "salt": SALT,
        "commitment": COMMITMENT,
    }
    values.update(overrides)
    return ShipmentFields(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return generate_private_key()


def test_round_trip_and_layout(key: ec.EllipticCurvePrivateKey) -> None:
    shipment = fields()
    token = sign_shipment(shipment, key)
    decoded = decode_token(token)
    assert decoded.fields == shipment
    assert decoded.encoded == token
    assert token[0] == 2
    assert token[1] == len(shipment.order_id)
    assert token[2 : 2 + len(shipment.order_id)] == shipment.order_id.encode()
    assert decoded.body == encode_body(shipment) == token[:-64]
    assert decoded.digest == hashlib.sha256(token[:-64]).digest()
    assert token[-64 - 48 : -64] == shipment.salt + shipment.commitment
    # KDF 1 (Argon2id), memory KiB as uint32, iterations, parallelism, just before the salt.
    kdf = DEFAULT_PARAMS
    expected = bytes((1,)) + kdf.memory_kib.to_bytes(4, "big")
    assert token[-64 - 48 - 7 : -64 - 48] == expected + bytes((kdf.iterations, kdf.parallelism))
    verify_token_signature(decoded, key.public_key())


def test_signature_is_raw_low_s_ecdsa_over_the_labelled_body(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    token = sign_shipment(fields(), key)
    r, s = int.from_bytes(token[-64:-32], "big"), int.from_bytes(token[-32:], "big")
    assert 0 < s <= P256_ORDER // 2
    key.public_key().verify(
        encode_dss_signature(r, s), SIGNING_LABEL + token[:-64], ec.ECDSA(hashes.SHA256())
    )
    assert signed_message(token[:-64]).startswith(b"realname/delivery/shipment-token/v2\x00")


def test_signing_is_deterministic(key: ec.EllipticCurvePrivateKey) -> None:
    assert sign_shipment(fields(), key) == sign_shipment(fields(), key)


def test_high_s_spelling_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    token = sign_shipment(fields(), key)
    s = int.from_bytes(token[-32:], "big")
    respelled = token[:-32] + (P256_ORDER - s).to_bytes(32, "big")
    # The other spelling is a valid ECDSA signature, which is exactly why it must not decode.
    r = int.from_bytes(token[-64:-32], "big")
    key.public_key().verify(
        encode_dss_signature(r, P256_ORDER - s),
        signed_message(token[:-64]),
        ec.ECDSA(hashes.SHA256()),
    )
    with pytest.raises(MalformedFieldError, match="low-S"):
        decode_token(respelled)


def test_typical_and_maximal_sizes(key: ec.EllipticCurvePrivateKey, delivery: Delivery) -> None:
    typical = delivery.token()
    largest = sign_shipment(
        fields(
            order_id="订" * 21,  # 63 bytes of UTF-8
            waybill="W" * 40,
            courier="c" * 32,
            iccid="8986001234567890123" + "8",
            operator="o" * 16,
            store_serial=(1 << 160) - 1,
        ),
        key,
    )
    print(
        f"\ntoken: typical {len(typical)} bytes ({len(encode_text(typical))} chars base45), "
        f"largest {len(largest)} (limit {MAX_TOKEN_SIZE}, budget 1200)"
    )
    assert len(largest) <= MAX_TOKEN_SIZE <= 1200
    assert MAX_TOKEN_SIZE - len(largest) == 1  # one order-id byte short of the maximum
    assert len(typical) < 260


def test_token_never_contains_the_document_number(delivery: Delivery) -> None:
    for spelling in (ID_NUMBER, "110105-19491231-002x"):
        token = delivery.token(number=spelling)
        text = encode_text(token)
        normal = normalise_number(spelling)
        for needle in (normal, normal[:-1], normal[6:14], spelling):
            assert needle.encode() not in token
            assert needle not in text


def test_passport_numbers_are_hidden_too(delivery: Delivery) -> None:
    token = delivery.token(number="g93751046", doc_type=DocumentType.PASSPORT)
    assert b"G93751046" not in token
    assert b"93751046" not in token


def test_text_form(key: ec.EllipticCurvePrivateKey) -> None:
    token = sign_shipment(fields(), key)
    text = encode_text(token)
    assert text.startswith(TEXT_PREFIX)
    assert set(text) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
    assert decode_text(text) == token
    assert decode_token_text(text).encoded == token
    assert decode_token(token).text == text
    with pytest.raises(TextFormError):
        decode_text("HC1:" + text[len(TEXT_PREFIX) :])
    with pytest.raises(TextFormError):
        decode_text(text.lower())


def test_verify_with_another_key_fails(key: ec.EllipticCurvePrivateKey) -> None:
    decoded = decode_token(sign_shipment(fields(), key))
    with pytest.raises(TokenSignatureError):
        verify_token_signature(decoded, generate_private_key().public_key())


def test_verify_refuses_a_non_p256_key(key: ec.EllipticCurvePrivateKey) -> None:
    decoded = decode_token(sign_shipment(fields(), key))
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(TokenSignatureError):
        verify_token_signature(decoded, other)


def test_sign_checks_the_certificate(delivery: Delivery) -> None:
    certificate = delivery.good
    good = delivery.fields()
    sign_shipment(good, delivery.store_key, certificate=certificate)
    with pytest.raises(InvalidShipmentError, match="not the store certificate's key"):
        sign_shipment(good, generate_private_key(), certificate=certificate)
    with pytest.raises(InvalidShipmentError, match="serial"):
        sign_shipment(
            delivery.fields(delivery.revoked), delivery.store_key, certificate=certificate
        )
    too_long = delivery.fields(valid_for=dt.timedelta(days=400))
    with pytest.raises(InvalidShipmentError, match="expire after the store authorization"):
        sign_shipment(too_long, delivery.store_key, certificate=certificate)


@pytest.mark.parametrize(
    "overrides",
    [
        {"order_id": ""},
        {"order_id": " padded"},
        {"order_id": "a\nb"},
        {"order_id": "x" * 65},
        {"waybill": "has space"},
        {"waybill": "W" * 41},
        {"courier": "SF"},
        {"courier": ""},
        {"iccid": "89860012345678901239"},  # Luhn digit wrong
        {"iccid": "12860012345678901238"},
        {"msisdn_masked": "13812341234"},
        {"operator": "CMCC"},
        {"operator": "root"},
        {"store_serial": 0},
        {"store_serial": 1 << 160},
        {"expires_at": T},
        {"salt": b"\x00" * 15},
        {"commitment": b"\x00" * 31},
        {"kdf": KdfParams(Kdf.ARGON2ID, FLOOR.memory_kib, FLOOR.iterations - 1, 1)},
        {"issued_at": dt.datetime(2026, 6, 1)},
    ],
)
def test_fields_that_cannot_be_encoded_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(InvalidShipmentError):
        fields(**overrides)


def test_times_are_whole_utc_seconds() -> None:
    shipment = fields(
        issued_at=dt.datetime(
            2026, 6, 1, 16, 0, 0, 999_999, tzinfo=dt.timezone(dt.timedelta(hours=8))
        ),
    )
    assert shipment.issued_at == T


def test_mask_msisdn() -> None:
    assert mask_msisdn("13812341234") == "138****1234"
    assert mask_msisdn("138****1234") == "138****1234"
    assert mask_msisdn("1381234123") == "**********"


@pytest.mark.parametrize("msisdn", ["1381234123", "12812341234", "138****123", "1381234123x"])
def test_a_shipment_refuses_a_number_that_is_no_mainland_msisdn(msisdn: str) -> None:
    with pytest.raises(InvalidShipmentError, match="MSISDN"):
        new_shipment(
            order_id="TB-1",
            waybill="SF1",
            courier="sf-express",
            iccid="89860012345678901234",
            msisdn=msisdn,
            operator="cmcc",
            store_serial=1,
            document_type=DocumentType.RESIDENT_ID_CARD,
            document_number="11010519491231002X",
            issued_at=T,
        )


def shipment(**overrides: object) -> ShipmentFields:
    values: dict[str, object] = {
        "order_id": "TB-1",
        "waybill": "SF1",
        "courier": "sf-express",
        "iccid": ICCID,
        "msisdn": "13812341234",
        "operator": "cmcc",
        "store_serial": 1,
        "document_type": DocumentType.RESIDENT_ID_CARD,
        "document_number": ID_NUMBER,
        "issued_at": T,
    }
    values.update(overrides)
    return new_shipment(**values)  # type: ignore[arg-type]


def test_the_signer_commits_with_argon2id_at_the_production_parameters(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    first, second = shipment(), shipment()
    assert first.salt != second.salt and first.commitment != second.commitment
    decoded = decode_token(sign_shipment(first, key)).fields
    assert decoded == first
    assert decoded.kdf == DEFAULT_PARAMS
    # The commitment is Argon2id at the token's parameters, recomputable from the token alone.
    assert decoded.commitment == commit(1, ID_NUMBER, decoded.salt, decoded.kdf)
    assert matches(decoded.commitment, decoded.salt, decoded.kdf, 1, "110105-19491231-002x")
    assert not matches(decoded.commitment, decoded.salt, decoded.kdf, 1, "110105194912310011")


def test_raised_parameters_travel_in_the_token(key: ec.EllipticCurvePrivateKey) -> None:
    raised = KdfParams(Kdf.ARGON2ID, FLOOR.memory_kib + 1024, FLOOR.iterations + 1, 1)
    decoded = decode_token(sign_shipment(shipment(kdf=raised), key)).fields
    assert decoded.kdf == raised
    assert matches(decoded.commitment, decoded.salt, raised, 1, ID_NUMBER)


def test_the_signer_refuses_parameters_under_the_floor() -> None:
    weak = KdfParams(Kdf.ARGON2ID, memory_kib=64, iterations=1, parallelism=1)
    with pytest.raises(InvalidShipmentError, match="under the floor"):
        shipment(kdf=weak)


@pytest.mark.parametrize(
    "params",
    [
        KdfParams(Kdf.ARGON2ID, memory_kib=64, iterations=1, parallelism=1),
        KdfParams(Kdf.ARGON2ID, FLOOR.memory_kib - 1, FLOOR.iterations, 1),
        KdfParams(Kdf.ARGON2ID, FLOOR.memory_kib, FLOOR.iterations - 1, 1),
    ],
    ids=["cheap", "memory", "passes"],
)
def test_a_store_signed_token_under_the_floor_is_refused(
    key: ec.EllipticCurvePrivateKey, params: KdfParams
) -> None:
    genuine = sign_shipment(fields(), key)
    weak = with_params(genuine, key, params, doc_type=1, number=ID_NUMBER)
    with pytest.raises(WeakCommitmentError, match="under the floor"):
        decode_token(weak)


def test_a_token_past_the_ceilings_or_of_an_unknown_kdf_is_refused(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    body = sign_shipment(fields(), key)[:-64]
    at = len(body) - 48 - 7  # the KDF id, then memory (4), iterations, parallelism
    for patch, problem in (
        (b"\x02", "unknown recipient commitment KDF 2"),
        (b"\x01" + (MAX_MEMORY_KIB + 1).to_bytes(4, "big"), "past what a verifier computes"),
        (b"\x01" + bytes(4), "under the floor"),
        (b"\x01" + FLOOR.memory_kib.to_bytes(4, "big") + b"\xff", "past what"),
        (b"\x01" + FLOOR.memory_kib.to_bytes(4, "big") + b"\x04\x00", "parallelism"),
    ):
        patched = body[:at] + patch + body[at + len(patch) :]
        with pytest.raises(WeakCommitmentError, match=problem):
            decode_token(sign_body(patched, key))


def test_a_version_1_token_is_refused_with_its_reason(key: ec.EllipticCurvePrivateKey) -> None:
    old = as_version_1(sign_shipment(fields(), key), key, doc_type=1, number=ID_NUMBER)
    assert old[0] == 1 and len(old) == len(sign_shipment(fields(), key)) - 7
    with pytest.raises(UnsupportedVersionError, match="version 1 is no longer accepted"):
        decode_token(old)
    with pytest.raises(UnsupportedVersionError, match="guessing"):
        decode_token_text(encode_text(old))


# ---- strict decoding ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token(key: ec.EllipticCurvePrivateKey) -> bytes:
    return sign_shipment(fields(), key)


def test_unknown_version(token: bytes) -> None:
    for version in (0, 3, 255):
        with pytest.raises(UnsupportedVersionError, match=f"unknown token version {version}"):
            decode_token(bytes([version]) + token[1:])


def test_trailing_bytes(token: bytes) -> None:
    with pytest.raises(TrailingBytesError):
        decode_token(token + b"\x00")


def test_truncated_anywhere(token: bytes) -> None:
    for length in range(len(token)):
        with pytest.raises(TokenDecodeError):
            decode_token(token[:length])
    with pytest.raises(TruncatedTokenError):
        decode_token(token[:-1])
    with pytest.raises(TruncatedTokenError):
        decode_token(b"")


def test_oversize_field(token: bytes) -> None:
    with pytest.raises(OversizeFieldError, match="order id"):
        decode_token(b"\x02\xff" + b"x" * 255 + token[2 + token[1] :])
    # The waybill's length byte follows the order id.
    at = 2 + token[1]
    with pytest.raises(OversizeFieldError, match="waybill"):
        decode_token(token[:at] + b"\x29" + b"W" * 41 + token[at + 1 + token[at] :])


def test_malformed_utf8(token: bytes) -> None:
    length = token[1]
    broken = token[:2] + b"\xc3\x28" + token[4 : 2 + length] + token[2 + length :]
    with pytest.raises(MalformedFieldError, match="UTF-8"):
        decode_token(broken)


def test_field_syntax_is_checked_on_decoding(token: bytes) -> None:
    at = 2 + token[1] + 1 + token[2 + token[1]]  # the courier's length byte
    courier = token[at + 1 : at + 1 + token[at]]
    with pytest.raises(MalformedFieldError, match="courier"):
        decode_token(token[: at + 1] + courier.upper() + token[at + 1 + len(courier) :])


def test_serial_with_leading_zero_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    token = sign_shipment(fields(store_serial=0x01), key)
    body = token[:-64]
    at = body.index(b"\x04cmcc") + 5
    assert body[at : at + 2] == b"\x01\x01"
    with pytest.raises(MalformedFieldError, match="leading zero"):
        decode_token(body[:at] + b"\x02\x00\x01" + body[at + 2 :] + token[-64:])


def test_expiry_before_issuance_is_refused(token: bytes) -> None:
    times_at = len(token) - 64 - 48 - 7 - 16
    issued = token[times_at : times_at + 8]
    swapped = token[:times_at] + issued + issued + token[times_at + 16 :]
    with pytest.raises(MalformedFieldError, match="expiry"):
        decode_token(swapped)


def test_zero_signature_is_refused(token: bytes) -> None:
    with pytest.raises(MalformedFieldError):
        decode_token(token[:-64] + bytes(64))


@settings(max_examples=400)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_decode_errors(data: bytes) -> None:
    try:
        decode_token(data)
    except TokenDecodeError:
        return
    raise AssertionError("random bytes decoded as a token")


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_tokens_only_raise_decode_errors(token: bytes, data: st.DataObject) -> None:
    mutated = bytearray(token)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(mutated)))
        mutated = mutated[:cut] + bytearray(data.draw(st.binary(max_size=8)))
    try:
        decoded = decode_token(bytes(mutated))
    except TokenDecodeError:
        return
    assert decoded.encoded == bytes(mutated)
