"""gRPC servicer of realname.v1.VerificationService: translate, call the registry, translate."""

from __future__ import annotations

import grpc

from services.domain import validation
from services.domain.errors import Violations
from services.domain.holder_names import holder_name_problem
from services.features.cards import CardDesk, ReverifyHolder, TransferCard
from services.proto.realname.v1 import verification_pb2 as vpb
from services.proto.realname.v1 import verification_pb2_grpc as vgrpc
from services.rpc.convert import card_message, channel_fields
from services.rpc.interceptor import current_principal
from services.rpc.proofing import attestation_of


class VerificationServicer(vgrpc.VerificationServiceServicer):
    """Exposes the card desk to operators."""

    def __init__(self, registry: CardDesk) -> None:
        self._registry = registry

    def CheckEligibility(
        self, request: vpb.CheckEligibilityRequest, context: grpc.ServicerContext
    ) -> vpb.CheckEligibilityResponse:
        """Reports whether the document may get another card from the caller."""
        v = Violations()
        doc = validation.check_document(
            v, request.document.type, request.document.number, self._registry.today()
        )
        has_binding = request.HasField("industry")
        card_type = validation.check_card_type(v, request.card_type, industry=has_binding)
        binding = None
        if has_binding and card_type is not None:
            binding = validation.check_industry_binding(v, *industry_fields(request.industry))
        v.raise_if_any()
        assert doc is not None and card_type is not None
        answer = self._registry.check_eligibility(
            current_principal().organisation, doc, card_type, binding
        )
        return vpb.CheckEligibilityResponse(
            eligible=answer.eligible,
            active_cards=answer.active_cards,
            limit=answer.limit,
            reason=answer.reason,
        )

    def ActivateCard(
        self, request: vpb.ActivateCardRequest, context: grpc.ServicerContext
    ) -> vpb.ActivateCardResponse:
        """Activates a card for a document within the caller's cap."""
        agent_id, serial = channel_fields(request.channel)
        cmd = validation.activate_command(
            request_id=request.request_id,
            document_type=request.document.type,
            document_number=request.document.number,
            msisdn=request.msisdn,
            iccid=request.iccid,
            card_type=request.card_type,
            agent_id=agent_id,
            store_serial=serial,
            today=self._registry.today(),
            industry=industry_fields(request.industry) if request.HasField("industry") else None,
            holder_name=request.holder_name,
            attestation=attestation_of(request),
        )
        card = self._registry.activate(current_principal().organisation, cmd)
        return vpb.ActivateCardResponse(card=card_message(card))

    def DeactivateCard(
        self, request: vpb.DeactivateCardRequest, context: grpc.ServicerContext
    ) -> vpb.DeactivateCardResponse:
        """Deactivates one of the caller's cards."""
        cmd = validation.deactivate_command(request_id=request.request_id, msisdn=request.msisdn)
        card = self._registry.deactivate(current_principal().organisation, cmd)
        return vpb.DeactivateCardResponse(card=card_message(card))

    def GetCard(
        self, request: vpb.GetCardRequest, context: grpc.ServicerContext
    ) -> vpb.GetCardResponse:
        """Returns one of the caller's cards by MSISDN."""
        v = Violations()
        msisdn = validation.check_msisdn(v, request.msisdn)
        v.raise_if_any()
        assert msisdn is not None
        card = self._registry.get_card(current_principal().organisation, msisdn)
        return vpb.GetCardResponse(card=card_message(card))

    def ListCards(
        self, request: vpb.ListCardsRequest, context: grpc.ServicerContext
    ) -> vpb.ListCardsResponse:
        """Lists the caller's cards for a document."""
        v = Violations()
        doc = validation.check_document(
            v, request.document.type, request.document.number, self._registry.today()
        )
        v.raise_if_any()
        assert doc is not None
        cards = self._registry.list_cards(current_principal().organisation, doc)
        return vpb.ListCardsResponse(cards=[card_message(c) for c in cards])

    def TransferCard(
        self, request: vpb.TransferCardRequest, context: grpc.ServicerContext
    ) -> vpb.TransferCardResponse:
        """Moves one of the caller's personal cards to a new holder."""
        v = Violations()
        rid = validation.check_request_id(v, request.request_id)
        msisdn = validation.check_msisdn(v, request.msisdn)
        doc = validation.check_document(
            v,
            request.new_document.type,
            request.new_document.number,
            self._registry.today(),
            "new_document",
        )
        name = request.new_holder_name
        name_problem = holder_name_problem(name) if name else None
        if name_problem is not None:
            v.add("new_holder_name", name_problem)
        v.raise_if_any()
        assert rid and msisdn and doc
        card = self._registry.transfer(
            current_principal().organisation, TransferCard(rid, msisdn, doc, name or None)
        )
        return vpb.TransferCardResponse(card=card_message(card))

    def ReverifyHolder(
        self, request: vpb.ReverifyHolderRequest, context: grpc.ServicerContext
    ) -> vpb.ReverifyHolderResponse:
        """Returns one of the caller's cards suspended for re-verification to service."""
        v = Violations()
        rid = validation.check_request_id(v, request.request_id)
        msisdn = validation.check_msisdn(v, request.msisdn)
        doc = validation.check_document(
            v, request.document.type, request.document.number, self._registry.today()
        )
        name = request.holder_name
        name_problem = holder_name_problem(name) if name else None
        if name_problem is not None:
            v.add("holder_name", name_problem)
        v.raise_if_any()
        assert rid and msisdn and doc
        card = self._registry.reverify(
            current_principal().organisation, ReverifyHolder(rid, msisdn, doc, name or None)
        )
        return vpb.ReverifyHolderResponse(card=card_message(card))


def industry_fields(binding: vpb.IndustryBinding) -> tuple[str, str, str]:
    """The (enterprise_id, scenario, imei) an IndustryBinding message carries."""
    return binding.enterprise_id, binding.scenario, binding.imei
