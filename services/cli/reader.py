"""`realname reader keygen|register|list|revoke|simulate`: certified ID-card readers.

``simulate`` plays the reader at a point of sale: it holds the reader's private key, takes the
document and name "read from the chip", a nonce (given, or fetched with GetAttestationNonce),
and prints the attestation as JSON (``{"payload": …, "signature": …}`` in base64, the form
grpcurl takes for ActivateCardRequest.attestation). ``--break`` makes a deliberately bad one:
``signature`` (signed by another key), ``nonce`` (a nonce never issued), ``stale`` (an hour
old), ``document`` (another document's digest), ``face`` (a failing face-match score).

Exit codes: 0 done, 1 the call failed, 2 bad arguments or local state.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from registry.subscribers import normalise_number
from services.cli.common import (
    DOCUMENT_TYPES,
    EXIT_OK,
    Command,
    SubParsers,
    UsageError,
    add_address_argument,
    add_client_arguments,
    add_document_number_argument,
    client_channel,
    command_group,
    document_number,
    guard,
    write_private_key,
)
from services.domain.attestation import (
    AttestationClaims,
    ReaderPrivateKey,
    new_nonce,
    sign,
    subject_digest,
)
from services.domain.documents import Document
from services.domain.errors import RealnameError
from services.proto.realname.v1 import proofing_pb2 as ppb
from services.proto.realname.v1 import proofing_pb2_grpc as pgrpc

BREAKS = ("signature", "nonce", "stale", "document", "face")
PRINCIPAL_HELP = "the calling principal, e.g. operator-cmcc"


def _guarded(command: Command) -> Command:
    return guard(command, RealnameError, ValueError)


def _load_private_key(path: Path) -> ReaderPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise UsageError(f"{path} is not an Ed25519 or ECDSA P-256 key")
    return key


def _public_pem(key: ReaderPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def cmd_keygen(args: argparse.Namespace) -> int:
    """Make a reader key pair: the private key file and ``<key>.pub``."""
    key: ReaderPrivateKey = (
        ed25519.Ed25519PrivateKey.generate()
        if args.algorithm == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )
    if args.key.exists():
        raise UsageError(f"{args.key} exists; not overwriting a key")
    write_private_key(args.key, key)
    Path(f"{args.key}.pub").write_text(_public_pem(key))
    print(f"reader key {args.key} ({args.algorithm}), public key {args.key}.pub")
    return EXIT_OK


def _reader_json(reader: ppb.Reader) -> str:
    status = ppb.ReaderStatus.Name(reader.status).removeprefix("READER_STATUS_")
    return json.dumps(
        {
            "serial": reader.serial,
            "agent_id": reader.agent_id,
            "key_algorithm": reader.key_algorithm,
            "key_fingerprint": reader.key_fingerprint,
            "status": status,
            "location": reader.location.label,
        }
    )


def cmd_register(args: argparse.Namespace) -> int:
    """Register the reader (its public key) to one of the operator's agents."""
    key = _load_private_key(args.key)
    with client_channel(args) as channel:
        reader = (
            pgrpc.ProofingServiceStub(channel)
            .RegisterReader(
                ppb.RegisterReaderRequest(
                    serial=args.serial,
                    agent_id=args.agent,
                    public_key_pem=_public_pem(key),
                    location=ppb.ReaderLocation(
                        latitude=args.latitude, longitude=args.longitude, label=args.label
                    ),
                ),
                timeout=10,
            )
            .reader
        )
    print(_reader_json(reader))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    """List the operator's readers."""
    with client_channel(args) as channel:
        readers = (
            pgrpc.ProofingServiceStub(channel)
            .ListReaders(ppb.ListReadersRequest(agent_id=args.agent or ""), timeout=10)
            .readers
        )
    for reader in readers:
        print(_reader_json(reader))
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke a reader."""
    with client_channel(args) as channel:
        reader = (
            pgrpc.ProofingServiceStub(channel)
            .RevokeReader(
                ppb.RevokeReaderRequest(serial=args.serial, reason=args.reason), timeout=10
            )
            .reader
        )
    print(_reader_json(reader))
    return EXIT_OK


def attestation_json(
    key: ReaderPrivateKey,
    *,
    serial: str,
    nonce: str,
    document: Document,
    name: str,
    score: int,
    liveness: bool,
    broken: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """A simulated reader's attestation (optionally broken on purpose), base64 for JSON."""
    at = now or dt.datetime.now(dt.UTC)
    if broken == "nonce":
        nonce = new_nonce(secrets.token_bytes(24))
    if broken == "stale":
        at -= dt.timedelta(hours=1)
    if broken == "document":
        # Another document: the number with its last digit changed (still not a real holder's).
        last = "0" if document.number[-2] != "0" else "1"
        document = Document(document.type, document.number[:-2] + last + document.number[-1])
    if broken == "face":
        score = 120
    claims = AttestationClaims(
        serial, nonce, at, subject_digest(nonce, document, name), liveness, score
    )
    payload = claims.encode()
    signer = ed25519.Ed25519PrivateKey.generate() if broken == "signature" else key
    return {
        "payload": base64.b64encode(payload).decode(),
        "signature": base64.b64encode(sign(signer, payload)).decode(),
    }


def cmd_simulate(args: argparse.Namespace) -> int:
    """Print a (valid or deliberately broken) attestation as JSON."""
    key = _load_private_key(args.key)
    nonce = args.nonce
    if nonce is None:
        if args.data_dir is None or args.principal is None:
            raise UsageError("give --nonce, or --data-dir and --as to fetch one")
        with client_channel(args) as channel:
            nonce = (
                pgrpc.ProofingServiceStub(channel)
                .GetAttestationNonce(ppb.GetAttestationNonceRequest(), timeout=10)
                .nonce
            )
    document = Document(DOCUMENT_TYPES[args.document_type], normalise_number(document_number(args)))
    print(
        json.dumps(
            attestation_json(
                key,
                serial=args.serial,
                nonce=nonce,
                document=document,
                name=args.name,
                score=args.score,
                liveness=args.liveness == "pass",
                broken=args.broken,
            )
        )
    )
    return EXIT_OK


def register(subparsers: SubParsers) -> None:
    """Adds `realname reader …`."""
    sub = command_group(subparsers, "reader", "certified ID-card readers and the simulator")

    p = sub.add_parser("keygen", help="make a reader key pair (KEY and KEY.pub)")
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--algorithm", choices=("ed25519", "ecdsa-p256"), default="ed25519")
    p.set_defaults(func=_guarded(cmd_keygen))

    p = sub.add_parser("register", help="register a reader to an agent (gRPC, as the operator)")
    add_client_arguments(p, principal_help=PRINCIPAL_HELP, address_help=None)
    p.add_argument("--key", type=Path, required=True, help="the reader's key (public half sent)")
    p.add_argument("--serial", required=True)
    p.add_argument("--agent", required=True, help="the agent the reader is installed at")
    p.add_argument("--latitude", type=float, required=True)
    p.add_argument("--longitude", type=float, required=True)
    p.add_argument("--label", default="", help="where it is, e.g. 'Fuzhou Gulou shop'")
    p.set_defaults(func=_guarded(cmd_register))

    p = sub.add_parser("list", help="list the operator's readers (gRPC)")
    add_client_arguments(p, principal_help=PRINCIPAL_HELP, address_help=None)
    p.add_argument("--agent")
    p.set_defaults(func=_guarded(cmd_list))

    p = sub.add_parser("revoke", help="revoke a reader (gRPC)")
    add_client_arguments(p, principal_help=PRINCIPAL_HELP, address_help=None)
    p.add_argument("serial")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=_guarded(cmd_revoke))

    p = sub.add_parser("simulate", help="print a reader attestation (valid, or --break one)")
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--serial", required=True)
    p.add_argument("--nonce", help="the nonce to sign (default: fetch one with --as)")
    p.add_argument("--data-dir", type=Path, default=None)
    add_address_argument(p, None)
    p.add_argument("--as", dest="principal", default=None, help="operator fetching the nonce")
    p.add_argument("--document-type", choices=sorted(DOCUMENT_TYPES), default="resident-id-card")
    add_document_number_argument(p, "as read from the chip")
    p.add_argument("--name", required=True, help="as read from the chip")
    p.add_argument("--score", type=int, default=960, help="face-match score, 0-1000")
    p.add_argument("--liveness", choices=("pass", "fail"), default="pass")
    p.add_argument("--break", dest="broken", choices=BREAKS, help="make a deliberately bad one")
    p.set_defaults(func=_guarded(cmd_simulate))
