"""Identity-proofing test kit: readers with real keys, signed import files, a proofing server."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from registry.subscribers import DocumentType
from services.app import App
from services.domain.attestation import (
    AttestationClaims,
    ReaderPrivateKey,
    sign,
    subject_digest,
)
from services.domain.documents import Document
from services.domain.pseudonym import Pseudonymizer
from services.features.proofing import ProofingConfig
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import proofing_pb2 as ppb
from services.proto.realname.v1 import proofing_pb2_grpc as pgrpc
from services.proto.realname.v1 import verification_pb2 as vpb
from services.rpc.server import TlsFiles, create_server
from services.storage.database import Database
from tests.support.server import GrpcHarness


def private_pem(key: ReaderPrivateKey) -> bytes:
    """PKCS#8 PEM of a private key (unencrypted: test keys only)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: ReaderPrivateKey) -> str:
    """SubjectPublicKeyInfo PEM of a private key's public half."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass
class Reader:
    """A simulated certified ID-card reader with its own key."""

    serial: str
    agent_id: str
    latitude: float | None = 26.08  # None: registered without a location
    longitude: float = 119.30
    key: ReaderPrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)

    @classmethod
    def ecdsa(cls, serial: str, agent_id: str, **kw: float | None) -> Reader:
        """A reader with an ECDSA P-256 key."""
        return cls(serial, agent_id, key=ec.generate_private_key(ec.SECP256R1()), **kw)

    def register(self, stub: pgrpc.ProofingServiceStub) -> ppb.Reader:
        """Registers the reader with the calling operator."""
        return stub.RegisterReader(
            ppb.RegisterReaderRequest(
                serial=self.serial,
                agent_id=self.agent_id,
                public_key_pem=public_pem(self.key),
                location=None
                if self.latitude is None
                else ppb.ReaderLocation(
                    latitude=self.latitude, longitude=self.longitude, label="test shop"
                ),
            ),
            timeout=10,
        ).reader

    def attest(
        self,
        nonce: str,
        document: Document,
        name: str,
        *,
        at: dt.datetime | None = None,
        liveness: bool = True,
        score: int = 950,
        signer: ReaderPrivateKey | None = None,
    ) -> ppb.ReaderAttestation:
        """A signed attestation of what this reader read (``signer`` forges it)."""
        claims = AttestationClaims(
            reader_serial=self.serial,
            nonce=nonce,
            time=at or dt.datetime.now(dt.UTC),
            subject=subject_digest(nonce, document, name),
            liveness=liveness,
            face_score=score,
        )
        payload = claims.encode()
        return ppb.ReaderAttestation(payload=payload, signature=sign(signer or self.key, payload))


def resident(number: str) -> Document:
    """A resident ID card document."""
    return Document(DocumentType.RESIDENT_ID_CARD, number)


def activation(
    request_id: str,
    document: Document,
    msisdn: str,
    iccid: str,
    *,
    agent_id: str = "shop-0042",
    name: str = "",
    attestation: ppb.ReaderAttestation | None = None,
) -> vpb.ActivateCardRequest:
    """An agent-sale ActivateCardRequest for a personal card."""
    return vpb.ActivateCardRequest(
        request_id=request_id,
        document=cpb.Document(type=document.type.value, number=document.number),  # type: ignore[arg-type]
        msisdn=msisdn,
        iccid=iccid,
        card_type=cpb.CARD_TYPE_PERSONAL,
        channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id=agent_id)),
        holder_name=name,
        attestation=attestation,
    )


def proofing_stub(
    harness: GrpcHarness, principal: str = "operator-cmcc"
) -> pgrpc.ProofingServiceStub:
    """A ProofingService stub as ``principal``."""
    return pgrpc.ProofingServiceStub(harness.channel(principal))


def enable_policy(
    stub: pgrpc.ProofingServiceStub,
    *,
    attestation: bool = True,
    identity: bool = True,
    threshold: int = 800,
    freshness: int = 300,
) -> ppb.ProofingPolicy:
    """Turns proofing on for the calling operator."""
    return stub.SetProofingPolicy(
        ppb.SetProofingPolicyRequest(
            policy=ppb.ProofingPolicy(
                enabled=True,
                attestation_required=attestation,
                identity_check_required=identity,
                face_match_threshold_permille=threshold,
                freshness_seconds=freshness,
            )
        ),
        timeout=10,
    ).policy


def signed_records(
    records: list[dict[str, str | None]], key: ed25519.Ed25519PrivateKey, source: str = "test"
) -> tuple[bytes, bytes]:
    """An identity-record import file and its detached signature."""
    data = json.dumps(
        {"format": "realname-identity-records/v1", "source": source, "records": records}
    ).encode()
    return data, key.sign(data)


def record(
    number: str, name: str, status: str = "VALID", until: str | None = None
) -> dict[str, str | None]:
    """One identity record of a resident ID card."""
    return {
        "document_type": "RESIDENT_ID_CARD",
        "number": number,
        "name": name,
        "status": status,
        "valid_until": until,
    }


def write_signature(path: Path, signature: bytes) -> Path:
    """Writes a detached signature file (base64), as `realname proofing sign` does."""
    path.write_text(base64.b64encode(signature).decode() + "\n")
    return path


def start_proofing_harness(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, config: ProofingConfig
) -> tuple[GrpcHarness, App]:
    """An mTLS server whose App is built with this proofing configuration."""
    app = App.build(db, pseudonymizer, proofing=config)
    running = create_server(app.bindings(), "127.0.0.1:0", tls=TlsFiles.in_pki_dir(pki_dir))
    return GrpcHarness(running, f"127.0.0.1:{running.port}", pki_dir, app.cards), app
