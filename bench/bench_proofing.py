"""ActivateCard with reader-attestation verification, next to ActivateCard without it, one run.

One `realname serve` subprocess on SQLite (dev-init, real mTLS). China Mobile turns proofing on
(attestation and identity check, against the reference identity authority loaded with every
document the bench uses); China Unicom has no policy. The same client (``--concurrency`` threads,
distinct documents, agent sales at shop-0042) then runs, in alternating phases:

* plain: China Unicom's ActivateCard, no name, no attestation;
* attested: China Mobile's GetAttestationNonce, the reader's Ed25519 signature (one reader key
  per client thread), then ActivateCard with name and attestation; the ActivateCard latency and
  the whole sale's (nonce + sign + activate) are reported apart.

Figures are printed and written to bench/results/latest.md, not asserted.

Run: ``.venv/bin/python -m bench.bench_proofing [--seconds S] [--concurrency N]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import bench.run as run
from bench.common import CHANNEL_OPTIONS, client_credentials, update_results_section, wait_serving
from registry.subscribers import DocumentType
from services.domain.attestation import AttestationClaims, sign, subject_digest
from services.domain.documents import Document, resident_id_check_char
from services.domain.numbers import luhn_complete
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import proofing_pb2 as ppb
from services.proto.realname.v1 import proofing_pb2_grpc as pgrpc
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from services.runtime.config import Settings
from services.runtime.identity_authority import load_identity_records
from services.runtime.key_files import load_holder_names, load_pepper
from services.storage.database import Database

NAME = "Lin Xiaoming"
DOCUMENTS = 20_000
# The bench measures proofing, not the rate limits; no regulator listener on a fixed port.
SERVER_ENV = {
    "REALNAME_RATE_PRINCIPAL": "off",
    "REALNAME_RATE_DOCUMENT": "off",
    "REALNAME_ADMIN_ADDRESS": "off",
}


def document(seq: int) -> Document:
    """A distinct valid resident ID per ``seq``."""
    birth = (dt.date(1960, 1, 1) + dt.timedelta(days=seq // 1000)).strftime("%Y%m%d")
    first17 = f"350102{birth}{seq % 1000:03d}"
    return Document(DocumentType.RESIDENT_ID_CARD, first17 + resident_id_check_char(first17))


@dataclass
class Phase:
    """Latencies of one phase."""

    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    sale_latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def row(self, values: list[float], label: str) -> str:
        """A markdown table row of rate and percentiles."""
        if not values:
            return f"| {label} | 0 | — | — |"
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        rate = len(values) / self.seconds
        return (
            f"| {label} | {rate:,.0f} | {statistics.median(ordered) * 1000:.1f} "
            f"| {p99 * 1000:.1f} |"
        )


class Client:
    """The bench's client: channels per principal, a shared counter of documents and numbers."""

    def __init__(self, address: str, pki: Path) -> None:
        self._channels = {
            p: grpc.secure_channel(address, client_credentials(pki, p), CHANNEL_OPTIONS)
            for p in ("operator-cmcc", "operator-cucc")
        }
        self.cmcc = vgrpc.VerificationServiceStub(self._channels["operator-cmcc"])
        self.cucc = vgrpc.VerificationServiceStub(self._channels["operator-cucc"])
        self.proofing = pgrpc.ProofingServiceStub(self._channels["operator-cmcc"])
        self._lock = threading.Lock()
        self._seq = 0

    def next_seq(self) -> int:
        """The next distinct sequence number."""
        with self._lock:
            self._seq += 1
            return self._seq

    def close(self) -> None:
        """Closes the channels."""
        for ch in self._channels.values():
            ch.close()


def _request(seq: int, prefix: str, doc: Document) -> vpb.ActivateCardRequest:
    return vpb.ActivateCardRequest(
        request_id=f"bench-{prefix}-{seq}",
        document=cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=doc.number),
        msisdn=f"{prefix}{seq:08d}",
        iccid=luhn_complete(f"898600{int(prefix):03d}{seq:010d}"),
        card_type=cpb.CARD_TYPE_PERSONAL,
        channel=vpb.SalesChannel(agent=vpb.AgentChannel(agent_id="shop-0042")),
    )


def plain_sale(client: Client, phase: Phase, _key: ed25519.Ed25519PrivateKey, _serial: str) -> None:
    """One unattested activation at China Unicom."""
    seq = client.next_seq()
    request = _request(seq, "186", document(seq))
    started = time.perf_counter()
    client.cucc.ActivateCard(request, timeout=30)
    phase.latencies.append(time.perf_counter() - started)


def attested_sale(
    client: Client, phase: Phase, key: ed25519.Ed25519PrivateKey, serial: str
) -> None:
    """One attested activation at China Mobile: nonce, signature, ActivateCard."""
    seq = client.next_seq()
    doc = document(seq)
    started = time.perf_counter()
    nonce = client.proofing.GetAttestationNonce(ppb.GetAttestationNonceRequest(), timeout=30).nonce
    claims = AttestationClaims(
        serial, nonce, dt.datetime.now(dt.UTC), subject_digest(nonce, doc, NAME), True, 950
    )
    payload = claims.encode()
    request = _request(seq, "138", doc)
    request.holder_name = NAME
    request.attestation.payload = payload
    request.attestation.signature = sign(key, payload)
    activate_started = time.perf_counter()
    client.cmcc.ActivateCard(request, timeout=30)
    done = time.perf_counter()
    phase.latencies.append(done - activate_started)
    phase.sale_latencies.append(done - started)


Sale = Callable[[Client, Phase, ed25519.Ed25519PrivateKey, str], None]


def run_phase(
    client: Client, phase: Phase, sale: Sale, keys: list[ed25519.Ed25519PrivateKey], seconds: float
) -> None:
    """Runs ``sale`` from one thread per key for ``seconds``."""
    stop = time.monotonic() + seconds

    def worker(index: int) -> None:
        while time.monotonic() < stop:
            try:
                sale(client, phase, keys[index], f"BENCH-RDR-{index}")
            except grpc.RpcError as exc:
                call: Any = exc
                name = call.code().name
                phase.errors[name] = phase.errors.get(name, 0) + 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(keys))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.seconds += time.monotonic() - started


def _setup(data_dir: Path, client: Client, keys: list[ed25519.Ed25519PrivateKey]) -> None:
    """Identity records for every bench document, cmcc's policy, one reader per thread."""
    loader = ed25519.Ed25519PrivateKey.generate()
    records = [
        {"document_type": "RESIDENT_ID_CARD", "number": document(n).number, "name": NAME,
         "status": "VALID", "valid_until": None}
        for n in range(1, DOCUMENTS + 1)
    ]  # fmt: skip
    data = json.dumps({"format": "realname-identity-records/v1", "source": "bench",
                       "records": records}).encode()  # fmt: skip
    settings = Settings(data_dir=data_dir)
    pseudo = load_pepper(settings.pepper_path)
    db = Database(settings.database())
    try:
        loaded = load_identity_records(
            db, pseudo, load_holder_names(settings.holder_name_key_path, pseudo),
            data=data, signature=loader.sign(data),
            loader_key_pem=loader.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            now=dt.datetime.now(dt.UTC),
        )  # fmt: skip
    finally:
        db.dispose()
    print(f"  loaded {loaded:,} identity records")
    client.proofing.SetProofingPolicy(
        ppb.SetProofingPolicyRequest(
            policy=ppb.ProofingPolicy(
                enabled=True, attestation_required=True, identity_check_required=True,
                face_match_threshold_permille=800, freshness_seconds=300,
            )
        ),
        timeout=30,
    )  # fmt: skip
    for index, key in enumerate(keys):
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        client.proofing.RegisterReader(
            ppb.RegisterReaderRequest(
                serial=f"BENCH-RDR-{index}", agent_id="shop-0042", public_key_pem=pem.decode(),
                location=ppb.ReaderLocation(latitude=26.08, longitude=119.30, label="bench"),
            ),
            timeout=30,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Runs the proofing bench; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="per phase, twice each")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="realname-bench-proofing-") as tmp:
        data_dir = Path(tmp) / "data"
        run.dev_init(data_dir, None)
        server = run.start_realname(data_dir, "sqlite", None, extra_env=SERVER_ENV)
        client = None
        try:
            wait_serving(server, data_dir / "dev-pki")
            client = Client(server.address, data_dir / "dev-pki")
            keys = [ed25519.Ed25519PrivateKey.generate() for _ in range(args.concurrency)]
            _setup(data_dir, client, keys)
            plain, attested = Phase("plain"), Phase("attested")
            # Alternating halves, so drift on a shared machine hits both alike.
            for _ in range(2):
                run_phase(client, plain, plain_sale, keys, args.seconds / 2)
                run_phase(client, attested, attested_sale, keys, args.seconds / 2)
        finally:
            if client is not None:
                client.close()
            server.proc.terminate()
            server.proc.wait(timeout=30)
    if plain.errors or attested.errors:
        print(f"!!! errors: plain {plain.errors}, attested {attested.errors}")
    ratio = (len(attested.latencies) / attested.seconds) / (len(plain.latencies) / plain.seconds)
    lines = [
        f"### Identity proofing (bench.bench_proofing, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} "
        f"UTC, SQLite, {args.concurrency} client threads, {args.seconds:g} s per kind)",
        "",
        "| workload | calls/s | p50 ms | p99 ms |",
        "| --- | --: | --: | --: |",
        plain.row(plain.latencies, "ActivateCard, no proofing (cucc)"),
        attested.row(attested.latencies, "ActivateCard with attestation + identity check (cmcc)"),
        attested.row(attested.sale_latencies, "attested sale: nonce + sign + ActivateCard"),
        "",
        f"Attested sales per second are {ratio:.2f} of unattested ones in the same run.",
    ]  # fmt: skip
    print("\n".join(lines))
    update_results_section(run.RESULTS_PATH, "proofing", "\n".join(lines))
    return 1 if plain.errors or attested.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
