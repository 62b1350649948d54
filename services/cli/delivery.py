"""`realname bundle export`, `courier verify|sync` and `delivery expire`: cards by courier.

* ``bundle export`` (local, the service's side, database and log): writes the courier's offline
  bundle; operator CRLs that would lapse within max-age are re-signed first, and pending log
  entries are sequenced, so every store's inclusion proof is at the bundle's checkpoint.
* ``courier verify`` (offline, no server): checks a token (from `realname store sign-shipment`)
  and a presented document against a bundle; ``--confirm`` queues the handover in a local file.
* ``courier sync`` (gRPC as a courier): sends queued confirmations through ConfirmDelivery.
* ``delivery expire`` (local): releases cards undelivered past ``REALNAME_DELIVERY_DAYS``.

Exit codes: 0 done (verify: OK), 1 a call failed, 2 bad arguments or local state, 3 the verdict
was not OK.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Final

import grpc

from registry.authz import authorities
from registry.authz.errors import RegistryError
from registry.delivery import (
    DEFAULT_MAX_AGE,
    ConfirmationQueue,
    DeliveryBundle,
    DeliveryVerdict,
    new_confirmation,
    verify_offline,
)
from registry.delivery.errors import DeliveryError
from registry.log.errors import LogError
from registry.pki.errors import PkiError
from registry.subscribers import mask_msisdn
from services.cli.common import (
    DOCUMENT_TYPES,
    EXIT_OK,
    EXIT_REFUSED,
    Command,
    SubParsers,
    UsageError,
    add_address_argument,
    add_document_number_argument,
    add_principal_argument,
    client_channel,
    command_group,
    data_settings,
    describe_rpc_error,
    document_number,
    duration,
    guard,
    read_input,
)
from services.domain.errors import RealnameError
from services.features.delivery import (
    DEFAULT_DELIVERY_DAYS,
    DEFAULT_LOCK_AFTER,
    DeliveryConfig,
    DeliveryDesk,
)
from services.features.delivery_bundle import export_bundle
from services.features.seller_checks import SellerChecks
from services.features.sellers import RegistryConfig
from services.features.transparency import TransparencyLog
from services.proto.realname.v1 import delivery_pb2 as dpb
from services.proto.realname.v1 import delivery_pb2_grpc as dgrpc
from services.runtime.ca_material import key_directory
from services.runtime.config import ConfigError, add_data_dir_argument, env_default
from services.storage.database import Database


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


# -- bundle export ------------------------------------------------------------------------------


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
        text = read_input(Path(text[1:]), "token file").decode("ascii", "replace")
    return text.strip()


def _parcel(verdict: DeliveryVerdict) -> dict[str, str]:
    """What the courier matches against the parcel and the SIM: the token's own fields.

    The MSISDN goes through the one masking rule again, whatever the token carries; the document
    number is never in a token, so never here.
    """
    if verdict.token is None:
        return {}
    fields = verdict.token.fields
    return {
        "order_id": fields.order_id,
        "waybill": fields.waybill,
        "iccid": fields.iccid,
        "msisdn_masked": mask_msisdn(fields.msisdn_masked),
        "expires_at": fields.expires_at.isoformat(),
    }


def cmd_courier_verify(args: argparse.Namespace) -> int:
    """Check a token and a presented document offline; optionally queue the handover.

    Text: the verdict line first (what scripts read), then the parcel's order, waybill, ICCID,
    masked MSISDN and token expiry. ``--json``: one object with the same.
    """
    bundle = DeliveryBundle.load(args.bundle)
    token = _token_text(args)
    if args.confirm and (not args.staff_id or args.queue is None):
        raise UsageError("--confirm needs --staff-id and --queue")
    number = document_number(args)
    verdict = verify_offline(
        token,
        DOCUMENT_TYPES[args.document_type],
        number,
        bundle,
        courier_company=args.courier,
        stale_policy=args.stale,
    )
    parcel = _parcel(verdict)
    if not args.json:
        stale = " (stale bundle)" if verdict.stale_bundle else ""
        print(f"{verdict.reason.value}{stale}: {verdict.detail}")
        if verdict.token is not None:
            fields = verdict.token.fields
            print(f"order: {parcel['order_id']}")
            print(f"waybill: {parcel['waybill']}")
            print(f"iccid: {parcel['iccid']}")
            print(f"msisdn: {parcel['msisdn_masked']}")
            print(f"expires: {fields.expires_at:%Y-%m-%dT%H:%M:%SZ}")
    queued: str | None = None
    if verdict.ok and args.confirm:
        assert verdict.token is not None
        confirmation = new_confirmation(
            verdict.token,
            DOCUMENT_TYPES[args.document_type],
            number,
            courier_staff_id=args.staff_id,
            delivered_at=dt.datetime.now(dt.UTC),
            offline_reason=verdict.reason.value,
            stale_bundle=verdict.stale_bundle,
        )
        ConfirmationQueue(args.queue).append(confirmation)
        queued = confirmation.id
        if not args.json:
            print(f"queued confirmation {confirmation.id}")
    if args.json:
        answer: dict[str, object] = {
            "verdict": verdict.reason.value,
            "detail": verdict.detail,
            "stale_bundle": verdict.stale_bundle,
            **parcel,
            "queued_confirmation": queued,
        }
        print(json.dumps(answer, ensure_ascii=False))
    return EXIT_OK if verdict.ok else EXIT_REFUSED


# Statuses that refuse one confirmation, not the sync (the server is reachable and answering).
_REFUSALS: Final = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
    }
)


def _existing_queue(path: Path) -> ConfirmationQueue:
    """The queue to sync: a missing or unreadable file is a usage error, not an empty queue
    (a mistyped path would otherwise report success and leave the handovers unsynced)."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot read the confirmation queue {path}: {exc.strerror}") from exc
    return ConfirmationQueue(path)


def cmd_courier_sync(args: argparse.Namespace) -> int:
    """Send queued confirmations through ConfirmDelivery; mark each synced."""
    queue = _existing_queue(args.queue)
    refused = 0
    with client_channel(args) as channel:
        stub = dgrpc.DeliveryServiceStub(channel)
        for confirmation in list(queue.pending()):
            request = dpb.ConfirmDeliveryRequest(
                token=confirmation.token,
                presented_commitment=confirmation.presented_commitment,
                courier_staff_id=confirmation.courier_staff_id,
            )
            request.delivered_at.FromDatetime(confirmation.delivered_at)
            try:
                verdict = stub.ConfirmDelivery(request).verdict
            except grpc.RpcError as exc:
                # A confirmation the server refuses as such (its handover time out of bounds,
                # its card gone) must not hold back the ones queued after it; it stays queued.
                if exc.code() not in _REFUSALS:
                    raise
                print(f"{confirmation.id} {describe_rpc_error(exc)}", file=sys.stderr)
                refused += 1
                continue
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
        sellers = SellerChecks(db, RegistryConfig())
        desk = DeliveryDesk(db, sellers, config=delivery_config())
        released = desk.expire(args.at)
    finally:
        db.dispose()
    print(f"released {released} undelivered cards")
    return EXIT_OK


def _guarded(command: Command) -> Command:
    return guard(
        command, ConfigError, DeliveryError, RegistryError, PkiError, LogError, RealnameError
    )


def register(subparsers: SubParsers) -> None:
    """Adds `realname bundle export`, `realname courier …` and `realname delivery expire`."""
    bundle_sub = command_group(subparsers, "bundle", "the courier's offline trust bundle")
    p = bundle_sub.add_parser("export", help="write a bundle from the database and the log")
    add_data_dir_argument(p)
    p.add_argument("--out", type=Path, required=True, help="where to write the bundle (JSON)")
    p.add_argument("--max-age", type=duration, default=DEFAULT_MAX_AGE, help="e.g. 24h")
    p.set_defaults(func=_guarded(cmd_bundle_export))

    courier_sub = command_group(subparsers, "courier", "check parcels at the door")
    p = courier_sub.add_parser("verify", help="check a token offline (exit 0 iff OK)")
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--token", required=True, help="the token text (RN1:…), or @FILE")
    p.add_argument("--courier", required=True, help="your courier company id")
    p.add_argument("--document-type", choices=sorted(DOCUMENT_TYPES), default="resident-id-card")
    add_document_number_argument(p, "as on the document the recipient shows")
    p.add_argument("--stale", choices=("refuse", "warn"), default="refuse")
    p.add_argument("--confirm", action="store_true", help="queue the handover when OK")
    p.add_argument("--staff-id", help="your staff id (with --confirm)")
    p.add_argument("--queue", type=Path, help="the confirmation queue file (with --confirm)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_guarded(cmd_courier_verify))
    p = courier_sub.add_parser("sync", help="send queued confirmations (gRPC)")
    add_data_dir_argument(p)
    p.add_argument("--queue", type=Path, required=True)
    add_address_argument(p)
    add_principal_argument(p, help_text="e.g. courier-demo")
    p.set_defaults(func=_guarded(cmd_courier_sync))

    delivery_sub = command_group(subparsers, "delivery", "delivery administration (local)")
    p = delivery_sub.add_parser("expire", help="release cards undelivered past the window")
    add_data_dir_argument(p)
    p.add_argument("--at", type=_time, default=None, help="as of this time (default now)")
    p.set_defaults(func=_guarded(cmd_delivery_expire))
