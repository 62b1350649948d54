"""`realname store sign-shipment`, `bundle export`, `courier verify|sync`, `delivery expire`.

* ``store sign-shipment`` (local, the store's side): signs a shipment token with the store's
  authorization key (encrypted PKCS#8, passphrase from ``REALNAME_STORE_PASSPHRASE``) and prints
  its text (QR) form.
* ``bundle export`` (local, the service's side, database and log): writes the courier's offline
  bundle; operator CRLs that would lapse within max-age are re-signed first, and pending log
  entries are sequenced, so every store's inclusion proof is at the bundle's checkpoint.
* ``courier verify`` (offline, no server): checks a token and a presented document against a
  bundle; ``--confirm`` queues the handover in a local file.
* ``courier sync`` (gRPC as a courier): sends queued confirmations through ConfirmDelivery.
* ``delivery expire`` (local): releases cards undelivered past ``REALNAME_DELIVERY_DAYS``.

Exit codes: 0 done (verify: OK), 1 a call failed, 2 bad arguments or local state, 3 the verdict
was not OK.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Final

import grpc
from cryptography import x509
from sqlalchemy import Connection, select

from registry.authz import authorities
from registry.authz.errors import RegistryError
from registry.authz.tables import ROOT_ISSUER, authz_authorizations
from registry.delivery import (
    DEFAULT_MAX_AGE,
    ConfirmationQueue,
    DeliveryBundle,
    DocumentType,
    LoggedCertificate,
    encode_text,
    new_confirmation,
    new_shipment,
    sign_shipment,
    verify_offline,
)
from registry.delivery.errors import DeliveryError
from registry.log import storage as log_storage
from registry.log.errors import LogError
from registry.pki.errors import PkiError
from registry.pki.keys import Passphrase, load_private_key
from services.cli_common import data_settings, guard
from services.cli_registry import STORE_PASSPHRASE_ENV, UsageError
from services.domain.errors import RealnameError
from services.features.delivery import (
    DEFAULT_DELIVERY_DAYS,
    DEFAULT_LOCK_AFTER,
    DeliveryConfig,
    DeliveryDesk,
)
from services.features.sellers import RegistryConfig, SellerRegistry
from services.features.transparency import TransparencyLog
from services.proto.realname.v1 import delivery_pb2 as dpb
from services.proto.realname.v1 import delivery_pb2_grpc as dgrpc
from services.runtime.ca_material import key_directory
from services.runtime.config import (
    DEFAULT_GRPC_ADDRESS,
    ConfigError,
    add_data_dir_argument,
    env_default,
)
from services.storage.database import Database

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 3

DOCUMENT_TYPES: Final = {kind.name.lower().replace("_", "-"): kind for kind in DocumentType}
"""Document types by their command-line names (``resident-id-card``, ``passport``, …)."""


def delivery_config() -> DeliveryConfig:
    """The delivery policy from ``REALNAME_DELIVERY_DAYS`` and ``REALNAME_DELIVERY_LOCK_AFTER``."""
    days = env_default("REALNAME_DELIVERY_DAYS", str(DEFAULT_DELIVERY_DAYS)) or ""
    lock_after = env_default("REALNAME_DELIVERY_LOCK_AFTER", str(DEFAULT_LOCK_AFTER)) or ""
    if not days.isdigit() or int(days) < 1 or not lock_after.isdigit() or int(lock_after) < 1:
        raise ConfigError("REALNAME_DELIVERY_DAYS and REALNAME_DELIVERY_LOCK_AFTER must be >= 1")
    return DeliveryConfig(int(lock_after), dt.timedelta(days=int(days)))


def _time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _duration(text: str) -> dt.timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) < 1:
        raise argparse.ArgumentTypeError(f"not a duration like 24h, 90m or 2d: {text!r}")
    return dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def _certificate(data: bytes) -> x509.Certificate:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise UsageError(f"not an X.509 certificate: {exc}") from exc


# -- store sign-shipment ------------------------------------------------------------------------


def cmd_sign_shipment(args: argparse.Namespace) -> int:
    """Sign a shipment token with the store's key; print its text form."""
    secret = env_default(STORE_PASSPHRASE_ENV)
    if not secret:
        raise UsageError(f"set {STORE_PASSPHRASE_ENV} to the store key's passphrase")
    key = load_private_key(args.key, Passphrase(secret))
    certificate = _certificate(_read(args.cert, "store certificate"))
    fields = new_shipment(
        order_id=args.order,
        waybill=args.waybill,
        courier=args.courier,
        iccid=args.iccid,
        msisdn=args.msisdn,
        operator=args.operator,
        store_serial=certificate.serial_number,
        document_type=DOCUMENT_TYPES[args.document_type],
        document_number=args.document_number,
        issued_at=dt.datetime.now(dt.UTC),
        valid_for=args.valid_for,
    )
    token = sign_shipment(fields, key, certificate=certificate)
    print(encode_text(token))
    return EXIT_OK


# -- bundle export ------------------------------------------------------------------------------


def export_bundle(
    db: Database,
    transparency: TransparencyLog,
    keys: authorities.OperatorKeys,
    *,
    now: dt.datetime,
    max_age: dt.timedelta,
) -> DeliveryBundle:
    """Build the courier bundle from the database and the log (re-signing CRLs if needed)."""

    def resign(conn: Connection) -> None:
        if not keys.available:
            return
        for crl in authorities.stored_crls(conn):
            if crl.issuer != ROOT_ISSUER and crl.next_update < now + max_age:
                signer = authorities.crl_signer(conn, crl.issuer, keys)
                authorities.sign_crl(conn, crl.issuer, signer, now=now)

    db.write(resign)
    transparency.sequencer.integrate_now()

    def read(conn: Connection) -> DeliveryBundle:
        snapshot = authorities.load_bundle(conn)
        checkpoint = transparency.reader.latest_checkpoint(conn)
        stores: list[LoggedCertificate] = []
        certificates = conn.execute(select(authz_authorizations.c.certificate)).scalars()
        for der in certificates:
            index = log_storage.index_for_certificate(conn, bytes(der))
            if index is None or index >= checkpoint.size:
                continue
            proof = transparency.reader.inclusion_proof(conn, index, checkpoint.size)
            entry = log_storage.read_entries(conn, index, index + 1)[0][1]
            stores.append(LoggedCertificate(entry, index, tuple(proof.hashes)))
        return DeliveryBundle(
            trust=snapshot.bundle,
            log_origin=transparency.origin,
            log_keys=(transparency.verifier_key,),
            checkpoint=checkpoint.signed_note(),
            issued_at=now,
            max_age=max_age,
            stores=tuple(stores),
        )

    return db.read(read)


def cmd_bundle_export(args: argparse.Namespace) -> int:
    """Write the courier's offline bundle."""
    settings = data_settings(args)
    db = Database(settings.database())
    try:
        transparency = TransparencyLog.open(
            db, settings.data_dir, origin=env_default("REALNAME_LOG_ORIGIN")
        )
        keys = authorities.OperatorKeys(key_directory(settings.data_dir).passphrase())
        bundle = export_bundle(
            db, transparency, keys, now=dt.datetime.now(dt.UTC), max_age=args.max_age
        )
    finally:
        db.dispose()
    bundle.save(args.out)
    print(
        f"bundle written to {args.out}: {len(bundle.stores)} stores, fresh until "
        f"{bundle.fresh_until:%Y-%m-%dT%H:%M:%SZ}"
    )
    return EXIT_OK


# -- courier verify / sync ----------------------------------------------------------------------


def _token_text(args: argparse.Namespace) -> str:
    text: str = args.token
    if text.startswith("@"):
        text = _read(Path(text[1:]), "token file").decode("ascii", "replace")
    return text.strip()


def cmd_courier_verify(args: argparse.Namespace) -> int:
    """Check a token and a presented document offline; optionally queue the handover."""
    bundle = DeliveryBundle.load(args.bundle)
    token = _token_text(args)
    verdict = verify_offline(
        token,
        DOCUMENT_TYPES[args.document_type],
        args.document_number,
        bundle,
        courier_company=args.courier,
        stale_policy=args.stale,
    )
    stale = " (stale bundle)" if verdict.stale_bundle else ""
    print(f"{verdict.reason.value}{stale}: {verdict.detail}")
    if not verdict.ok:
        return EXIT_REFUSED
    if args.confirm:
        if not args.staff_id or args.queue is None:
            raise UsageError("--confirm needs --staff-id and --queue")
        assert verdict.token is not None
        confirmation = new_confirmation(
            verdict.token,
            DOCUMENT_TYPES[args.document_type],
            args.document_number,
            courier_staff_id=args.staff_id,
            delivered_at=dt.datetime.now(dt.UTC),
            offline_reason=verdict.reason.value,
            stale_bundle=verdict.stale_bundle,
        )
        ConfirmationQueue(args.queue).append(confirmation)
        print(f"queued confirmation {confirmation.id}")
    return EXIT_OK


def _channel(args: argparse.Namespace) -> grpc.Channel:
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
    return grpc.secure_channel(
        args.address, credentials, [("grpc.ssl_target_name_override", "localhost")]
    )


def cmd_courier_sync(args: argparse.Namespace) -> int:
    """Send queued confirmations through ConfirmDelivery; mark each synced."""
    queue = ConfirmationQueue(args.queue)
    refused = 0
    with _channel(args) as channel:
        stub = dgrpc.DeliveryServiceStub(channel)
        for confirmation in list(queue.pending()):
            request = dpb.ConfirmDeliveryRequest(
                token=confirmation.token,
                presented_commitment=confirmation.presented_commitment,
                courier_staff_id=confirmation.courier_staff_id,
            )
            request.delivered_at.FromDatetime(confirmation.delivered_at)
            verdict = stub.ConfirmDelivery(request).verdict
            reason = dpb.DeliveryReason.Name(verdict.reason).removeprefix("DELIVERY_REASON_")
            print(f"{confirmation.id} {reason}: {verdict.detail}")
            if verdict.reason == dpb.DELIVERY_REASON_OK:
                queue.mark_synced(confirmation.id)
            else:
                refused += 1
    return EXIT_REFUSED if refused else EXIT_OK


# -- delivery expire ----------------------------------------------------------------------------


def cmd_delivery_expire(args: argparse.Namespace) -> int:
    """Release cards undelivered past the delivery window; print how many."""
    settings = data_settings(args)
    db = Database(settings.database())
    try:
        sellers = SellerRegistry(db, RegistryConfig())
        desk = DeliveryDesk(db, sellers, config=delivery_config())
        released = desk.expire(args.at)
    finally:
        db.dispose()
    print(f"released {released} undelivered cards")
    return EXIT_OK


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    return guard(
        command,
        (UsageError, ConfigError, DeliveryError, RegistryError, PkiError, LogError, RealnameError,
         OSError),
    )  # fmt: skip


def _store_subparsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    store = subparsers.choices["store"]
    for action in store._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("the store command has no subcommands")  # pragma: no cover


def add_delivery_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the delivery commands (after ``add_registry_commands``, which makes ``store``)."""
    doc_names = sorted(DOCUMENT_TYPES)
    p = _store_subparsers(subparsers).add_parser(
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
    p.add_argument("--document-type", choices=doc_names, default="resident-id-card")
    p.add_argument("--document-number", required=True, help="committed to, never in the token")
    p.add_argument("--valid-for", type=_duration, default=dt.timedelta(days=15))
    p.set_defaults(func=_guarded(cmd_sign_shipment))

    bundle = subparsers.add_parser("bundle", help="the courier's offline trust bundle")
    bundle_sub = bundle.add_subparsers(dest="bundle_command", required=True)
    p = bundle_sub.add_parser("export", help="write a bundle from the database and the log")
    add_data_dir_argument(p)
    p.add_argument("--out", type=Path, required=True, help="where to write the bundle (JSON)")
    p.add_argument("--max-age", type=_duration, default=DEFAULT_MAX_AGE, help="e.g. 24h")
    p.set_defaults(func=_guarded(cmd_bundle_export))

    courier = subparsers.add_parser("courier", help="check parcels at the door")
    courier_sub = courier.add_subparsers(dest="courier_command", required=True)
    p = courier_sub.add_parser("verify", help="check a token offline (exit 0 iff OK)")
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--token", required=True, help="the token text (RN1:…), or @FILE")
    p.add_argument("--courier", required=True, help="your courier company id")
    p.add_argument("--document-type", choices=doc_names, default="resident-id-card")
    p.add_argument("--document-number", required=True)
    p.add_argument("--stale", choices=("refuse", "warn"), default="refuse")
    p.add_argument("--confirm", action="store_true", help="queue the handover when OK")
    p.add_argument("--staff-id", help="your staff id (with --confirm)")
    p.add_argument("--queue", type=Path, help="the confirmation queue file (with --confirm)")
    p.set_defaults(func=_guarded(cmd_courier_verify))
    p = courier_sub.add_parser("sync", help="send queued confirmations (gRPC)")
    add_data_dir_argument(p)
    p.add_argument("--queue", type=Path, required=True)
    p.add_argument(
        "--address",
        default=env_default("REALNAME_GRPC_ADDRESS", DEFAULT_GRPC_ADDRESS),
        help="the server's gRPC address (env REALNAME_GRPC_ADDRESS)",
    )
    p.add_argument("--as", dest="principal", required=True, help="e.g. courier-demo")
    p.set_defaults(func=_guarded(cmd_courier_sync))

    delivery = subparsers.add_parser("delivery", help="delivery administration (local)")
    delivery_sub = delivery.add_subparsers(dest="delivery_command", required=True)
    p = delivery_sub.add_parser("expire", help="release cards undelivered past the window")
    add_data_dir_argument(p)
    p.add_argument("--at", type=_time, default=None, help="as of this time (default now)")
    p.set_defaults(func=_guarded(cmd_delivery_expire))
