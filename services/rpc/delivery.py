"""gRPC servicer of realname.v1.DeliveryService: translate, call the delivery desk, translate."""

from __future__ import annotations

import grpc

from registry.delivery import DeliveryVerdict, PresentedCommitment, PresentedDocument, Reason
from registry.delivery.errors import InvalidDocumentError
from registry.subscribers import DocumentType
from services.domain.errors import FieldViolation, InvalidArgument
from services.domain.principal import Role
from services.features.delivery import Delivery, DeliveryDesk
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import delivery_pb2 as dpb
from services.proto.realname.v1 import delivery_pb2_grpc as dgrpc
from services.rpc.convert import datetime_of, timestamp
from services.rpc.interceptor import current_principal
from services.rpc.server import ServiceBinding

DELIVERY_SERVICE = dpb.DESCRIPTOR.services_by_name["DeliveryService"].full_name

_MAX_TOKEN_TEXT = 2000
_MAX_STAFF_ID = 64


def delivery_binding(desk: DeliveryDesk) -> ServiceBinding:
    """The DeliveryService binding: couriers check and confirm, operators unlock."""

    def add(server: grpc.Server) -> None:
        dgrpc.add_DeliveryServiceServicer_to_server(DeliveryServicer(desk), server)

    rules = {
        DELIVERY_SERVICE: frozenset({Role.COURIER}),
        f"{DELIVERY_SERVICE}/UnlockShipment": frozenset({Role.OPERATOR}),
    }
    return ServiceBinding(
        DELIVERY_SERVICE,
        add,
        rules,
        subscriber_data=frozenset({"VerifyDelivery", "ConfirmDelivery", "UnlockShipment"}),
        no_subscriber_data=frozenset(),
    )


def verdict_message(verdict: DeliveryVerdict) -> dpb.DeliveryVerdict:
    """The protobuf verdict for a domain verdict."""
    return dpb.DeliveryVerdict(
        reason=dpb.DeliveryReason.Value(f"DELIVERY_REASON_{verdict.reason.value}"),
        detail=verdict.detail,
        checked_at=timestamp(verdict.checked_at),
        token_digest=verdict.token.digest.hex() if verdict.token is not None else "",
    )


def reason_of(message: dpb.DeliveryVerdict) -> Reason:
    """The domain reason of a protobuf verdict (for clients)."""
    name = dpb.DeliveryReason.Name(message.reason).removeprefix("DELIVERY_REASON_")
    return Reason(name)


def _delivery_message(delivery: Delivery) -> dpb.Delivery:
    return dpb.Delivery(
        token_digest=delivery.token_digest.hex(),
        order_id=delivery.order_id,
        waybill=delivery.waybill,
        courier=delivery.courier,
        courier_staff_id=delivery.courier_staff_id,
        delivered_at=timestamp(delivery.delivered_at),
        iccid=delivery.iccid,
        msisdn_masked=delivery.msisdn_masked,
    )


def _token(token: bytes, text: str) -> bytes | str:
    if token and text:
        raise InvalidArgument([FieldViolation("token_text", "give token or token_text, not both")])
    if not token and not text:
        raise InvalidArgument([FieldViolation("token", "a shipment token is required")])
    if len(text) > _MAX_TOKEN_TEXT or len(token) > _MAX_TOKEN_TEXT:
        raise InvalidArgument([FieldViolation("token", "too long to be a shipment token")])
    return token or text


def _document(document: cpb.Document, path: str) -> PresentedDocument:
    try:
        return PresentedDocument(DocumentType(document.type), document.number)
    except (InvalidDocumentError, ValueError) as exc:
        raise InvalidArgument([FieldViolation(path, str(exc))]) from None


class DeliveryServicer(dgrpc.DeliveryServiceServicer):
    """Exposes the delivery desk to couriers (and the unlock to operators)."""

    def __init__(self, desk: DeliveryDesk) -> None:
        self._desk = desk

    def VerifyDelivery(
        self, request: dpb.VerifyDeliveryRequest, context: grpc.ServicerContext
    ) -> dpb.VerifyDeliveryResponse:
        """Checks a shipment token and the recipient's document."""
        token = _token(request.token, request.token_text)
        presented = _document(request.presented_document, "presented_document")
        verdict = self._desk.verify(current_principal().organisation, token, presented)
        return dpb.VerifyDeliveryResponse(verdict=verdict_message(verdict))

    def ConfirmDelivery(
        self, request: dpb.ConfirmDeliveryRequest, context: grpc.ServicerContext
    ) -> dpb.ConfirmDeliveryResponse:
        """Records a handover (idempotent on the token) and activates the card."""
        token = _token(request.token, request.token_text)
        presented: PresentedDocument | PresentedCommitment
        if request.HasField("presented_commitment"):
            try:
                presented = PresentedCommitment(request.presented_commitment)
            except InvalidDocumentError as exc:
                raise InvalidArgument([FieldViolation("presented_commitment", str(exc))]) from None
        elif request.HasField("presented_document"):
            presented = _document(request.presented_document, "presented_document")
        else:
            raise InvalidArgument(
                [FieldViolation("presented", "presented_document or presented_commitment")]
            )
        staff = request.courier_staff_id
        if not staff or len(staff) > _MAX_STAFF_ID or not staff.isprintable():
            raise InvalidArgument(
                [FieldViolation("courier_staff_id", f"must be 1-{_MAX_STAFF_ID} printable chars")]
            )
        delivered_at = (
            datetime_of(request.delivered_at, "delivered_at")
            if request.HasField("delivered_at")
            else None
        )
        verdict, delivery = self._desk.confirm(
            current_principal().organisation,
            token,
            presented,
            courier_staff_id=staff,
            delivered_at=delivered_at,
        )
        return dpb.ConfirmDeliveryResponse(
            verdict=verdict_message(verdict),
            delivery=_delivery_message(delivery) if delivery is not None else None,
        )

    def UnlockShipment(
        self, request: dpb.UnlockShipmentRequest, context: grpc.ServicerContext
    ) -> dpb.UnlockShipmentResponse:
        """Clears a shipment's mismatch lock (the card's operator only)."""
        try:
            digest = bytes.fromhex(request.token_digest)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise InvalidArgument([FieldViolation("token_digest", "must be 64 hex digits")])
        self._desk.unlock(current_principal().organisation, digest)
        return dpb.UnlockShipmentResponse(token_digest=digest.hex())
