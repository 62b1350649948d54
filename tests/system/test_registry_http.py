"""CRLs and OCSP over real HTTP, checked by openssl, for certificates issued through the service."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from registry.authz import authorities
from services.domain.pseudonym import Pseudonymizer
from services.proto.realname.v1 import registry_pb2 as rpb
from services.storage.database import Database
from tests.support.registry import RegistryHarness, authorize, registry_server

PEM = serialization.Encoding.PEM


@pytest.fixture
def server(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> Iterator[RegistryHarness]:
    with registry_server(db, pki_dir, pseudonymizer, tmp_path / "data", http=True) as harness:
        yield harness


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )


def fetch(server: RegistryHarness, path: str, target: Path) -> bytes:
    response = httpx.get(f"{server.http_url}{path}", timeout=10)
    assert response.status_code == 200, response.text
    target.write_bytes(response.content)
    return response.content


def write_store(tmp_path: Path, authorization: rpb.Authorization, name: str = "store.pem") -> None:
    certificate = x509.load_der_x509_certificate(authorization.certificate)
    (tmp_path / name).write_bytes(certificate.public_bytes(PEM))


def test_openssl_verifies_an_issued_authorization_until_the_operator_ca_is_revoked(
    server: RegistryHarness, db: Database, tmp_path: Path
) -> None:
    write_store(tmp_path, authorize(server, shop_id="shop-o"))
    fetch(server, "/ca/root.pem", tmp_path / "root.pem")
    fetch(server, "/ca/cmcc.pem", tmp_path / "operator.pem")
    chain = ("-CAfile", "root.pem", "-untrusted", "operator.pem", "store.pem")
    plain = openssl("verify", *chain, cwd=tmp_path)
    assert plain.returncode == 0 and "store.pem: OK" in plain.stdout, plain.stdout + plain.stderr

    def with_crls() -> subprocess.CompletedProcess[str]:
        crl = fetch(server, "/crl/root.crl", tmp_path / "root.crl.der")
        (tmp_path / "root.crl").write_bytes(x509.load_der_x509_crl(crl).public_bytes(PEM))
        crl = fetch(server, "/crl/cmcc.crl", tmp_path / "cmcc.crl.der")
        (tmp_path / "cmcc.crl").write_bytes(x509.load_der_x509_crl(crl).public_bytes(PEM))
        crls = ("-crl_check_all", "-CRLfile", "root.crl", "-CRLfile", "cmcc.crl")
        return openssl("verify", *crls, *chain, cwd=tmp_path)

    before = with_crls()
    assert before.returncode == 0, before.stdout + before.stderr
    root = server.root()
    db.write(lambda conn: authorities.revoke_operator_ca(conn, root, "cmcc"))
    after = with_crls()
    assert after.returncode != 0
    assert "certificate revoked" in after.stdout + after.stderr


def test_openssl_ocsp_says_good_then_revoked_and_unknown_for_a_stranger(
    server: RegistryHarness, tmp_path: Path
) -> None:
    auth = authorize(server, shop_id="shop-q")
    write_store(tmp_path, auth)
    fetch(server, "/ca/root.pem", tmp_path / "root.pem")
    fetch(server, "/ca/cmcc.pem", tmp_path / "cmcc.pem")

    def ask(cert: str = "store.pem") -> str:
        result = openssl(
            "ocsp", "-issuer", "cmcc.pem", "-cert", cert, "-url", f"{server.http_url}/ocsp/cmcc",
            "-CAfile", "root.pem", "-verify_other", "cmcc.pem", cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Response verify OK" in result.stderr + result.stdout
        return result.stdout

    assert f"{cert_line('store.pem')}good" in ask()
    server.registry_service("operator-cmcc").RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(
            serial=auth.serial, reason=rpb.REVOCATION_REASON_KEY_COMPROMISE
        )
    )
    answer = ask()
    assert f"{cert_line('store.pem')}revoked" in answer and "keyCompromise" in answer
    # The CRL says so too, with a new CRL number.
    crl = x509.load_der_x509_crl(fetch(server, "/crl/cmcc.crl", tmp_path / "c.der"))
    entry = crl.get_revoked_certificate_by_serial_number(int(auth.serial, 16))
    assert entry is not None
    # A renewal's superseded certificate is revoked; a serial never issued is unknown.
    other = authorize(server, shop_id="shop-q2")
    renewed = server.registry_service("operator-cmcc").RenewAuthorization(
        rpb.RenewAuthorizationRequest(serial=other.serial)
    )
    write_store(tmp_path, other, "old.pem")
    assert f"{cert_line('old.pem')}revoked" in ask("old.pem")
    write_store(tmp_path, renewed.authorization, "new.pem")
    assert f"{cert_line('new.pem')}good" in ask("new.pem")


def cert_line(name: str) -> str:
    return f"{name}: "


def test_ocsp_get_form_and_malformed_requests(server: RegistryHarness) -> None:
    auth = authorize(server, shop_id="shop-g")
    certificate = x509.load_der_x509_certificate(auth.certificate)
    issuer = x509.load_pem_x509_certificate(
        httpx.get(f"{server.http_url}/ca/cmcc.pem", timeout=10).content
    )
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(certificate, issuer, hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    encoded = base64.b64encode(request).decode()
    got = httpx.get(f"{server.http_url}/ocsp/cmcc/{encoded}", timeout=10)
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/ocsp-response"
    response = ocsp.load_der_ocsp_response(got.content)
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
    posted = httpx.post(
        f"{server.http_url}/ocsp/cmcc",
        content=b"not an ocsp request",
        headers={"content-type": "application/ocsp-request"},
        timeout=10,
    )
    assert ocsp.load_der_ocsp_response(posted.content).response_status == (
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )
    assert httpx.get(f"{server.http_url}/ocsp/nobody/{encoded}", timeout=10).status_code == 404
    assert httpx.get(f"{server.http_url}/crl/nobody.crl", timeout=10).status_code == 404
    wrong_type = httpx.post(f"{server.http_url}/ocsp/cmcc", content=request, timeout=10)
    assert wrong_type.status_code == 415
