from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes
from hypothesis import given
from hypothesis import strategies as st

from registry.pki._asn1 import AuthorizationScopeAsn1, StoreAuthorizationAsn1
from registry.pki.authorization import (
    StoreAuthorization,
    authorization_extension,
    authorization_of,
    decode_authorization,
    encode_authorization,
)
from registry.pki.errors import (
    InvalidAuthorizationError,
    InvalidCreditCodeError,
    InvalidOperatorError,
    MalformedExtensionError,
)
from registry.pki.oids import STORE_AUTHORIZATION_EXTENSION
from registry.pki.regions import PROVINCES
from registry.pki.scope import CardType, Scope
from tests.unit.registry.pki.factory import REAL_CODES, World


def _authorization(**overrides: object) -> StoreAuthorization:
    fields: dict[str, object] = {
        "operator": "cmcc",
        "marketplace": "jd.com",
        "shop_id": "10086",
        "legal_name": "北京某某科技有限公司",
        "credit_code": REAL_CODES[1],
        "scope": Scope.of(["personal", "industry"], ["11", "12"]),
    }
    fields.update(overrides)
    return StoreAuthorization(**fields)  # type: ignore[arg-type]


def _raw(
    *,
    version: int = 1,
    operator: str = "cmcc",
    credit_code: str = REAL_CODES[1],
    legal_name: str = "北京某某科技有限公司",
    card_types: list[int] | None = None,
    nationwide: bool = False,
    provinces: list[str] | None = None,
) -> bytes:
    """DER an attacker or a buggy encoder could produce, bypassing our encoder's rules."""
    return asn1.encode_der(
        StoreAuthorizationAsn1(
            version=version,
            operator=asn1.PrintableString(operator),
            marketplace="jd.com",
            shop_id="10086",
            legal_name=legal_name,
            credit_code=asn1.PrintableString(credit_code),
            scope=AuthorizationScopeAsn1(
                card_types=[1] if card_types is None else card_types,
                nationwide=asn1.Null() if nationwide else None,
                provinces=(
                    None if provinces is None else [asn1.PrintableString(p) for p in provinces]
                ),
            ),
        )
    )


def test_round_trip() -> None:
    value = _authorization()
    assert decode_authorization(encode_authorization(value)) == value


def test_nationwide_round_trip() -> None:
    value = _authorization(scope=Scope.of(["industry"], "all"))
    decoded = decode_authorization(encode_authorization(value))
    assert decoded.scope.nationwide
    assert decoded.scope.permits(CardType.INDUSTRY, "65")


def test_encoding_is_canonical_whatever_the_input_order() -> None:
    a = _authorization(scope=Scope.of(["industry", "personal"], ["82", "11", "35"]))
    b = _authorization(scope=Scope.of(["personal", "industry"], ["35", "82", "11"]))
    assert encode_authorization(a) == encode_authorization(b)


def test_known_encoding() -> None:
    # Pin the wire format: a change here breaks every certificate already issued.
    value = StoreAuthorization(
        operator="cmcc",
        marketplace="m",
        shop_id="1",
        legal_name="A",
        credit_code=REAL_CODES[0],
        scope=Scope.of(["personal"], ["11"]),
    )
    expected = bytes.fromhex(
        "3033"
        "020101"
        "1304636d6363"
        "0c016d"
        "0c0131"
        "0c0141"
        "1312" + REAL_CODES[0].encode().hex() + "300b"
        "3003020101"
        "a104"
        "13023131"
    )
    assert encode_authorization(value) == expected


@given(
    marketplace=st.from_regex(r"[a-z0-9][a-z0-9.-]{0,23}", fullmatch=True),
    shop_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,38}", fullmatch=True),
    legal_name=st.text(st.characters(categories=["L", "N", "P"]), min_size=1, max_size=64),
    card_types=st.sets(st.sampled_from(list(CardType)), min_size=1),
    provinces=st.one_of(st.just("all"), st.sets(st.sampled_from(sorted(PROVINCES)), min_size=1)),
    credit_code=st.sampled_from(REAL_CODES),
)
def test_round_trip_property(
    marketplace: str,
    shop_id: str,
    legal_name: str,
    card_types: set[CardType],
    provinces: str | set[str],
    credit_code: str,
) -> None:
    value = StoreAuthorization(
        operator="vno1",
        marketplace=marketplace,
        shop_id=shop_id,
        legal_name=legal_name,
        credit_code=credit_code,
        scope=Scope.of(card_types, provinces),
    )
    assert decode_authorization(encode_authorization(value)) == value
    assert len(value.common_name) <= 64


@pytest.mark.parametrize(
    ("der", "message"),
    [
        (b"", "not valid DER"),
        (b"\x30\x00", "not valid DER"),
        (_raw()[:-1], "not valid DER"),
        (_raw() + b"\x00", "not valid DER"),
        (b"\x31" + _raw()[1:], "not valid DER"),
        (_raw(version=2, provinces=["11"]), "version 2"),
        (_raw(provinces=["11"], nationwide=True), "exactly one"),
        (_raw(), "exactly one"),
        (_raw(provinces=[]), "non-empty ascending"),
        (_raw(provinces=["35", "11"]), "non-empty ascending"),
        (_raw(provinces=["11", "11"]), "non-empty ascending"),
        (_raw(card_types=[], provinces=["11"]), "card types"),
        (_raw(card_types=[2, 1], provinces=["11"]), "card types"),
        (_raw(card_types=[1, 3], provinces=["11"]), "unknown card type"),
        (_raw(provinces=["99"]), "province"),
        (_raw(credit_code="91350100M000100Y44", provinces=["11"]), "check character"),
        (_raw(credit_code="91110000802100433b", provinces=["11"]), "not valid DER|canonical"),
        (_raw(operator="CMCC", provinces=["11"]), "operator id"),
        (_raw(legal_name=" padded", provinces=["11"]), "legal name"),
        (_raw(legal_name="bell\x07", provinces=["11"]), "legal name"),
    ],
)
def test_malformed_values_are_refused(der: bytes, message: str) -> None:
    with pytest.raises(MalformedExtensionError, match=message):
        decode_authorization(der)


def test_a_well_formed_raw_value_decodes() -> None:
    # The helper above produces acceptable DER when nothing is wrong with it.
    assert decode_authorization(_raw(provinces=["11"])).scope.provinces == {"11"}


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"marketplace": ""}, InvalidAuthorizationError),
        ({"marketplace": "Taobao"}, InvalidAuthorizationError),
        ({"marketplace": "x" * 25}, InvalidAuthorizationError),
        ({"shop_id": ""}, InvalidAuthorizationError),
        ({"shop_id": "a/b"}, InvalidAuthorizationError),
        ({"shop_id": "1" * 40}, InvalidAuthorizationError),
        ({"legal_name": ""}, InvalidAuthorizationError),
        ({"legal_name": "名" * 65}, InvalidAuthorizationError),
        ({"legal_name": "zero\u200bwidth"}, InvalidAuthorizationError),
        ({"credit_code": "91350100M000100Y44"}, InvalidCreditCodeError),
        ({"operator": "root"}, InvalidOperatorError),
        ({"operator": "China Mobile"}, InvalidOperatorError),
    ],
)
def test_invalid_fields_are_refused(overrides: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        _authorization(**overrides)


@pytest.mark.parametrize(
    ("card_types", "provinces", "message"),
    [
        ([], ["11"], "card type"),
        (["personal"], [], "empty is refused"),
        (["personal"], ["99"], "province"),
        (["personal"], "everywhere", "provinces must be"),
        (["prepaid"], ["11"], "unknown card type"),
    ],
)
def test_scope_rules(card_types: list[str], provinces: list[str] | str, message: str) -> None:
    with pytest.raises(InvalidAuthorizationError, match=message):
        Scope.of(card_types, provinces)


def test_scope_permits() -> None:
    scope = Scope.of(["personal"], ["11", "31"])
    assert scope.permits(CardType.PERSONAL, "31")
    assert scope.permits()
    assert not scope.permits(CardType.INDUSTRY, "31")
    assert not scope.permits(CardType.PERSONAL, "44")
    with pytest.raises(InvalidAuthorizationError):
        scope.permits(CardType.PERSONAL, "00")


def test_extension_in_a_certificate(world: World) -> None:
    certificate = world.issue(scope=Scope.of(["industry"], ["44"]))
    extension = certificate.extensions.get_extension_for_oid(STORE_AUTHORIZATION_EXTENSION)
    assert not extension.critical
    assert authorization_of(certificate).scope == Scope.of(["industry"], ["44"])
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    assert authorization_extension(authorization_of(certificate)).value == extension.value.value


def test_certificate_without_the_extension(world: World) -> None:
    with pytest.raises(MalformedExtensionError, match="no StoreAuthorization"):
        authorization_of(world.root.certificate)


def test_critical_extension_is_refused(world: World) -> None:
    value = _authorization(operator="cmcc")
    ca = world.operators["cmcc"]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(ca.subject)
        .issuer_name(ca.subject)
        .public_key(world.store_key.public_key())
        .serial_number(1)
        .not_valid_before(world.epoch)
        .not_valid_after(world.now)
        .add_extension(authorization_extension(value), critical=True)
        .sign(ca.private_key, hashes.SHA256())
    )
    with pytest.raises(MalformedExtensionError, match="must not be critical"):
        authorization_of(certificate)
