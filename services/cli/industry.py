"""`realname enterprise register|list|rebind` and `realname authorize-service CARD`.

Both are gRPC calls to the running server over mTLS as an operator (``--as``).
``authorize-service`` takes an MSISDN, or an ICCID (19-20 digits starting 89), and prints
``allowed`` or ``refused REASON: detail``. Exit codes: 0 done (authorize-service: allowed),
1 the call failed, 2 bad arguments or local state, 3 refused.
"""

from __future__ import annotations

import argparse
import re
import uuid
from typing import Final

import grpc

from registry.authz.errors import RegistryError
from registry.pki.errors import PkiError
from services.cli.common import (
    EXIT_OK,
    EXIT_REFUSED,
    Command,
    SubParsers,
    UsageError,
    add_client_arguments,
    call_server,
    command_group,
    guard,
    print_message,
)
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import industry_pb2 as ipb
from services.proto.realname.v1 import industry_pb2_grpc as igrpc

DOCUMENT_TYPES: Final = {
    cpb.DocumentType.Name(v).removeprefix("DOCUMENT_TYPE_").lower().replace("_", "-"): v
    for v in cpb.DocumentType.values()
    if v
}
SERVICES: Final = {
    "voice": ipb.SERVICE_TYPE_VOICE,
    "sms": ipb.SERVICE_TYPE_SMS,
    "data": ipb.SERVICE_TYPE_DATA,
}
DIRECTIONS: Final = {
    "outgoing": ipb.SESSION_DIRECTION_OUTGOING,
    "incoming": ipb.SESSION_DIRECTION_INCOMING,
}
_ICCID = re.compile(r"89[0-9]{17,18}")


def _scenario(text: str) -> ipb.Scenario:
    name, sep, apns = text.partition("=")
    if not sep or not name or not apns:
        raise argparse.ArgumentTypeError(f"not NAME=APN[,APN…]: {text!r}")
    return ipb.Scenario(name=name, apns=[a for a in apns.split(",") if a])


def _line(e: ipb.Enterprise) -> str:
    scenarios = "; ".join(f"{s.name}={','.join(s.apns)}" for s in e.scenarios)
    return (
        f"{e.credit_code}  {e.name}  cards {e.active_cards}/{e.card_quota}  "
        f"responsible {e.responsible_document_masked}  {scenarios}"
    )


def cmd_register(args: argparse.Namespace) -> int:
    """Register an enterprise with the calling operator."""
    request = ipb.RegisterEnterpriseRequest(
        credit_code=args.credit_code,
        name=args.name,
        responsible_person=cpb.Document(
            type=DOCUMENT_TYPES[args.responsible_type], number=args.responsible_number
        ),
        scenarios=args.scenario,
        card_quota=args.quota,
    )

    def call(channel: grpc.Channel) -> ipb.RegisterEnterpriseResponse:
        return igrpc.EnterpriseServiceStub(channel).RegisterEnterprise(request, timeout=30)

    enterprise = call_server(args, call).enterprise
    print(f"registered {_line(enterprise)}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    """List the calling operator's enterprises."""

    def every(channel: grpc.Channel) -> list[ipb.Enterprise]:
        stub = igrpc.EnterpriseServiceStub(channel)
        found: list[ipb.Enterprise] = []
        token = ""
        while True:
            page = stub.ListEnterprises(
                ipb.ListEnterprisesRequest(page_size=500, page_token=token), timeout=30
            )
            found.extend(page.enterprises)
            token = page.next_page_token
            if not token:
                return found

    for enterprise in call_server(args, every):
        print(_line(enterprise))
    return EXIT_OK


def cmd_rebind(args: argparse.Namespace) -> int:
    """Bind an industry card to a new device, lifting a DEVICE_MISMATCH suspension."""
    request = ipb.RebindDeviceRequest(
        request_id=args.request_id or f"cli-rebind-{uuid.uuid4().hex}",
        msisdn=args.msisdn,
        imei=args.imei,
    )

    def call(channel: grpc.Channel) -> ipb.RebindDeviceResponse:
        return igrpc.EnterpriseServiceStub(channel).RebindDevice(request, timeout=30)

    print_message(call_server(args, call).card)
    return EXIT_OK


def cmd_authorize_service(args: argparse.Namespace) -> int:
    """Ask whether a card may use a service now; exit 0 when allowed, 3 when refused."""
    request = ipb.AuthorizeServiceRequest(
        service=SERVICES[args.service],
        direction=DIRECTIONS[args.direction],
        imei=args.imei or "",
        apn=args.apn or "",
    )
    if _ICCID.fullmatch(args.card):
        request.iccid = args.card
    elif args.card.isdigit():
        request.msisdn = args.card
    else:
        raise UsageError(f"not an MSISDN or ICCID: {args.card!r}")
    answer = call_server(
        args, lambda ch: igrpc.NetworkServiceStub(ch).AuthorizeService(request, timeout=30)
    )
    if answer.allowed:
        print("allowed")
        return EXIT_OK
    print(f"refused {answer.reason}: {answer.detail}")
    return EXIT_REFUSED


def _guarded(command: Command) -> Command:
    return guard(command, RegistryError, PkiError)


def register(sub: SubParsers) -> None:
    """Adds `realname enterprise …` and `realname authorize-service`."""
    esub = command_group(sub, "enterprise", "enterprises that buy industry cards (gRPC)")
    p = esub.add_parser("register", help="register an enterprise with the calling operator")
    add_client_arguments(p, "operator-cmcc")
    p.add_argument("credit_code", help="unified social credit code (18 characters)")
    p.add_argument("--name", required=True)
    p.add_argument("--responsible-type", choices=sorted(DOCUMENT_TYPES), default="resident-id-card")
    p.add_argument("--responsible-number", required=True, help="stored only as a pseudonym")
    p.add_argument(
        "--scenario",
        type=_scenario,
        action="append",
        required=True,
        help="NAME=APN[,APN…], e.g. bus-card=bus.iot (repeat for more)",
    )
    p.add_argument("--quota", type=int, required=True, help="most live industry cards")
    p.set_defaults(func=_guarded(cmd_register))
    p = esub.add_parser("list", help="the calling operator's enterprises")
    add_client_arguments(p, "operator-cmcc")
    p.set_defaults(func=_guarded(cmd_list))
    p = esub.add_parser(
        "rebind", help="bind an industry card to a new device (lifts DEVICE_MISMATCH)"
    )
    add_client_arguments(p, "operator-cmcc")
    p.add_argument("msisdn", help="the industry card's MSISDN")
    p.add_argument("--imei", required=True, help="the new device's IMEI or IMEISV")
    p.add_argument("--request-id", help="idempotency key for a retry (default: a fresh one)")
    p.set_defaults(func=_guarded(cmd_rebind))

    p = sub.add_parser(
        "authorize-service", help="may a card use voice, SMS or data now? (exit 0 iff allowed)"
    )
    add_client_arguments(p, "operator-cmcc")
    p.add_argument("card", help="the card's MSISDN or ICCID")
    p.add_argument("--service", choices=sorted(SERVICES), required=True)
    p.add_argument("--direction", choices=sorted(DIRECTIONS), default="outgoing")
    p.add_argument("--imei", help="the device's IMEI or IMEISV")
    p.add_argument("--apn", help="the data session's APN")
    p.set_defaults(func=_guarded(cmd_authorize_service))
