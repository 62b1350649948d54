"""`realname ca …`, `realname store …` and `realname verify-seller`: the registry from a shell.

* ``ca`` commands act on the data directory and the database directly, because they need the
  regulator root's key (a file in ``<data_dir>/registry/``, which can be kept off the serving
  machine): ``init-root``, ``add-operator``, ``rotate-operator``, ``revoke-operator``, ``crl``.
* ``store keygen`` makes a store key (encrypted PKCS#8, passphrase from
  ``REALNAME_STORE_PASSPHRASE``) and its CSR, locally.
* ``store apply|review|issue|renew|revoke|show`` and ``verify-seller`` are gRPC calls to the
  running server over mTLS, presenting ``<data_dir>/dev-pki/clients/<principal>`` (``--as``).

Exit codes: 0 done (verify-seller: AUTHORIZED), 1 the call failed, 2 bad arguments or local
state, 3 verify-seller's verdict was not AUTHORIZED.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy import Connection

from registry.authz import authorities
from registry.authz.errors import RegistryError
from registry.pki.authority import create_root_ca
from registry.pki.errors import PkiError
from registry.pki.keys import Passphrase, generate_private_key, save_private_key
from registry.pki.operators import OperatorKind
from services.cli_common import data_settings, guard
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import registry_pb2 as rpb
from services.proto.realname.v1 import registry_pb2_grpc as rgrpc
from services.runtime.ca_material import key_directory, public_base_url
from services.runtime.config import DEFAULT_GRPC_ADDRESS, add_data_dir_argument, env_default
from services.storage.database import Database

EXIT_OK: Final = 0
EXIT_NOT_AUTHORIZED: Final = 3

STORE_PASSPHRASE_ENV: Final = "REALNAME_STORE_PASSPHRASE"  # noqa: S105 - a variable name
"""Environment variable with the passphrase that encrypts a store key made by ``keygen``."""

REASONS: Final = {
    "unspecified": rpb.REVOCATION_REASON_UNSPECIFIED,
    "key-compromise": rpb.REVOCATION_REASON_KEY_COMPROMISE,
    "ca-compromise": rpb.REVOCATION_REASON_CA_COMPROMISE,
    "affiliation-changed": rpb.REVOCATION_REASON_AFFILIATION_CHANGED,
    "superseded": rpb.REVOCATION_REASON_SUPERSEDED,
    "cessation-of-operation": rpb.REVOCATION_REASON_CESSATION_OF_OPERATION,
    "privilege-withdrawn": rpb.REVOCATION_REASON_PRIVILEGE_WITHDRAWN,
}
"""RFC 5280 reasons by their command-line names."""

CARD_TYPES: Final = {"personal": cpb.CARD_TYPE_PERSONAL, "industry": cpb.CARD_TYPE_INDUSTRY}

T = TypeVar("T")


class UsageError(Exception):
    """Raised for bad command-line input or local state; the message is shown to the user."""


def _client_args(parser: argparse.ArgumentParser, default_principal: str | None = None) -> None:
    add_data_dir_argument(parser)
    parser.add_argument(
        "--address",
        default=env_default("REALNAME_GRPC_ADDRESS", DEFAULT_GRPC_ADDRESS),
        help="the server's gRPC address (env REALNAME_GRPC_ADDRESS)",
    )
    parser.add_argument(
        "--as",
        dest="principal",
        default=default_principal,
        required=default_principal is None,
        help="the principal to call as: its client certificate in DATA_DIR/dev-pki/clients/",
    )


def _stub(args: argparse.Namespace) -> tuple[grpc.Channel, rgrpc.RegistryServiceStub]:
    pki = data_settings(args).pki_dir
    client = pki / "clients"
    try:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.pem").read_bytes(),
            private_key=(client / f"{args.principal}.key").read_bytes(),
            certificate_chain=(client / f"{args.principal}.pem").read_bytes(),
        )
    except FileNotFoundError as exc:
        raise UsageError(f"no client certificate for {args.principal}: {exc.filename}") from exc
    # The dev server certificate names localhost and 127.0.0.1.
    channel = grpc.secure_channel(
        args.address, credentials, [("grpc.ssl_target_name_override", "localhost")]
    )
    return channel, rgrpc.RegistryServiceStub(channel)


def _call(args: argparse.Namespace, call: Callable[[rgrpc.RegistryServiceStub], T]) -> T:
    channel, stub = _stub(args)
    with channel:
        return call(stub)


def _print(message: Message) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2))


def _without_certificate(authorization: rpb.Authorization) -> rpb.Authorization:
    copy = rpb.Authorization()
    copy.CopyFrom(authorization)
    copy.ClearField("certificate")
    return copy


def _write_certificate(path: Path | None, authorization: rpb.Authorization) -> None:
    if path is None:
        return
    certificate = x509.load_der_x509_certificate(authorization.certificate)
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    print(f"certificate written to {path}", file=sys.stderr)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror}") from exc


# -- ca (local) ---------------------------------------------------------------------------------


def _with_db(args: argparse.Namespace, work: Callable[[Connection], T]) -> T:
    db = Database(data_settings(args).database())
    try:
        return db.write(work)
    finally:
        db.dispose()


def cmd_ca_init_root(args: argparse.Namespace) -> int:
    """Create the regulator root (key file) and record it in the database (idempotent)."""
    keys = key_directory(data_settings(args).data_dir)
    passphrase = keys.require_passphrase()
    created = False
    if not keys.has_root():
        keys.save_root(create_root_ca(), passphrase)
        created = True
    root = keys.load_root(passphrase)
    _with_db(args, lambda conn: authorities.install_root(conn, root))
    print(f"root {'created' if created else 'kept'}: {keys.root_certificate}")
    return EXIT_OK


def cmd_ca_add_operator(args: argparse.Namespace) -> int:
    """Certify an operator's first CA."""
    keys = key_directory(data_settings(args).data_dir)
    passphrase = keys.require_passphrase()
    root = keys.load_root(passphrase)
    kind = OperatorKind[args.kind.upper()] if args.kind else None
    record = _with_db(
        args,
        lambda conn: authorities.add_operator_ca(
            conn, root, args.operator, passphrase, base_url=public_base_url(), kind=kind
        ),
    )
    print(f"operator CA for {args.operator}: generation {record.generation}")
    print(f"serial {record.serial_hex}")
    return EXIT_OK


def cmd_ca_rotate_operator(args: argparse.Namespace) -> int:
    """Certify a new key for an operator's CA."""
    keys = key_directory(data_settings(args).data_dir)
    passphrase = keys.require_passphrase()
    root = keys.load_root(passphrase)
    record = _with_db(
        args,
        lambda conn: authorities.rotate_operator_ca(
            conn, root, args.operator, passphrase, base_url=public_base_url()
        ),
    )
    print(f"operator CA for {args.operator}: generation {record.generation}")
    print(f"serial {record.serial_hex}")
    return EXIT_OK


def cmd_ca_revoke_operator(args: argparse.Namespace) -> int:
    """Revoke every key generation of an operator's CA (the root CRL is re-signed)."""
    keys = key_directory(data_settings(args).data_dir)
    root = keys.load_root()
    reason = int(REASONS[args.reason])
    revoked = _with_db(
        args,
        lambda conn: authorities.revoke_operator_ca(conn, root, args.operator, reason_code=reason),
    )
    print(f"revoked {len(revoked)} CA generation(s) of {args.operator}")
    return EXIT_OK


def cmd_ca_crl(args: argparse.Namespace) -> int:
    """Re-sign the root CRL now (the regulator's daily job when the root key is offline)."""
    keys = key_directory(data_settings(args).data_dir)
    root = keys.load_root()
    crl = _with_db(args, lambda conn: authorities.sign_crl(conn, "root", root))
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    print(f"root CRL number {number}, next update {crl.next_update_utc:%Y-%m-%dT%H:%M:%SZ}")
    return EXIT_OK


# -- store ------------------------------------------------------------------------------------


def cmd_store_keygen(args: argparse.Namespace) -> int:
    """Make a store key (encrypted) and a CSR for it."""
    secret = env_default(STORE_PASSPHRASE_ENV)
    if not secret:
        raise UsageError(f"set {STORE_PASSPHRASE_ENV} to the passphrase that protects the key")
    if args.key.exists():
        raise UsageError(f"{args.key} exists; not overwriting a key")
    key = generate_private_key()
    save_private_key(args.key, key, Passphrase(secret))
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, args.name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    args.csr.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    print(f"key written to {args.key}, CSR to {args.csr}")
    return EXIT_OK


def _scope(card_types: str, provinces: str) -> rpb.Scope:
    try:
        types = [CARD_TYPES[name.strip()] for name in card_types.split(",") if name.strip()]
    except KeyError as exc:
        raise UsageError(
            f"unknown card type {exc.args[0]!r}; use personal and/or industry"
        ) from exc
    if provinces.strip() == "all":
        return rpb.Scope(card_types=types, nationwide=True)
    return rpb.Scope(card_types=types, provinces=[p.strip() for p in provinces.split(",")])


def cmd_store_apply(args: argparse.Namespace) -> int:
    """Submit a store's application."""
    qualifications = rpb.Qualifications(
        business_licence_number=args.licence,
        contact=rpb.Contact(
            name=args.contact_name, phone=args.contact_phone, email=args.contact_email or ""
        ),
    )
    if args.certification:
        qualifications.protection_certification = args.certification
    else:
        qualifications.protection_assessment_level = args.assessment_level
    request = rpb.SubmitApplicationRequest(
        operator=args.operator,
        store=rpb.Store(
            shop=rpb.Shop(marketplace=args.marketplace, shop_id=args.shop),
            legal_name=args.legal_name,
            credit_code=args.credit_code,
        ),
        scope=_scope(args.card_types, args.provinces),
        csr=_read(args.csr, "CSR"),
        qualifications=qualifications,
    )
    response = _call(args, lambda stub: stub.SubmitApplication(request))
    _print(response.application)
    return EXIT_OK


def cmd_store_review(args: argparse.Namespace) -> int:
    """Approve or deny an application."""
    request = rpb.ReviewApplicationRequest(
        application_id=args.application_id,
        decision=rpb.REVIEW_DECISION_APPROVE if args.approve else rpb.REVIEW_DECISION_DENY,
        reason=args.reason,
        assessment=args.assessment,
    )
    _print(_call(args, lambda stub: stub.ReviewApplication(request)).application)
    return EXIT_OK


def cmd_store_issue(args: argparse.Namespace) -> int:
    """Issue the authorization of an approved application."""
    request = rpb.IssueAuthorizationRequest(
        application_id=args.application_id, validity_days=args.validity_days
    )
    authorization = _call(args, lambda stub: stub.IssueAuthorization(request)).authorization
    _write_certificate(args.out, authorization)
    _print(_without_certificate(authorization))
    return EXIT_OK


def cmd_store_renew(args: argparse.Namespace) -> int:
    """Renew an authorization (new certificate, new serial)."""
    request = rpb.RenewAuthorizationRequest(
        serial=args.serial,
        csr=_read(args.csr, "CSR") if args.csr else b"",
        validity_days=args.validity_days,
    )
    authorization = _call(args, lambda stub: stub.RenewAuthorization(request)).authorization
    _write_certificate(args.out, authorization)
    _print(_without_certificate(authorization))
    return EXIT_OK


def cmd_store_revoke(args: argparse.Namespace) -> int:
    """Revoke an authorization."""
    request = rpb.RevokeAuthorizationRequest(
        serial=args.serial, reason=REASONS[args.reason], comment=args.comment or ""
    )
    authorization = _call(args, lambda stub: stub.RevokeAuthorization(request)).authorization
    _print(_without_certificate(authorization))
    return EXIT_OK


def cmd_store_show(args: argparse.Namespace) -> int:
    """Show one authorization."""
    request = rpb.GetAuthorizationRequest(serial=args.serial)
    authorization = _call(args, lambda stub: stub.GetAuthorization(request)).authorization
    _write_certificate(args.out, authorization)
    _print(_without_certificate(authorization))
    return EXIT_OK


def cmd_verify_seller(args: argparse.Namespace) -> int:
    """Verify a seller by shop or certificate; exit 0 only when AUTHORIZED."""
    request = rpb.VerifySellerRequest(
        card_type=CARD_TYPES[args.card_type] if args.card_type else cpb.CARD_TYPE_UNSPECIFIED,
        province=args.province or "",
        operator=args.operator or "",
    )
    if args.cert is not None:
        request.certificate = _read(args.cert, "certificate")
    elif args.marketplace and args.shop:
        request.shop.CopyFrom(rpb.Shop(marketplace=args.marketplace, shop_id=args.shop))
    else:
        raise UsageError("give --marketplace and --shop, or --cert")
    verdict = _call(args, lambda stub: stub.VerifySeller(request)).verdict
    _print(verdict)
    return EXIT_OK if verdict.authorized else EXIT_NOT_AUTHORIZED


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command, turning expected failures into a message and an exit code."""
    return guard(command, (UsageError, RegistryError, PkiError, OSError))


def add_registry_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `realname ca …`, `realname store …` and `realname verify-seller`."""
    ca = subparsers.add_parser("ca", help="the regulator root and operator CAs (local, root key)")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)
    p = ca_sub.add_parser("init-root", help="create the regulator root (idempotent)")
    add_data_dir_argument(p)
    p.set_defaults(func=_guarded(cmd_ca_init_root))
    p = ca_sub.add_parser("add-operator", help="certify an operator's CA")
    add_data_dir_argument(p)
    p.add_argument("operator")
    p.add_argument("--kind", choices=["basic", "virtual"], help="needed for unknown operators")
    p.set_defaults(func=_guarded(cmd_ca_add_operator))
    p = ca_sub.add_parser("rotate-operator", help="certify a new key for an operator's CA")
    add_data_dir_argument(p)
    p.add_argument("operator")
    p.set_defaults(func=_guarded(cmd_ca_rotate_operator))
    p = ca_sub.add_parser("revoke-operator", help="revoke an operator's CA (root CRL)")
    add_data_dir_argument(p)
    p.add_argument("operator")
    p.add_argument("--reason", choices=sorted(REASONS), default="privilege-withdrawn")
    p.set_defaults(func=_guarded(cmd_ca_revoke_operator))
    p = ca_sub.add_parser("crl", help="re-sign the root CRL now")
    add_data_dir_argument(p)
    p.set_defaults(func=_guarded(cmd_ca_crl))

    store = subparsers.add_parser("store", help="store applications and authorizations (gRPC)")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    p = store_sub.add_parser("keygen", help=f"make a store key and CSR ({STORE_PASSPHRASE_ENV})")
    p.add_argument("--key", type=Path, required=True, help="where to write the encrypted key")
    p.add_argument("--csr", type=Path, required=True, help="where to write the CSR (PEM)")
    p.add_argument("--name", default="store", help="CSR subject CN (informational)")
    p.set_defaults(func=_guarded(cmd_store_keygen))

    p = store_sub.add_parser("apply", help="submit an application")
    _client_args(p)
    p.add_argument("--operator", required=True)
    p.add_argument("--marketplace", required=True)
    p.add_argument("--shop", required=True)
    p.add_argument("--legal-name", required=True)
    p.add_argument("--credit-code", required=True)
    p.add_argument("--card-types", default="personal", help="personal,industry")
    p.add_argument("--provinces", required=True, help="GB/T 2260 codes, comma-separated, or all")
    p.add_argument("--csr", type=Path, required=True)
    p.add_argument("--licence", required=True, help="business licence number")
    protection = p.add_mutually_exclusive_group(required=True)
    protection.add_argument("--certification", help="information-security certification held")
    protection.add_argument("--assessment-level", type=int, help="graded protection level 1-5")
    p.add_argument("--contact-name", required=True)
    p.add_argument("--contact-phone", required=True)
    p.add_argument("--contact-email")
    p.set_defaults(func=_guarded(cmd_store_apply))

    p = store_sub.add_parser("review", help="approve or deny an application")
    _client_args(p)
    p.add_argument("application_id", type=int)
    decision = p.add_mutually_exclusive_group(required=True)
    decision.add_argument("--approve", action="store_true")
    decision.add_argument("--deny", action="store_true")
    p.add_argument("--reason", required=True)
    p.add_argument("--assessment", required=True)
    p.set_defaults(func=_guarded(cmd_store_review))

    p = store_sub.add_parser("issue", help="issue an approved application's authorization")
    _client_args(p)
    p.add_argument("application_id", type=int)
    p.add_argument("--validity-days", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the certificate (PEM) here")
    p.set_defaults(func=_guarded(cmd_store_issue))

    p = store_sub.add_parser("renew", help="renew an authorization")
    _client_args(p)
    p.add_argument("serial")
    p.add_argument("--csr", type=Path, help="a new CSR (default: reuse the store's key)")
    p.add_argument("--validity-days", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the new certificate (PEM) here")
    p.set_defaults(func=_guarded(cmd_store_renew))

    p = store_sub.add_parser("revoke", help="revoke an authorization")
    _client_args(p)
    p.add_argument("serial")
    p.add_argument("--reason", choices=sorted(REASONS), default="unspecified")
    p.add_argument("--comment")
    p.set_defaults(func=_guarded(cmd_store_revoke))

    p = store_sub.add_parser("show", help="show an authorization")
    _client_args(p)
    p.add_argument("serial")
    p.add_argument("--out", type=Path, help="write the certificate (PEM) here")
    p.set_defaults(func=_guarded(cmd_store_show))

    p = subparsers.add_parser("verify-seller", help="verify a seller (exit 0 iff AUTHORIZED)")
    _client_args(p, default_principal="marketplace-demo")
    p.add_argument("--marketplace")
    p.add_argument("--shop")
    p.add_argument("--cert", type=Path, help="the store certificate, PEM or DER")
    p.add_argument("--card-type", choices=sorted(CARD_TYPES))
    p.add_argument("--province", help="GB/T 2260 province code")
    p.add_argument("--operator", help="only this operator's authorization")
    p.set_defaults(func=_guarded(cmd_verify_seller))
