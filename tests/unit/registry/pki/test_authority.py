from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from registry.pki.authority import (
    OperatorAuthority,
    create_operator_ca,
    create_root_ca,
    decode_operator_authority,
    encode_operator_authority,
    operator_authority_of,
    rotate_operator_ca,
)
from registry.pki.errors import (
    InvalidOperatorError,
    IssuanceError,
    MalformedExtensionError,
    UnsupportedKeyError,
)
from registry.pki.keys import generate_private_key
from registry.pki.oids import OPERATOR_AUTHORITY_EXTENSION
from registry.pki.operators import OperatorKind, operator_kind, validate_operator_id
from tests.unit.registry.pki.factory import World


def _ext(
    certificate: x509.Certificate, kind: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return certificate.extensions.get_extension_for_class(kind)


def test_root_profile(world: World) -> None:
    root = world.root.certificate
    assert root.subject == root.issuer
    root.verify_directly_issued_by(root)
    constraints = _ext(root, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=1)
    usage = _ext(root, x509.KeyUsage).value
    assert isinstance(usage, x509.KeyUsage)
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    lifetime = root.not_valid_after_utc - root.not_valid_before_utc
    assert lifetime >= dt.timedelta(days=20 * 365)
    assert world.root.operator is None


def test_operator_ca_profile(world: World) -> None:
    ca = world.operators["vno1"]
    certificate = ca.certificate
    certificate.verify_directly_issued_by(world.root.certificate)
    assert _ext(certificate, x509.BasicConstraints).value == x509.BasicConstraints(
        ca=True, path_length=0
    )
    aki = _ext(certificate, x509.AuthorityKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier)
    assert aki.key_identifier == world.root.key_id
    assert operator_authority_of(certificate) == OperatorAuthority("vno1", OperatorKind.VIRTUAL)
    assert not certificate.extensions.get_extension_for_oid(OPERATOR_AUTHORITY_EXTENSION).critical
    assert ca.operator == "vno1"
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "vno1 store authorization CA"
    )
    cdp = _ext(certificate, x509.CRLDistributionPoints).value
    assert isinstance(cdp, x509.CRLDistributionPoints)
    assert cdp[0].full_name == [
        x509.UniformResourceIdentifier("http://127.0.0.1:8080/crl/root.crl")
    ]


def test_rotation_keeps_the_name_and_changes_the_key(world: World) -> None:
    old = world.operators["cmcc"]
    new = rotate_operator_ca(world.root, old, now=world.now - dt.timedelta(days=1))
    assert new.subject == old.subject
    assert new.key_id != old.key_id
    assert new.certificate.serial_number != old.certificate.serial_number
    assert operator_authority_of(new.certificate) == operator_authority_of(old.certificate)
    with pytest.raises(IssuanceError, match="new key"):
        rotate_operator_ca(world.root, old, key=old.private_key)


def test_operator_authority_round_trip_and_refusals() -> None:
    value = OperatorAuthority("cucc", OperatorKind.BASIC)
    der = encode_operator_authority(value)
    assert decode_operator_authority(der) == value
    for bad in (b"", der[:-1], der + b"\x00", der.replace(b"\x02\x01\x01", b"\x02\x01\x07", 1)):
        with pytest.raises(MalformedExtensionError):
            decode_operator_authority(bad)


def test_unknown_operator_needs_a_kind(world: World) -> None:
    with pytest.raises(IssuanceError, match="kind"):
        create_operator_ca(world.root, "vno9")
    ca = create_operator_ca(
        world.root, "vno9", kind=OperatorKind.VIRTUAL, now=world.now - dt.timedelta(days=1)
    )
    assert ca.operator == "vno9"


def test_operator_ca_cannot_outlive_the_root(world: World) -> None:
    with pytest.raises(IssuanceError, match="outside the root"):
        create_operator_ca(world.root, "ctcc", now=world.now, validity=dt.timedelta(days=30 * 365))


def test_only_the_root_certifies_operators(world: World) -> None:
    with pytest.raises(IssuanceError, match="regulator root"):
        create_operator_ca(world.operators["cmcc"], "ctcc", now=world.now)


def test_root_refuses_other_curves() -> None:
    with pytest.raises(UnsupportedKeyError):
        create_root_ca(key=ec.generate_private_key(ec.SECP384R1()))
    assert create_root_ca(key=generate_private_key()).operator is None


def test_operator_ids_and_kinds() -> None:
    assert operator_kind("cmcc") is OperatorKind.BASIC
    assert operator_kind("vno2") is OperatorKind.VIRTUAL
    with pytest.raises(InvalidOperatorError, match="unknown operator"):
        operator_kind("vno9")
    for bad in ("", "x", "1abc", "CMCC", "a" * 17, "root"):
        with pytest.raises(InvalidOperatorError):
            validate_operator_id(bad)
