"""Client-side TLS material for tests: channels as any dev principal, or as a stranger."""

from __future__ import annotations

from pathlib import Path

import grpc

GRPC_TEST_OPTIONS = [("grpc.ssl_target_name_override", "localhost")]


def client_credentials(pki_dir: Path, principal: str) -> grpc.ChannelCredentials:
    """Channel credentials presenting the dev client certificate of ``principal``."""
    return grpc.ssl_channel_credentials(
        root_certificates=(pki_dir / "ca.pem").read_bytes(),
        private_key=(pki_dir / "clients" / f"{principal}.key").read_bytes(),
        certificate_chain=(pki_dir / "clients" / f"{principal}.pem").read_bytes(),
    )


def channel(address: str, pki_dir: Path, principal: str) -> grpc.Channel:
    """A secure channel to ``address`` as ``principal``."""
    return grpc.secure_channel(address, client_credentials(pki_dir, principal), GRPC_TEST_OPTIONS)
