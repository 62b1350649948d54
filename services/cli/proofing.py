"""`realname proofing …` and `realname report readers`: identity proofing administration.

* ``proofing loader-keygen`` / ``proofing sign`` make the key pair and the detached signature
  of an identity-record import file (what the regulator or an authority extract would ship);
* ``proofing load`` verifies the signature with the data dir's loader key
  (``DIR/proofing-loader.pem``) and loads the records into the reference identity authority,
  opening the database directly;
* ``proofing policy``, ``proofing block`` and ``proofing unblock`` call ProofingService;
* ``report readers`` reads the database: attestations per reader and the fraud signals.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.cli.common import (
    DOCUMENT_TYPES,
    EXIT_FAILED,
    EXIT_OK,
    Command,
    SubParsers,
    UsageError,
    add_client_arguments,
    add_document_number_argument,
    client_channel,
    command_group,
    data_settings,
    document_number,
    guard,
    report_subparsers,
    write_private_key,
)
from services.domain.errors import RealnameError
from services.domain.holder_names import HolderNameKeyError, HolderNames
from services.domain.pseudonym import PepperError, Pseudonymizer
from services.features.proofing import ProofingConfig
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import proofing_pb2 as ppb
from services.proto.realname.v1 import proofing_pb2_grpc as pgrpc
from services.runtime.config import Settings, add_data_dir_argument, env_default
from services.runtime.identity_authority import (
    BreakerSettings,
    GuardedAuthority,
    HttpAuthority,
    ImportRefused,
    load_identity_records,
)
from services.runtime.key_files import load_holder_names, load_pepper
from services.storage.database import Database
from services.storage.rawsql import Tx

PRINCIPAL_HELP = "the calling principal, e.g. operator-cmcc"


def proofing_config(settings: Settings, pseudonymizer: Pseudonymizer) -> ProofingConfig:
    """Serving configuration: holder-name keys from the data dir, the authority from the env.

    ``REALNAME_IDENTITY_AUTHORITY_URL`` selects the HTTP adapter (default: the reference table),
    ``REALNAME_IDENTITY_AUTHORITY_TIMEOUT`` its deadline in seconds (default 2), and
    ``REALNAME_IDENTITY_AUTHORITY_BREAKER`` the circuit breaker as ``failures/open-seconds``
    (default 5/30).
    """
    path = settings.holder_name_key_path
    names = load_holder_names(path, pseudonymizer) if path.exists() else None
    url = env_default("REALNAME_IDENTITY_AUTHORITY_URL")
    if not url:
        return ProofingConfig(names=names)
    timeout = float(env_default("REALNAME_IDENTITY_AUTHORITY_TIMEOUT", "2") or "2")
    failures, _, seconds = (
        env_default("REALNAME_IDENTITY_AUTHORITY_BREAKER", "5/30") or ""
    ).partition("/")
    breaker = BreakerSettings(timeout, int(failures), float(seconds))
    # The socket timeout is a little longer than the deadline: the guard answers first.
    authority = GuardedAuthority(HttpAuthority(url, timeout + 1), breaker)
    return ProofingConfig(names=names, authority=authority)


def cmd_loader_keygen(args: argparse.Namespace) -> int:
    """Make the Ed25519 key pair that signs identity-record import files."""
    if args.key.exists():
        raise UsageError(f"{args.key} exists; not overwriting a key")
    key = ed25519.Ed25519PrivateKey.generate()
    write_private_key(args.key, key)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    args.public.write_bytes(public)
    print(f"loader key {args.key}, public key {args.public}")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    """Sign an import file: a detached base64 signature over its exact bytes."""
    key = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UsageError("the loader key must be Ed25519")
    out = args.out or Path(f"{args.file}.sig")
    out.write_text(base64.b64encode(key.sign(args.file.read_bytes())).decode() + "\n")
    print(f"signature {out}")
    return EXIT_OK


def cmd_load(args: argparse.Namespace) -> int:
    """Verify and load a signed identity-record import file into the reference authority."""
    settings = data_settings(args)
    pseudonymizer = load_pepper(settings.pepper_path)
    names_path = settings.holder_name_key_path
    names = (
        load_holder_names(names_path, pseudonymizer)
        if names_path.exists()
        else HolderNames.from_pepper(pseudonymizer)
    )
    loader_key = (args.loader_key or settings.proofing_loader_key_path).read_bytes()
    try:
        signature = base64.b64decode(args.signature.read_text().strip(), validate=True)
    except ValueError:
        raise UsageError("the signature file is not base64") from None
    db = Database(settings.database())
    try:
        count = load_identity_records(
            db,
            pseudonymizer,
            names,
            data=args.file.read_bytes(),
            signature=signature,
            loader_key_pem=loader_key,
            now=dt.datetime.now(dt.UTC),
        )
    finally:
        db.dispose()
    print(f"loaded {count} identity records")
    return EXIT_OK


def _policy_json(policy: ppb.ProofingPolicy) -> str:
    return json.dumps(
        {
            "enabled": policy.enabled,
            "attestation_required": policy.attestation_required,
            "identity_check_required": policy.identity_check_required,
            "face_match_threshold_permille": policy.face_match_threshold_permille,
            "freshness_seconds": policy.freshness_seconds,
        }
    )


def cmd_policy(args: argparse.Namespace) -> int:
    """Show, with --enable set, or with --disable remove the calling operator's proofing policy."""
    with client_channel(args) as channel:
        stub = pgrpc.ProofingServiceStub(channel)
        if args.disable:
            request = ppb.SetProofingPolicyRequest(policy=ppb.ProofingPolicy(enabled=False))
            policy = stub.SetProofingPolicy(request, timeout=10).policy
        elif not args.enable:
            policy = stub.GetProofingPolicy(ppb.GetProofingPolicyRequest(), timeout=10).policy
        else:
            request = ppb.SetProofingPolicyRequest(
                policy=ppb.ProofingPolicy(
                    enabled=True,
                    attestation_required=args.attestation,
                    identity_check_required=args.identity_check,
                    face_match_threshold_permille=args.threshold,
                    freshness_seconds=args.freshness,
                )
            )
            policy = stub.SetProofingPolicy(request, timeout=10).policy
    print(_policy_json(policy))
    return EXIT_OK


def _document(args: argparse.Namespace) -> cpb.Document:
    kind = DOCUMENT_TYPES[args.document_type]
    return cpb.Document(type=kind.value, number=document_number(args))  # type: ignore[arg-type]


def cmd_block(args: argparse.Namespace) -> int:
    """Put a document on the lost/stolen blocklist (regulator)."""
    reason = ppb.BlockReason.Value(f"BLOCK_REASON_{args.reason.upper()}")
    with client_channel(args) as channel:
        reply = pgrpc.ProofingServiceStub(channel).BlockDocument(
            ppb.BlockDocumentRequest(
                document=_document(args), reason=reason, reference=args.reference
            ),
            timeout=10,
        )
    print(
        json.dumps(
            {
                "document": reply.document_masked,
                "already_blocked": reply.already_blocked,
                "cards_flagged": reply.cards_flagged,
            }
        )
    )
    return EXIT_OK


def cmd_unblock(args: argparse.Namespace) -> int:
    """Take a document off the blocklist (regulator)."""
    with client_channel(args) as channel:
        reply = pgrpc.ProofingServiceStub(channel).UnblockDocument(
            ppb.UnblockDocumentRequest(document=_document(args)), timeout=10
        )
    print(json.dumps({"document": reply.document_masked, "was_blocked": reply.was_blocked}))
    return EXIT_OK


def report_rows(db: Database, operator: str | None, since: dt.datetime) -> list[dict[str, object]]:
    """Per reader: attestations since ``since`` by outcome, and its fraud signals."""

    def work(tx: Tx) -> list[dict[str, object]]:
        rows = tx.all(
            "SELECT r.operator_id, r.agent_id, r.serial, r.revoked_at IS NOT NULL, "
            "(SELECT COUNT(*) FROM proofing_attestations a WHERE a.operator_id = r.operator_id "
            " AND a.reader_serial = r.serial AND a.recorded_at >= ?), "
            "(SELECT COUNT(*) FROM proofing_attestations a WHERE a.operator_id = r.operator_id "
            " AND a.reader_serial = r.serial AND a.recorded_at >= ? AND a.outcome <> 'ACCEPTED') "
            "FROM proofing_readers r WHERE ? = '' OR r.operator_id = ? "
            "ORDER BY r.operator_id, r.serial",
            [tx.timestamp(since), tx.timestamp(since), operator or "", operator or ""],
        )
        signals = tx.all(
            "SELECT operator_id, reader_serial, kind, detail, observed_at FROM proofing_signals "
            "WHERE observed_at >= ? ORDER BY id",
            (tx.timestamp(since),),
        )
        by_reader: dict[tuple[str, str], list[str]] = {}
        for op, serial, kind, detail, _at in signals:
            by_reader.setdefault((str(op), str(serial)), []).append(f"{kind}: {detail}")
        return [
            {
                "operator": r[0],
                "agent_id": r[1],
                "reader": r[2],
                "status": "REVOKED" if r[3] else "ACTIVE",
                "attestations": int(r[4]),
                "refused": int(r[5]),
                "signals": by_reader.get((str(r[0]), str(r[2])), []),
            }
            for r in rows
        ]

    return db.run_tx(work, readonly=True)


def cmd_report_readers(args: argparse.Namespace) -> int:
    """Print the readers report from the database, one JSON object per reader."""
    settings = data_settings(args)
    db = Database(settings.database())
    try:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=args.hours)
        rows = report_rows(db, args.operator, since)
    finally:
        db.dispose()
    for row in rows:
        if args.flagged and not row["signals"]:
            continue
        print(json.dumps(row, ensure_ascii=False))
    return EXIT_OK


def _guarded(command: Command) -> Command:
    return guard(command, RealnameError, ValueError)


def _load_guarded(args: argparse.Namespace) -> int:
    try:
        return _guarded(cmd_load)(args)
    except (ImportRefused, HolderNameKeyError, PepperError) as exc:
        print(f"realname proofing load: {exc}", file=sys.stderr)
        return EXIT_FAILED


def register(subparsers: SubParsers) -> None:
    """Adds `realname proofing …` and `realname report readers`."""
    sub = command_group(subparsers, "proofing", "identity proofing administration")

    p = sub.add_parser("loader-keygen", help="make the key pair that signs import files")
    p.add_argument("--key", type=Path, required=True, help="private key (written 0600)")
    p.add_argument("--public", type=Path, required=True, help="e.g. DIR/proofing-loader.pem")
    p.set_defaults(func=_guarded(cmd_loader_keygen))

    p = sub.add_parser("sign", help="sign an identity-record import file")
    p.add_argument("file", type=Path)
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--out", type=Path, help="signature file (default FILE.sig)")
    p.set_defaults(func=_guarded(cmd_sign))

    p = sub.add_parser("load", help="verify and load a signed identity-record import file")
    add_data_dir_argument(p)
    p.add_argument("file", type=Path)
    p.add_argument("--signature", type=Path, required=True)
    p.add_argument("--loader-key", type=Path, help="default DIR/proofing-loader.pem")
    p.set_defaults(func=_load_guarded)

    p = sub.add_parser("policy", help="show or set the operator's proofing policy (gRPC)")
    add_client_arguments(p, principal_help=PRINCIPAL_HELP, address_help=None)
    switch = p.add_mutually_exclusive_group()
    switch.add_argument("--enable", action="store_true", help="set the policy (else show it)")
    switch.add_argument("--disable", action="store_true", help="turn proofing off")
    p.add_argument("--attestation", action="store_true", help="agent sales need an attestation")
    p.add_argument("--identity-check", action="store_true", help="check the identity authority")
    p.add_argument("--threshold", type=int, default=800, help="face match, thousandths")
    p.add_argument("--freshness", type=int, default=300, help="attestation max age, seconds")
    p.set_defaults(func=_guarded(cmd_policy))

    for name, func, text in (
        ("block", cmd_block, "block a lost or stolen document (regulator, gRPC)"),
        ("unblock", cmd_unblock, "unblock a document (regulator, gRPC)"),
    ):
        p = sub.add_parser(name, help=text)
        add_client_arguments(p, "regulator", principal_help=PRINCIPAL_HELP, address_help=None)
        p.add_argument(
            "--document-type", choices=sorted(DOCUMENT_TYPES), default="resident-id-card"
        )
        add_document_number_argument(p)
        if name == "block":
            p.add_argument("--reason", choices=("lost", "stolen", "cancelled"), required=True)
            p.add_argument("--reference", default="", help="case reference (no personal data)")
        p.set_defaults(func=_guarded(func))

    p = report_subparsers(subparsers).add_parser(
        "readers", help="per reader: attestations, refusals and fraud signals"
    )
    add_data_dir_argument(p)
    p.add_argument("--operator", help="only this operator's readers")
    p.add_argument("--hours", type=float, default=24.0, help="look back this many hours")
    p.add_argument("--flagged", action="store_true", help="only readers with signals")
    p.set_defaults(func=_guarded(cmd_report_readers))
