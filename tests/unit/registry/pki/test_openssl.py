"""The standard tool agrees: openssl verifies our chains, honours our CRLs and reads our OCSP."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from registry.pki.authority import CertificateAuthority, rotate_operator_ca
from registry.pki.ocsp import CertificateStatus, OcspResponder, answer_ocsp
from registry.pki.revocation import Revocation
from tests.unit.registry.pki.factory import World

PEM = serialization.Encoding.PEM


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )


def _write(path: Path, *objects: x509.Certificate | x509.CertificateRevocationList) -> str:
    path.write_bytes(b"".join(obj.public_bytes(PEM) for obj in objects))
    return path.name


@pytest.fixture
def chain(world: World, tmp_path: Path) -> tuple[Path, x509.Certificate]:
    store = world.issue()
    _write(tmp_path / "root.pem", world.root.certificate)
    _write(tmp_path / "operator.pem", world.operators["cmcc"].certificate)
    _write(tmp_path / "store.pem", store)
    return tmp_path, store


def _verify(cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return openssl(
        "verify", *extra, "-CAfile", "root.pem", "-untrusted", "operator.pem", "store.pem", cwd=cwd
    )


def test_openssl_verifies_an_issued_authorization(chain: tuple[Path, x509.Certificate]) -> None:
    cwd, _ = chain
    result = _verify(cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "store.pem: OK" in result.stdout


@pytest.mark.parametrize("purpose", ["sslserver", "sslclient"])
def test_openssl_refuses_it_for_tls(chain: tuple[Path, x509.Certificate], purpose: str) -> None:
    cwd, _ = chain
    result = _verify(cwd, "-purpose", purpose)
    assert result.returncode != 0
    assert "unsuitable certificate purpose" in result.stdout + result.stderr


def test_openssl_crl_check_before_and_after_operator_revocation(
    world: World, chain: tuple[Path, x509.Certificate]
) -> None:
    cwd, _ = chain
    operator = world.operators["cmcc"]
    _write(cwd / "operator.crl", world.crl(operator))
    _write(cwd / "root.crl", world.crl(world.root))
    crl_args = ("-crl_check_all", "-CRLfile", "root.crl", "-CRLfile", "operator.crl")
    before = _verify(cwd, *crl_args)
    assert before.returncode == 0, before.stdout + before.stderr

    revocation = Revocation(
        operator.certificate.serial_number,
        world.now - dt.timedelta(minutes=5),
        x509.ReasonFlags.privilege_withdrawn,
    )
    _write(cwd / "root.crl", world.crl(world.root, [revocation]))
    after = _verify(cwd, *crl_args)
    assert after.returncode != 0
    assert "error 23 at 1 depth lookup: certificate revoked" in after.stdout + after.stderr


def test_openssl_crl_check_sees_a_revoked_store(
    world: World, chain: tuple[Path, x509.Certificate]
) -> None:
    cwd, store = chain
    operator = world.operators["cmcc"]
    _write(cwd / "root.crl", world.crl(world.root))
    _write(
        cwd / "operator.crl",
        world.crl(operator, [Revocation(store.serial_number, world.now - dt.timedelta(minutes=5))]),
    )
    result = _verify(cwd, "-crl_check_all", "-CRLfile", "root.crl", "-CRLfile", "operator.crl")
    assert result.returncode != 0
    assert "error 23 at 0 depth lookup: certificate revoked" in result.stdout + result.stderr


def test_openssl_after_rotation(world: World, tmp_path: Path) -> None:
    # The operator's one CRL is signed by the new key and covers certificates of the old one;
    # OpenSSL accepts a CRL signed by another key of the same CA with -extended_crl.
    old = world.operators["cucc"]
    before = world.issue("cucc")
    new = rotate_operator_ca(world.root, old, now=world.now - dt.timedelta(days=1))
    after = world.issue("cucc", ca=new)
    _write(tmp_path / "root.pem", world.root.certificate)
    _write(tmp_path / "operators.pem", old.certificate, new.certificate)
    _write(tmp_path / "before.pem", before)
    _write(tmp_path / "after.pem", after)
    _write(tmp_path / "root.crl", world.crl(world.root))
    _write(tmp_path / "operator.crl", world.crl(new))
    args = (
        "verify", "-extended_crl", "-crl_check_all", "-CRLfile", "root.crl", "-CRLfile",
        "operator.crl", "-CAfile", "root.pem", "-untrusted", "operators.pem",
    )  # fmt: skip
    result = openssl(*args, "before.pem", "after.pem", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "before.pem: OK" in result.stdout
    assert "after.pem: OK" in result.stdout

    revoked = Revocation(before.serial_number, world.now - dt.timedelta(minutes=5))
    _write(tmp_path / "operator.crl", world.crl(new, [revoked]))
    assert openssl(*args, "before.pem", cwd=tmp_path).returncode != 0
    assert openssl(*args, "after.pem", cwd=tmp_path).returncode == 0


def _ocsp_round_trip(
    cwd: Path,
    store_name: str,
    issuer: CertificateAuthority,
    responder: OcspResponder,
    status: CertificateStatus,
    now: dt.datetime,
) -> subprocess.CompletedProcess[str]:
    """openssl builds the request (with a nonce), we answer it, openssl checks the answer."""
    _write(cwd / "issuer.pem", issuer.certificate)
    made = openssl(
        "ocsp", "-issuer", "issuer.pem", "-cert", store_name, "-reqout", "req.der", cwd=cwd
    )
    assert made.returncode == 0, made.stderr
    response = responder.answer((cwd / "req.der").read_bytes(), lambda _s: status, now=now)
    (cwd / "resp.der").write_bytes(response)
    # The request's nonce must come back: openssl compares them when given both files.
    nonce = openssl(
        "ocsp", "-reqin", "req.der", "-respin", "resp.der", "-CAfile", "root.pem",
        "-verify_other", "issuer.pem", cwd=cwd,
    )  # fmt: skip
    assert nonce.returncode == 0, nonce.stdout + nonce.stderr
    return openssl(
        "ocsp", "-respin", "resp.der", "-issuer", "issuer.pem", "-cert", store_name,
        "-CAfile", "root.pem", "-verify_other", "issuer.pem", "-no_nonce", cwd=cwd,
    )  # fmt: skip


def test_openssl_ocsp_good_revoked_unknown(
    world: World, chain: tuple[Path, x509.Certificate]
) -> None:
    cwd, _ = chain
    operator = world.operators["cmcc"]
    responder = OcspResponder([operator])
    now = world.now
    good = _ocsp_round_trip(cwd, "store.pem", operator, responder, CertificateStatus.good(), now)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Response verify OK" in good.stderr
    assert "store.pem: good" in good.stdout

    revoked_at = now - dt.timedelta(hours=2)
    revoked = _ocsp_round_trip(
        cwd,
        "store.pem",
        operator,
        responder,
        CertificateStatus.revoked(revoked_at, x509.ReasonFlags.key_compromise),
        now,
    )
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert "store.pem: revoked" in revoked.stdout
    assert "Reason: keyCompromise" in revoked.stdout
    assert f"Revocation Time: {revoked_at:%b %e %H:%M:%S %Y} GMT" in revoked.stdout

    unknown = _ocsp_round_trip(
        cwd, "store.pem", operator, responder, CertificateStatus.unknown(), now
    )
    assert unknown.returncode == 0, unknown.stdout + unknown.stderr
    assert "store.pem: unknown" in unknown.stdout


def test_openssl_ocsp_for_a_store_of_another_operator(world: World, tmp_path: Path) -> None:
    # cucc's certificate asked of cmcc's responder: unknown, whatever storage would say.
    store = world.issue("cucc")
    _write(tmp_path / "root.pem", world.root.certificate)
    _write(tmp_path / "store.pem", store)
    _write(tmp_path / "cucc.pem", world.operators["cucc"].certificate)
    _write(tmp_path / "cmcc.pem", world.operators["cmcc"].certificate)
    made = openssl(
        "ocsp", "-issuer", "cucc.pem", "-cert", "store.pem", "-reqout", "req.der", cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    response = answer_ocsp(
        (tmp_path / "req.der").read_bytes(),
        lambda _s: CertificateStatus.good(),
        authorities=[world.operators["cmcc"]],
    )
    (tmp_path / "resp.der").write_bytes(response)
    result = openssl(
        "ocsp", "-respin", "resp.der", "-issuer", "cucc.pem", "-cert", "store.pem",
        "-VAfile", "cmcc.pem", "-no_nonce", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Response verify OK" in result.stderr
    assert "store.pem: unknown" in result.stdout


def test_openssl_ocsp_for_a_certificate_of_a_rotated_key(world: World, tmp_path: Path) -> None:
    old = world.operators["vno1"]
    store = world.issue("vno1")
    new = rotate_operator_ca(world.root, old, now=world.now - dt.timedelta(days=1))
    _write(tmp_path / "root.pem", world.root.certificate)
    _write(tmp_path / "store.pem", store)
    responder = OcspResponder([old, new])
    result = _ocsp_round_trip(
        tmp_path, "store.pem", old, responder, CertificateStatus.good(old.key_id), world.now
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Response verify OK" in result.stderr
    assert "store.pem: good" in result.stdout
