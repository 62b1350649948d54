"""gRPC servicers of realname.v1.EnterpriseService and NetworkService: translate only."""

from __future__ import annotations

import grpc

from services.domain import validation
from services.domain.errors import Violations
from services.domain.numbers import iccid_problem
from services.domain.principal import Role
from services.domain.records import EnterpriseRow
from services.features.cards import CardDesk, RebindDevice
from services.features.industry import (
    DEFAULT_PAGE,
    MAX_PAGE,
    EnterpriseDesk,
    apn_problem,
    check_scenarios,
    register_command,
)
from services.features.service_authorization import (
    Direction,
    ServiceAuthorizer,
    ServiceType,
    SessionQuery,
)
from services.proto.realname.v1 import industry_pb2 as ipb
from services.proto.realname.v1 import industry_pb2_grpc as igrpc
from services.rpc.convert import card_message, timestamp
from services.rpc.interceptor import current_principal
from services.rpc.server import ServiceBinding

ENTERPRISE_SERVICE = ipb.DESCRIPTOR.services_by_name["EnterpriseService"].full_name
NETWORK_SERVICE = ipb.DESCRIPTOR.services_by_name["NetworkService"].full_name


def enterprise_binding(desk: EnterpriseDesk, cards: CardDesk) -> ServiceBinding:
    """The EnterpriseService binding: operators, on their own enterprises and industry cards."""

    def add(server: grpc.Server) -> None:
        igrpc.add_EnterpriseServiceServicer_to_server(EnterpriseServicer(desk, cards), server)

    return ServiceBinding(
        ENTERPRISE_SERVICE,
        add,
        {ENTERPRISE_SERVICE: frozenset({Role.OPERATOR})},
        # An enterprise names its responsible person (document pseudonym and masked number).
        subscriber_data=frozenset(
            {
                "RegisterEnterprise",
                "GetEnterprise",
                "ListEnterprises",
                "UpdateScenarios",
                "RebindDevice",
            }
        ),
        no_subscriber_data=frozenset(),
    )


def network_binding(authorizer: ServiceAuthorizer) -> ServiceBinding:
    """The NetworkService binding: operators' network elements, on their own cards."""

    def add(server: grpc.Server) -> None:
        igrpc.add_NetworkServiceServicer_to_server(NetworkServicer(authorizer), server)

    return ServiceBinding(
        NETWORK_SERVICE,
        add,
        {NETWORK_SERVICE: frozenset({Role.OPERATOR})},
        subscriber_data=frozenset({"AuthorizeService"}),  # reads a card; may suspend it
        no_subscriber_data=frozenset(),
    )


def enterprise_message(row: EnterpriseRow) -> ipb.Enterprise:
    """The protobuf Enterprise of a stored enterprise."""
    return ipb.Enterprise(
        credit_code=row.credit_code,
        name=row.name,
        responsible_document_type=row.responsible_type.value,  # type: ignore[arg-type]
        responsible_document_masked=row.responsible_masked,
        scenarios=[ipb.Scenario(name=s.name, apns=list(s.apns)) for s in row.scenarios],
        card_quota=row.card_quota,
        active_cards=row.active,
        registered_at=timestamp(row.registered_at),
    )


def _scenarios(messages: list[ipb.Scenario]) -> list[tuple[str, list[str]]]:
    return [(m.name, list(m.apns)) for m in messages]


def _credit_code(code: str) -> str:
    v = Violations()
    canonical = validation.check_credit_code(v, code, "credit_code")
    v.raise_if_any()
    assert canonical is not None
    return canonical


class EnterpriseServicer(igrpc.EnterpriseServiceServicer):
    """Exposes the enterprise desk to operators."""

    def __init__(self, desk: EnterpriseDesk, cards: CardDesk) -> None:
        self._desk = desk
        self._cards = cards

    def RegisterEnterprise(
        self, request: ipb.RegisterEnterpriseRequest, context: grpc.ServicerContext
    ) -> ipb.RegisterEnterpriseResponse:
        """Registers an enterprise with the caller."""
        cmd = register_command(
            credit_code=request.credit_code,
            name=request.name,
            document_type=request.responsible_person.type,
            document_number=request.responsible_person.number,
            scenarios=_scenarios(list(request.scenarios)),
            card_quota=request.card_quota,
            today=self._desk.today(),
        )
        row = self._desk.register(current_principal().organisation, cmd)
        return ipb.RegisterEnterpriseResponse(enterprise=enterprise_message(row))

    def GetEnterprise(
        self, request: ipb.GetEnterpriseRequest, context: grpc.ServicerContext
    ) -> ipb.GetEnterpriseResponse:
        """Returns one of the caller's enterprises."""
        row = self._desk.get(current_principal().organisation, _credit_code(request.credit_code))
        return ipb.GetEnterpriseResponse(enterprise=enterprise_message(row))

    def ListEnterprises(
        self, request: ipb.ListEnterprisesRequest, context: grpc.ServicerContext
    ) -> ipb.ListEnterprisesResponse:
        """Lists the caller's enterprises, a page at a time."""
        v = Violations()
        if not 0 <= request.page_size <= MAX_PAGE:
            v.add("page_size", f"must be 0-{MAX_PAGE}")
        after = request.page_token
        if after:
            after = validation.check_credit_code(v, after, "page_token") or ""
        v.raise_if_any()
        size = request.page_size or DEFAULT_PAGE
        rows = self._desk.list(current_principal().organisation, after, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return ipb.ListEnterprisesResponse(
            enterprises=[enterprise_message(r) for r in rows],
            next_page_token=rows[-1].credit_code if more else "",
        )

    def UpdateScenarios(
        self, request: ipb.UpdateScenariosRequest, context: grpc.ServicerContext
    ) -> ipb.UpdateScenariosResponse:
        """Replaces the declared scenarios of one of the caller's enterprises."""
        v = Violations()
        code = validation.check_credit_code(v, request.credit_code, "credit_code")
        scenarios = check_scenarios(v, _scenarios(list(request.scenarios)))
        v.raise_if_any()
        assert code is not None
        row = self._desk.update_scenarios(current_principal().organisation, code, scenarios)
        return ipb.UpdateScenariosResponse(enterprise=enterprise_message(row))

    def RebindDevice(
        self, request: ipb.RebindDeviceRequest, context: grpc.ServicerContext
    ) -> ipb.RebindDeviceResponse:
        """Binds one of the caller's industry cards to another device."""
        v = Violations()
        rid = validation.check_request_id(v, request.request_id)
        msisdn = validation.check_msisdn(v, request.msisdn)
        imei = validation.check_imei(v, request.imei)
        if imei is None and not request.imei:
            v.add("imei", "give the new device's IMEI")
        v.raise_if_any()
        assert rid and msisdn and imei
        card = self._cards.rebind_device(
            current_principal().organisation, RebindDevice(rid, msisdn, imei)
        )
        return ipb.RebindDeviceResponse(card=card_message(card))


class NetworkServicer(igrpc.NetworkServiceServicer):
    """Exposes the per-session service decision to operators' network elements."""

    def __init__(self, authorizer: ServiceAuthorizer) -> None:
        self._authorizer = authorizer

    def AuthorizeService(
        self, request: ipb.AuthorizeServiceRequest, context: grpc.ServicerContext
    ) -> ipb.AuthorizeServiceResponse:
        """Answers whether the card may use the service now."""
        verdict = self._authorizer.authorize(
            current_principal().organisation, session_query(request)
        )
        return ipb.AuthorizeServiceResponse(
            allowed=verdict.allowed, reason=verdict.reason, detail=verdict.detail
        )


def session_query(request: ipb.AuthorizeServiceRequest) -> SessionQuery:
    """The validated question of an AuthorizeService request, or InvalidArgument."""
    v = Violations()
    which = request.WhichOneof("card")
    by, value = "msisdn", ""
    if which == "msisdn":
        value = validation.check_msisdn(v, request.msisdn) or ""
    elif which == "iccid":
        by, value = "iccid", request.iccid
        problem = iccid_problem(request.iccid)
        if problem is not None:
            v.add("iccid", problem)
    else:
        v.add("card", "give the card's msisdn or iccid")
    services = {s.value: s for s in ServiceType}
    service = services.get(request.service, ServiceType.DATA)
    if request.service not in services:
        v.add("service", "must be SERVICE_TYPE_VOICE, SERVICE_TYPE_SMS or SERVICE_TYPE_DATA")
    direction = Direction.OUTGOING  # unspecified: the stricter
    if request.direction == ipb.SESSION_DIRECTION_INCOMING:
        direction = Direction.INCOMING
    elif request.direction not in (ipb.SESSION_DIRECTION_OUTGOING, 0):
        v.add("direction", "must be SESSION_DIRECTION_OUTGOING or SESSION_DIRECTION_INCOMING")
    imei = validation.check_imei(v, request.imei)
    apn = request.apn.lower() or None
    if apn is not None:
        problem = apn_problem(apn)
        if problem is not None:
            v.add("apn", problem)
    v.raise_if_any()
    return SessionQuery(by, value, service, direction, imei, apn)
