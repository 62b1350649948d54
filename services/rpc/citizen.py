"""gRPC servicers of realname.v1.CitizenService and DisputeService: translate, call, translate."""

from __future__ import annotations

import unicodedata

import grpc

from registry.subscribers import mask_msisdn
from services.domain import validation
from services.domain.errors import Violations
from services.domain.principal import Role
from services.features.citizen import CitizenDesk, Dispute, DisputeReason, HolderCard, Resolution
from services.proto.realname.v1 import citizen_pb2 as cpb
from services.proto.realname.v1 import citizen_pb2_grpc as cgrpc
from services.rpc.convert import card_message, timestamp
from services.rpc.interceptor import current_principal
from services.rpc.server import ServiceBinding

CITIZEN_SERVICE = cpb.DESCRIPTOR.services_by_name["CitizenService"].full_name
DISPUTE_SERVICE = cpb.DESCRIPTOR.services_by_name["DisputeService"].full_name
_MAX_NOTE = 200


def citizen_bindings(desk: CitizenDesk) -> list[ServiceBinding]:
    """CitizenService for the citizen portal; DisputeService for operators."""

    def add_citizen(server: grpc.Server) -> None:
        cgrpc.add_CitizenServiceServicer_to_server(CitizenServicer(desk), server)

    def add_disputes(server: grpc.Server) -> None:
        cgrpc.add_DisputeServiceServicer_to_server(DisputeServicer(desk), server)

    return [
        ServiceBinding(
            CITIZEN_SERVICE,
            add_citizen,
            {CITIZEN_SERVICE: frozenset({Role.CITIZEN_PORTAL})},
            subscriber_data=frozenset({"ListMyCards", "DisputeCard"}),
            no_subscriber_data=frozenset(),
        ),
        ServiceBinding(
            DISPUTE_SERVICE,
            add_disputes,
            {DISPUTE_SERVICE: frozenset({Role.OPERATOR})},
            subscriber_data=frozenset({"ListDisputes", "ResolveDispute"}),
            no_subscriber_data=frozenset(),
        ),
    ]


def my_card_message(item: HolderCard) -> cpb.MyCard:
    """The protobuf MyCard: the card's number masked, never the document."""
    card = card_message(item.card)
    return cpb.MyCard(
        card_ref=item.ref,
        msisdn_masked=mask_msisdn(item.card.msisdn),
        operator=item.card.operator,
        operator_name=item.operator_name,
        card_type=card.card_type,
        state=card.state,
        activated_at=card.activated_at,
        deactivated_at=card.deactivated_at if card.HasField("deactivated_at") else None,
        channel=card.channel,
        open_dispute_id=item.open_dispute_id or "",
    )


def dispute_message(dispute: Dispute, *, full_number: bool) -> cpb.Dispute:
    """The protobuf Dispute; the full number only for the owning operator."""
    return cpb.Dispute(
        dispute_id=dispute.id,
        operator=dispute.operator,
        msisdn_masked=dispute.msisdn_masked,
        msisdn=dispute.msisdn if full_number else "",
        reason=dispute.reason.value,  # type: ignore[arg-type]
        state=cpb.DISPUTE_STATE_OPEN if dispute.open else cpb.DISPUTE_STATE_RESOLVED,
        resolution=0 if dispute.resolution is None else dispute.resolution.value,  # type: ignore[arg-type]
        agent_id=dispute.agent_id or "",
        opened_at=timestamp(dispute.opened_at),
        resolved_at=timestamp(dispute.resolved_at),
        note=dispute.note or "",
    )


class CitizenServicer(cgrpc.CitizenServiceServicer):
    """The citizen portal's view of a person's cards."""

    def __init__(self, desk: CitizenDesk) -> None:
        self._desk = desk

    def ListMyCards(
        self, request: cpb.ListMyCardsRequest, context: grpc.ServicerContext
    ) -> cpb.ListMyCardsResponse:
        """Lists every card under the person's document."""
        v = Violations()
        doc = validation.check_document(
            v, request.document.type, request.document.number, self._desk.today()
        )
        v.raise_if_any()
        assert doc is not None
        return cpb.ListMyCardsResponse(cards=[my_card_message(c) for c in self._desk.my_cards(doc)])

    def DisputeCard(
        self, request: cpb.DisputeCardRequest, context: grpc.ServicerContext
    ) -> cpb.DisputeCardResponse:
        """Opens a dispute of one of the person's cards."""
        v = Violations()
        doc = validation.check_document(
            v, request.document.type, request.document.number, self._desk.today()
        )
        reason = None
        try:
            reason = DisputeReason(request.reason)
        except ValueError:
            v.add("reason", "must be DISPUTE_REASON_NOT_MINE or DISPUTE_REASON_NOT_NEEDED")
        if not request.card_ref:
            v.add("card_ref", "is required")
        v.raise_if_any()
        assert doc is not None and reason is not None
        dispute = self._desk.dispute(doc, request.card_ref, reason)
        return cpb.DisputeCardResponse(dispute=dispute_message(dispute, full_number=False))


class DisputeServicer(cgrpc.DisputeServiceServicer):
    """Operators list and resolve the disputes of their cards."""

    def __init__(self, desk: CitizenDesk) -> None:
        self._desk = desk

    def ListDisputes(
        self, request: cpb.ListDisputesRequest, context: grpc.ServicerContext
    ) -> cpb.ListDisputesResponse:
        """Lists the calling operator's disputes."""
        v = Violations()
        open_only: bool | None = None
        if request.state == cpb.DISPUTE_STATE_OPEN:
            open_only = True
        elif request.state == cpb.DISPUTE_STATE_RESOLVED:
            open_only = False
        elif request.state != cpb.DISPUTE_STATE_UNSPECIFIED:
            v.add("state", "must be a known dispute state")
        if request.limit < 0:
            v.add("limit", "must not be negative")
        v.raise_if_any()
        found = self._desk.disputes(current_principal().organisation, open_only, request.limit)
        return cpb.ListDisputesResponse(
            disputes=[dispute_message(d, full_number=True) for d in found]
        )

    def ResolveDispute(
        self, request: cpb.ResolveDisputeRequest, context: grpc.ServicerContext
    ) -> cpb.ResolveDisputeResponse:
        """Resolves one of the calling operator's open disputes."""
        v = Violations()
        resolution = None
        try:
            resolution = Resolution(request.resolution)
        except ValueError:
            v.add(
                "resolution",
                "must be DISPUTE_RESOLUTION_REVERIFIED or DISPUTE_RESOLUTION_DEACTIVATED",
            )
        if not request.dispute_id:
            v.add("dispute_id", "is required")
        note = request.note
        if len(note) > _MAX_NOTE:
            v.add("note", f"must be at most {_MAX_NOTE} characters")
        elif any(unicodedata.category(ch).startswith("C") for ch in note):
            v.add("note", "must not contain control characters")
        v.raise_if_any()
        assert resolution is not None
        dispute = self._desk.resolve(
            current_principal().organisation, request.dispute_id, resolution, note or None
        )
        return cpb.ResolveDisputeResponse(dispute=dispute_message(dispute, full_number=True))
