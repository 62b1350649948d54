"""`realname store …` and `realname verify-seller`: store authorizations, from both sides.

* ``store keygen`` makes a store key (encrypted PKCS#8, passphrase from
  ``REALNAME_STORE_PASSPHRASE``) and its CSR, locally.
* ``store apply|review|issue|renew|revoke|show`` and ``verify-seller`` are gRPC calls to the
  running server over mTLS, presenting ``<data_dir>/dev-pki/clients/<principal>`` (``--as``).
* ``store sign-shipment`` (local, the store's side): signs a shipment token with the store's
  authorization key (passphrase from ``REALNAME_STORE_PASSPHRASE``) and prints its text (QR)
  form, for the courier to check at the door (`realname courier verify`); ``--qr`` also writes
  it as a QR code (SVG or PNG), ``--label`` as a printable 100 x 150 mm label (SVG).

Exit codes: 0 done (verify-seller: AUTHORIZED), 1 the call failed, 2 bad arguments or local
state, 3 verify-seller's verdict was not AUTHORIZED.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from registry.authz.errors import RegistryError
from registry.delivery import decode_token, encode_text, new_shipment, sign_shipment
from registry.delivery.errors import DeliveryError
from registry.delivery.label import check_label_path, check_qr_path, write_label, write_qr
from registry.pki.errors import PkiError
from registry.pki.keys import Passphrase, generate_private_key, load_private_key, save_private_key
from services.cli.common import (
    DOCUMENT_TYPES,
    EXIT_OK,
    EXIT_REFUSED,
    REASONS,
    Command,
    SubParsers,
    UsageError,
    add_client_arguments,
    add_document_number_argument,
    call_server,
    command_group,
    document_number,
    duration,
    guard,
    print_message,
    read_input,
)
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import registry_pb2 as rpb
from services.proto.realname.v1 import registry_pb2_grpc as rgrpc
from services.runtime.config import env_default

STORE_PASSPHRASE_ENV: Final = "REALNAME_STORE_PASSPHRASE"  # noqa: S105 - a variable name
"""Environment variable with the passphrase that encrypts a store key made by ``keygen``."""

CARD_TYPES: Final = {"personal": cpb.CARD_TYPE_PERSONAL, "industry": cpb.CARD_TYPE_INDUSTRY}

T = TypeVar("T")


def _call(args: argparse.Namespace, rpc: Callable[[rgrpc.RegistryServiceStub], T]) -> T:
    return call_server(args, lambda channel: rpc(rgrpc.RegistryServiceStub(channel)))


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


def _certificate(data: bytes) -> x509.Certificate:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise UsageError(f"not an X.509 certificate: {exc}") from exc


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
        csr=read_input(args.csr, "CSR"),
        qualifications=qualifications,
    )
    response = _call(args, lambda stub: stub.SubmitApplication(request))
    print_message(response.application)
    return EXIT_OK


def cmd_store_review(args: argparse.Namespace) -> int:
    """Approve or deny an application."""
    request = rpb.ReviewApplicationRequest(
        application_id=args.application_id,
        decision=rpb.REVIEW_DECISION_APPROVE if args.approve else rpb.REVIEW_DECISION_DENY,
        reason=args.reason,
        assessment=args.assessment,
    )
    print_message(_call(args, lambda stub: stub.ReviewApplication(request)).application)
    return EXIT_OK


def cmd_store_issue(args: argparse.Namespace) -> int:
    """Issue the authorization of an approved application."""
    request = rpb.IssueAuthorizationRequest(
        application_id=args.application_id, validity_days=args.validity_days
    )
    authorization = _call(args, lambda stub: stub.IssueAuthorization(request)).authorization
    _write_certificate(args.out, authorization)
    print_message(_without_certificate(authorization))
    return EXIT_OK


def cmd_store_renew(args: argparse.Namespace) -> int:
    """Renew an authorization (new certificate, new serial)."""
    request = rpb.RenewAuthorizationRequest(
        serial=args.serial,
        csr=read_input(args.csr, "CSR") if args.csr else b"",
        validity_days=args.validity_days,
    )
    authorization = _call(args, lambda stub: stub.RenewAuthorization(request)).authorization
    _write_certificate(args.out, authorization)
    print_message(_without_certificate(authorization))
    return EXIT_OK


def cmd_store_revoke(args: argparse.Namespace) -> int:
    """Revoke an authorization."""
    request = rpb.RevokeAuthorizationRequest(
        serial=args.serial, reason=REASONS[args.reason], comment=args.comment or ""
    )
    authorization = _call(args, lambda stub: stub.RevokeAuthorization(request)).authorization
    print_message(_without_certificate(authorization))
    return EXIT_OK


def cmd_store_show(args: argparse.Namespace) -> int:
    """Show one authorization."""
    request = rpb.GetAuthorizationRequest(serial=args.serial)
    authorization = _call(args, lambda stub: stub.GetAuthorization(request)).authorization
    _write_certificate(args.out, authorization)
    print_message(_without_certificate(authorization))
    return EXIT_OK


def cmd_sign_shipment(args: argparse.Namespace) -> int:
    """Sign a shipment token with the store's key; print its text form, write QR and label."""
    # A mistyped output name is refused before the key is unlocked and anything is signed.
    if args.qr is not None:
        check_qr_path(args.qr)
    if args.label is not None:
        check_label_path(args.label)
    secret = env_default(STORE_PASSPHRASE_ENV)
    if not secret:
        raise UsageError(f"set {STORE_PASSPHRASE_ENV} to the store key's passphrase")
    key = load_private_key(args.key, Passphrase(secret))
    certificate = _certificate(read_input(args.cert, "store certificate"))
    fields = new_shipment(
        order_id=args.order,
        waybill=args.waybill,
        courier=args.courier,
        iccid=args.iccid,
        msisdn=args.msisdn,
        operator=args.operator,
        store_serial=certificate.serial_number,
        document_type=DOCUMENT_TYPES[args.document_type],
        document_number=document_number(args),
        issued_at=dt.datetime.now(dt.UTC),
        valid_for=args.valid_for,
    )
    token = sign_shipment(fields, key, certificate=certificate)
    if args.qr is not None:
        write_qr(decode_token(token), args.qr)
        print(f"QR code written to {args.qr}", file=sys.stderr)
    if args.label is not None:
        write_label(decode_token(token), args.label)
        print(f"label written to {args.label}", file=sys.stderr)
    print(encode_text(token))
    return EXIT_OK


def cmd_verify_seller(args: argparse.Namespace) -> int:
    """Verify a seller by shop or certificate; exit 0 only when AUTHORIZED."""
    request = rpb.VerifySellerRequest(
        card_type=CARD_TYPES[args.card_type] if args.card_type else cpb.CARD_TYPE_UNSPECIFIED,
        province=args.province or "",
        operator=args.operator or "",
    )
    if args.cert is not None:
        request.certificate = read_input(args.cert, "certificate")
    elif args.marketplace and args.shop:
        request.shop.CopyFrom(rpb.Shop(marketplace=args.marketplace, shop_id=args.shop))
    else:
        raise UsageError("give --marketplace and --shop, or --cert")
    verdict = _call(args, lambda stub: stub.VerifySeller(request)).verdict
    print_message(verdict)
    return EXIT_OK if verdict.authorized else EXIT_REFUSED


def _guarded(command: Command) -> Command:
    return guard(command, RegistryError, PkiError, DeliveryError)


def register(subparsers: SubParsers) -> None:
    """Adds `realname store …` and `realname verify-seller`."""
    store_sub = command_group(subparsers, "store", "store applications and authorizations (gRPC)")
    p = store_sub.add_parser("keygen", help=f"make a store key and CSR ({STORE_PASSPHRASE_ENV})")
    p.add_argument("--key", type=Path, required=True, help="where to write the encrypted key")
    p.add_argument("--csr", type=Path, required=True, help="where to write the CSR (PEM)")
    p.add_argument("--name", default="store", help="CSR subject CN (informational)")
    p.set_defaults(func=_guarded(cmd_store_keygen))

    p = store_sub.add_parser("apply", help="submit an application")
    add_client_arguments(p)
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
    add_client_arguments(p)
    p.add_argument("application_id", type=int)
    decision = p.add_mutually_exclusive_group(required=True)
    decision.add_argument("--approve", action="store_true")
    decision.add_argument("--deny", action="store_true")
    p.add_argument("--reason", required=True)
    p.add_argument("--assessment", required=True)
    p.set_defaults(func=_guarded(cmd_store_review))

    p = store_sub.add_parser("issue", help="issue an approved application's authorization")
    add_client_arguments(p)
    p.add_argument("application_id", type=int)
    p.add_argument("--validity-days", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the certificate (PEM) here")
    p.set_defaults(func=_guarded(cmd_store_issue))

    p = store_sub.add_parser("renew", help="renew an authorization")
    add_client_arguments(p)
    p.add_argument("serial")
    p.add_argument("--csr", type=Path, help="a new CSR (default: reuse the store's key)")
    p.add_argument("--validity-days", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the new certificate (PEM) here")
    p.set_defaults(func=_guarded(cmd_store_renew))

    p = store_sub.add_parser("revoke", help="revoke an authorization")
    add_client_arguments(p)
    p.add_argument("serial")
    p.add_argument("--reason", choices=sorted(REASONS), default="unspecified")
    p.add_argument("--comment")
    p.set_defaults(func=_guarded(cmd_store_revoke))

    p = store_sub.add_parser("show", help="show an authorization")
    add_client_arguments(p)
    p.add_argument("serial")
    p.add_argument("--out", type=Path, help="write the certificate (PEM) here")
    p.set_defaults(func=_guarded(cmd_store_show))

    p = store_sub.add_parser(
        "sign-shipment", help=f"sign a shipment token with the store key ({STORE_PASSPHRASE_ENV})"
    )
    p.add_argument("--key", type=Path, required=True, help="the store's encrypted key")
    p.add_argument("--cert", type=Path, required=True, help="the store's certificate (PEM/DER)")
    p.add_argument("--order", required=True, help="order id")
    p.add_argument("--waybill", required=True, help="waybill number")
    p.add_argument("--courier", required=True, help="courier company id, e.g. demo")
    p.add_argument("--iccid", required=True)
    p.add_argument("--msisdn", required=True, help="the card's number (masked in the token)")
    p.add_argument("--operator", required=True, help="operator id, e.g. cmcc")
    p.add_argument("--document-type", choices=sorted(DOCUMENT_TYPES), default="resident-id-card")
    add_document_number_argument(p, "committed to, never in the token")
    p.add_argument("--valid-for", type=duration, default=dt.timedelta(days=15))
    p.add_argument("--qr", type=Path, help="also write the token as a QR code (.svg or .png)")
    p.add_argument("--label", type=Path, help="also write a printable 100x150 mm label (.svg)")
    p.set_defaults(func=_guarded(cmd_sign_shipment))

    p = subparsers.add_parser("verify-seller", help="verify a seller (exit 0 iff AUTHORIZED)")
    add_client_arguments(p, "marketplace-demo")
    p.add_argument("--marketplace")
    p.add_argument("--shop")
    p.add_argument("--cert", type=Path, help="the store certificate, PEM or DER")
    p.add_argument("--card-type", choices=sorted(CARD_TYPES))
    p.add_argument("--province", help="GB/T 2260 province code")
    p.add_argument("--operator", help="only this operator's authorization")
    p.set_defaults(func=_guarded(cmd_verify_seller))
