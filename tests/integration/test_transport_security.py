"""mTLS: callers without a certificate from the transport CA never reach a handler."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import pytest

from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from services.runtime.devpki import cert_pem, key_pem, make_ca, make_client_cert
from tests.support.identities import resident_id
from tests.support.pki import GRPC_TEST_OPTIONS
from tests.support.server import GrpcHarness

REQUEST = vpb.CheckEligibilityRequest(
    document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=resident_id(5)),
    card_type=cpb.CARD_TYPE_PERSONAL,
)


def call_with(server: GrpcHarness, credentials: grpc.ChannelCredentials) -> grpc.RpcError:
    with (
        grpc.secure_channel(server.address, credentials, GRPC_TEST_OPTIONS) as ch,
        pytest.raises(grpc.RpcError) as info,
    ):
        vgrpc.VerificationServiceStub(ch).CheckEligibility(REQUEST, timeout=5)
    return info.value


def rpc_log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "realname.rpc"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_client_certificate_is_refused(
    grpc_server: GrpcHarness, pki_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=(pki_dir / "ca.pem").read_bytes())
    err = call_with(grpc_server, creds)
    # The handshake fails before any RPC exists, so gRPC reports the transport as unavailable.
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert rpc_log_lines(caplog) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_certificate_from_a_foreign_ca_is_refused(
    grpc_server: GrpcHarness, pki_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stranger_ca = make_ca("someone else's CA")
    # Same subject as a real operator: only the issuing CA differs.
    impostor = make_client_cert(stranger_ca, "operator-cmcc")
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki_dir / "ca.pem").read_bytes(),
        private_key=key_pem(impostor.key),
        certificate_chain=cert_pem(impostor.cert),
    )
    assert call_with(grpc_server, creds).code() == grpc.StatusCode.UNAVAILABLE
    assert rpc_log_lines(caplog) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_expired_client_certificate_is_refused(grpc_server: GrpcHarness, pki_dir: Path) -> None:
    from services.runtime.devpki import load_issued

    ca = load_issued(pki_dir / "ca.pem", pki_dir / "ca.key")
    old = make_client_cert(
        ca, "operator-cmcc", days=1, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    )
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki_dir / "ca.pem").read_bytes(),
        private_key=key_pem(old.key),
        certificate_chain=cert_pem(old.cert),
    )
    assert call_with(grpc_server, creds).code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_client_certificate_with_an_unknown_role_is_unauthenticated(
    grpc_server: GrpcHarness, pki_dir: Path
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from services.runtime.devpki import load_issued

    ca = load_issued(pki_dir / "ca.pem", pki_dir / "ca.key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, "janitor"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cmcc"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "janitor"),
        ]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )  # fmt: skip
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki_dir / "ca.pem").read_bytes(),
        private_key=key_pem(key),
        certificate_chain=cert_pem(cert),
    )
    err = call_with(grpc_server, creds)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
