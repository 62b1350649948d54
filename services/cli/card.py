"""`realname card reverify MSISDN`: return a card suspended for re-verification to service.

A gRPC call to the running server over mTLS as an operator (``--as``): VerificationService/
ReverifyHolder with the holder's document and, when the operator's proofing policy checks
identities, their name. Prints the card as JSON. Exit codes: 0 done, 1 the call failed
(refusals included, with their reason), 2 bad arguments or local state.
"""

from __future__ import annotations

import argparse
import uuid

import grpc

from services.cli.common import (
    DOCUMENT_TYPES,
    EXIT_OK,
    SubParsers,
    add_client_arguments,
    add_document_number_argument,
    call_server,
    command_group,
    document_number,
    guard,
    print_message,
)
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc


def cmd_reverify(args: argparse.Namespace) -> int:
    """Re-verify a card's holder after their document's block was lifted."""
    kind = DOCUMENT_TYPES[args.document_type]
    request = vpb.ReverifyHolderRequest(
        request_id=args.request_id or f"cli-reverify-{uuid.uuid4().hex}",
        msisdn=args.msisdn,
        document=cpb.Document(type=kind.value, number=document_number(args)),  # type: ignore[arg-type]
        holder_name=args.holder_name or "",
    )

    def call(channel: grpc.Channel) -> vpb.ReverifyHolderResponse:
        return vgrpc.VerificationServiceStub(channel).ReverifyHolder(request, timeout=30)

    print_message(call_server(args, call).card)
    return EXIT_OK


def register(subparsers: SubParsers) -> None:
    """Adds `realname card reverify`."""
    sub = command_group(subparsers, "card", "an operator's cards (gRPC)")
    p = sub.add_parser(
        "reverify", help="return a card suspended for REVERIFICATION to service (holder verified)"
    )
    add_client_arguments(p, "operator-cmcc")
    p.add_argument("msisdn")
    p.add_argument("--document-type", choices=sorted(DOCUMENT_TYPES), default="resident-id-card")
    add_document_number_argument(p, "the card's holder's document")
    p.add_argument("--holder-name", help="as on the document; required by an identity check")
    p.add_argument("--request-id", help="idempotency key for a retry (default: a fresh one)")
    p.set_defaults(func=guard(cmd_reverify))
