from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from registry.pki.errors import (
    CsrError,
    CsrSignatureError,
    IssuanceError,
    OperatorMismatchError,
    UnsupportedKeyError,
)
from registry.pki.issuance import check_csr, issue_store_certificate, load_csr
from registry.pki.keys import generate_private_key
from registry.pki.oids import STORE_AUTHORIZATION_EKU
from tests.unit.registry.pki.factory import BASE_URL, REAL_CODES, World, make_csr, spki


def test_store_certificate_profile(world: World) -> None:
    certificate = world.issue()
    ca = world.operators["cmcc"]
    certificate.verify_directly_issued_by(ca.certificate)
    subject = certificate.subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "福州市某某通信器材有限公司"
    )
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == REAL_CODES[0]
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "taobao:shop-1001"
    extensions = certificate.extensions
    eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [STORE_AUTHORIZATION_EKU]
    usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    constraints = extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.key_id
    cdp = extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name == [x509.UniformResourceIdentifier(f"{BASE_URL}/crl/cmcc.crl")]
    aia = extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location) for d in aia] == [
        (
            AuthorityInformationAccessOID.OCSP,
            x509.UniformResourceIdentifier(f"{BASE_URL}/ocsp/cmcc"),
        )
    ]
    assert spki(certificate.public_key()) == spki(world.store_key.public_key())


def test_defaults_one_year_and_a_random_159_bit_serial(world: World) -> None:
    serials = set()
    for _ in range(8):
        certificate = world.issue()
        assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == dt.timedelta(
            days=365
        )
        assert 0 < certificate.serial_number < 1 << 159
        serials.add(certificate.serial_number)
    assert len(serials) == 8
    # Random 159-bit serials are almost never this short; eight in a row would mean a bug.
    assert max(serials).bit_length() > 150


def test_csr_bytes_pem_and_der(world: World) -> None:
    ca = world.operators["cucc"]
    authorization = world.authorization("cucc")
    for data in (
        world.csr.public_bytes(serialization.Encoding.PEM),
        world.csr.public_bytes(serialization.Encoding.DER),
    ):
        certificate = issue_store_certificate(ca, data, authorization, base_url=BASE_URL)
        assert certificate.issuer == ca.subject


def _tampered_csr(world: World) -> bytes:
    der = make_csr(world.store_key, "shop-aaaa").public_bytes(serialization.Encoding.DER)
    tampered = der.replace(b"shop-aaaa", b"shop-bbbb")
    assert tampered != der
    return tampered


def test_csr_whose_signature_does_not_match_is_refused(world: World) -> None:
    tampered = _tampered_csr(world)
    with pytest.raises(CsrSignatureError):
        check_csr(load_csr(tampered))
    with pytest.raises(CsrSignatureError):
        issue_store_certificate(
            world.operators["cmcc"], tampered, world.authorization(), base_url=BASE_URL
        )


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        length = bytes([size])
    else:
        raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


ECDSA_WITH_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


def test_csr_signed_by_another_key_is_refused(world: World) -> None:
    # The request body names the store key, but the signature is made by another key: no proof
    # of possession. The DER is assembled by hand because no honest builder produces it.
    body = make_csr(world.store_key).tbs_certrequest_bytes
    signature = generate_private_key().sign(body, ec.ECDSA(hashes.SHA256()))
    forged = _tlv(0x30, body + ECDSA_WITH_SHA256 + _tlv(0x03, b"\x00" + signature))
    csr = load_csr(forged)
    assert spki(csr.public_key()) == spki(world.store_key.public_key())
    with pytest.raises(CsrSignatureError):
        issue_store_certificate(
            world.operators["cmcc"], csr, world.authorization(), base_url=BASE_URL
        )
    # The same assembly with the right key is accepted, so the refusal is about the signature.
    genuine = _tlv(
        0x30,
        body
        + ECDSA_WITH_SHA256
        + _tlv(0x03, b"\x00" + world.store_key.sign(body, ec.ECDSA(hashes.SHA256()))),
    )
    assert check_csr(load_csr(genuine))


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 2048)],
    ids=["p384", "rsa2048"],
)
def test_non_p256_keys_are_refused(world: World, key: ec.EllipticCurvePrivateKey) -> None:
    csr = make_csr(key)
    with pytest.raises(UnsupportedKeyError):
        issue_store_certificate(
            world.operators["cmcc"], csr, world.authorization(), base_url=BASE_URL
        )


def test_sha1_csr_is_refused(tmp_path: Path) -> None:
    # cryptography refuses to make SHA-1 signatures, so openssl makes the weak request.
    key_path = tmp_path / "store.key"
    key_path.write_bytes(
        generate_private_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out = tmp_path / "sha1.csr"
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-sha1",
            "-key",
            str(key_path),
            "-subj",
            "/CN=x",
            "-out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    with pytest.raises(CsrError, match="sha1"):
        check_csr(load_csr(out.read_bytes()))


def test_garbage_is_not_a_csr() -> None:
    with pytest.raises(CsrError):
        load_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(CsrError):
        load_csr(b"\x30\x03\x02\x01\x01")


def test_one_operator_cannot_issue_in_another_operators_name(world: World) -> None:
    with pytest.raises(OperatorMismatchError):
        issue_store_certificate(
            world.operators["cmcc"], world.csr, world.authorization("cucc"), base_url=BASE_URL
        )


def test_the_root_issues_no_store_certificates(world: World) -> None:
    with pytest.raises(IssuanceError, match="not an operator"):
        issue_store_certificate(world.root, world.csr, world.authorization(), base_url=BASE_URL)


def test_validity_must_fit_inside_the_ca(world: World) -> None:
    with pytest.raises(IssuanceError, match="rotate"):
        world.issue(validity=dt.timedelta(days=20 * 365))
    with pytest.raises(IssuanceError, match="positive"):
        world.issue(validity=dt.timedelta(0))


@pytest.mark.parametrize("base_url", ["ftp://x", "http://", "http://host/?q=1", "host:8080"])
def test_bad_base_url_is_refused(world: World, base_url: str) -> None:
    with pytest.raises(IssuanceError, match="base URL"):
        issue_store_certificate(
            world.operators["cmcc"], world.csr, world.authorization(), base_url=base_url
        )
