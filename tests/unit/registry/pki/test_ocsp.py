from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from registry.pki.authority import rotate_operator_ca
from registry.pki.errors import IssuanceError, OcspRequestError
from registry.pki.ocsp import (
    CertificateStatus,
    OcspResponder,
    StatusLookup,
    answer_ocsp,
    parse_ocsp_request,
)
from tests.unit.registry.pki.factory import World

OPENSSL_CERTID_HASH = hashes.SHA1()  # what `openssl ocsp` puts in a CertID by default


def _request(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    *,
    nonce: bytes | None = None,
    algorithm: hashes.HashAlgorithm = OPENSSL_CERTID_HASH,
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, algorithm)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _always(status: CertificateStatus) -> StatusLookup:
    return lambda _serial: status


def _answer(
    world: World, request: bytes, status: CertificateStatus, operator: str = "cmcc"
) -> ocsp.OCSPResponse:
    der = answer_ocsp(
        request, lambda _serial: status, authorities=[world.operators[operator]], now=world.now
    )
    return ocsp.load_der_ocsp_response(der)


def test_good_response_is_signed_by_the_issuing_ca(world: World) -> None:
    certificate = world.issue()
    ca = world.operators["cmcc"]
    response = _answer(world, _request(certificate, ca.certificate), CertificateStatus.good())
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == certificate.serial_number
    assert response.responder_key_hash == ca.key_id
    assert response.this_update_utc == world.now
    assert response.next_update_utc == world.now + dt.timedelta(hours=1)
    public_key = ca.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))


def test_revoked_response_carries_time_and_reason(world: World) -> None:
    certificate = world.issue()
    revoked_at = world.now - dt.timedelta(hours=3)
    response = _answer(
        world,
        _request(certificate, world.operators["cmcc"].certificate),
        CertificateStatus.revoked(revoked_at, x509.ReasonFlags.affiliation_changed),
    )
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_time_utc == revoked_at
    assert response.revocation_reason is x509.ReasonFlags.affiliation_changed


def test_unknown_serial(world: World) -> None:
    certificate = world.issue()
    response = _answer(
        world,
        _request(certificate, world.operators["cmcc"].certificate),
        CertificateStatus.unknown(),
    )
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def test_foreign_issuer_is_unknown_without_asking_storage(world: World) -> None:
    certificate = world.issue("cucc")
    asked: list[int] = []

    def lookup(serial: int) -> CertificateStatus:
        asked.append(serial)
        return CertificateStatus.good()

    der = answer_ocsp(
        _request(certificate, world.operators["cucc"].certificate),
        lookup,
        authorities=[world.operators["cmcc"]],
        now=world.now,
    )
    response = ocsp.load_der_ocsp_response(der)
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert asked == []


def test_nonce_is_echoed(world: World) -> None:
    certificate = world.issue()
    nonce = bytes(range(16))
    request = _request(certificate, world.operators["cmcc"].certificate, nonce=nonce)
    assert parse_ocsp_request(request).nonce == nonce
    response = _answer(world, request, CertificateStatus.good())
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    without = _answer(
        world, _request(certificate, world.operators["cmcc"].certificate), CertificateStatus.good()
    )
    assert len(without.extensions) == 0


@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256(), hashes.SHA384()])
def test_certid_hash_algorithms(world: World, algorithm: hashes.HashAlgorithm) -> None:
    certificate = world.issue()
    request = _request(certificate, world.operators["cmcc"].certificate, algorithm=algorithm)
    query = parse_ocsp_request(request)
    assert query.serial_number == certificate.serial_number
    response = _answer(world, request, CertificateStatus.good())
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.issuer_key_hash == query.issuer_key_hash


def test_malformed_request(world: World) -> None:
    for garbage in (b"", b"\x30\x00", b"not der at all"):
        with pytest.raises(OcspRequestError):
            parse_ocsp_request(garbage)
        der = answer_ocsp(
            garbage, lambda _s: CertificateStatus.good(), authorities=[world.operators["cmcc"]]
        )
        assert (
            ocsp.load_der_ocsp_response(der).response_status
            is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        )


def test_rotated_generations_sign_their_own_certificates(world: World) -> None:
    old = world.operators["ctcc"]
    old_certificate = world.issue("ctcc")
    new = rotate_operator_ca(world.root, old, now=world.now - dt.timedelta(days=1))
    new_certificate = world.issue("ctcc", ca=new)
    responder = OcspResponder([old, new])
    for certificate, signer in ((old_certificate, old), (new_certificate, new)):
        der = responder.answer(
            _request(certificate, signer.certificate),
            _always(CertificateStatus.good(issuer_key_id=signer.key_id)),
            now=world.now,
        )
        response = ocsp.load_der_ocsp_response(der)
        assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert response.responder_key_hash == signer.key_id
    # A CertID naming the new key for a certificate the old key issued: not ours to vouch for.
    der = responder.answer(
        _request(old_certificate, new.certificate),
        lambda _s: CertificateStatus.good(issuer_key_id=old.key_id),
        now=world.now,
    )
    assert ocsp.load_der_ocsp_response(der).certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def test_status_invariants() -> None:
    with pytest.raises(IssuanceError):
        CertificateStatus(ocsp.OCSPCertStatus.REVOKED)
    with pytest.raises(IssuanceError):
        CertificateStatus(ocsp.OCSPCertStatus.GOOD, reason=x509.ReasonFlags.superseded)
    with pytest.raises(IssuanceError):
        OcspResponder([])
