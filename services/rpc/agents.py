"""gRPC servicer of realname.v1.AgentService: translate, call the agent desk, translate."""

from __future__ import annotations

import grpc

from services.domain.errors import FieldViolation, InvalidArgument
from services.domain.principal import Role
from services.features.agents import Agent, AgentDesk, AgentFilter, Signal, SignalFilter
from services.proto.realname.v1 import agents_pb2 as apb
from services.proto.realname.v1 import agents_pb2_grpc as agrpc
from services.rpc.convert import datetime_of, timestamp
from services.rpc.interceptor import current_principal
from services.rpc.server import ServiceBinding

AGENT_SERVICE = apb.DESCRIPTOR.services_by_name["AgentService"].full_name

DEFAULT_PAGE = 100
MAX_PAGE = 1000
_DEFAULT_KIND = "SHOP"


def agent_binding(desk: AgentDesk) -> ServiceBinding:
    """The AgentService binding: operators only."""

    def add(server: grpc.Server) -> None:
        agrpc.add_AgentServiceServicer_to_server(AgentServicer(desk), server)

    return ServiceBinding(
        AGENT_SERVICE,
        add,
        {AGENT_SERVICE: frozenset({Role.OPERATOR})},
        # Per-document signals name a document (its pseudonym and masked number).
        subscriber_data=frozenset({"ListAgentSignals"}),
        no_subscriber_data=frozenset(
            {"RegisterAgent", "GetAgent", "ListAgents", "SuspendAgent", "ReinstateAgent"}
        ),
    )


def agent_message(agent: Agent) -> apb.Agent:
    """The protobuf form of an agent."""
    return apb.Agent(
        agent_id=agent.agent_id,
        parent_agent_id=agent.parent_id or "",
        name=agent.name,
        kind=apb.AgentKind.Value(f"AGENT_KIND_{agent.kind}"),
        status=apb.AgentStatus.Value(f"AGENT_STATUS_{agent.status}"),
        suspension_reason=agent.suspension_reason or "",
        registered_at=timestamp(agent.registered_at),
        suspended_at=timestamp(agent.suspended_at),
        operator=agent.operator,
    )


def signal_message(signal: Signal) -> apb.AgentSignal:
    """The protobuf form of a signal."""
    return apb.AgentSignal(
        id=signal.id,
        agent_id=signal.agent_id,
        kind=signal.kind,
        subject=signal.subject,
        subject_masked=signal.subject_masked or "",
        value=signal.value,
        threshold=signal.threshold,
        window_seconds=signal.window_seconds,
        window_start=timestamp(signal.window_start),
        at=timestamp(signal.at),
        detail=signal.detail or "",
    )


def _page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return min(value or DEFAULT_PAGE, MAX_PAGE)


def _enum_name(names: dict[int, str], value: int, prefix: str, path: str) -> str:
    name = names.get(value)
    if name is None:
        raise InvalidArgument([FieldViolation(path, f"unknown value {value}")])
    return name.removeprefix(prefix)


_KINDS = {v.number: v.name for v in apb.AgentKind.DESCRIPTOR.values}
_STATUSES = {v.number: v.name for v in apb.AgentStatus.DESCRIPTOR.values}


def _operator() -> str:
    return current_principal().organisation


class AgentServicer(agrpc.AgentServiceServicer):
    """Exposes the agent desk to operators."""

    def __init__(self, desk: AgentDesk) -> None:
        self._desk = desk

    def RegisterAgent(
        self, request: apb.RegisterAgentRequest, context: grpc.ServicerContext
    ) -> apb.RegisterAgentResponse:
        """Registers one of the caller's agents."""
        kind = _enum_name(_KINDS, request.kind, "AGENT_KIND_", "kind")
        agent = self._desk.register(
            _operator(),
            request.agent_id,
            request.parent_agent_id or None,
            request.name,
            _DEFAULT_KIND if kind == "UNSPECIFIED" else kind,
        )
        return apb.RegisterAgentResponse(agent=agent_message(agent))

    def GetAgent(
        self, request: apb.GetAgentRequest, context: grpc.ServicerContext
    ) -> apb.GetAgentResponse:
        """Returns one of the caller's agents."""
        return apb.GetAgentResponse(
            agent=agent_message(self._desk.get(_operator(), request.agent_id))
        )

    def ListAgents(
        self, request: apb.ListAgentsRequest, context: grpc.ServicerContext
    ) -> apb.ListAgentsResponse:
        """Lists the caller's agents, a page at a time."""
        size = _page_size(request.page_size)
        status = _enum_name(_STATUSES, request.status, "AGENT_STATUS_", "status")
        agents = self._desk.agents(
            _operator(),
            AgentFilter(
                after=request.page_token,
                limit=size + 1,
                status=None if status == "UNSPECIFIED" else status,
                parent_id=request.parent_agent_id or None,
            ),
        )
        more = len(agents) > size
        agents = agents[:size]
        return apb.ListAgentsResponse(
            agents=[agent_message(a) for a in agents],
            next_page_token=agents[-1].agent_id if more else "",
        )

    def SuspendAgent(
        self, request: apb.SuspendAgentRequest, context: grpc.ServicerContext
    ) -> apb.SuspendAgentResponse:
        """Suspends one of the caller's agents."""
        agent = self._desk.suspend(_operator(), request.agent_id, request.reason)
        return apb.SuspendAgentResponse(agent=agent_message(agent))

    def ReinstateAgent(
        self, request: apb.ReinstateAgentRequest, context: grpc.ServicerContext
    ) -> apb.ReinstateAgentResponse:
        """Reinstates one of the caller's agents."""
        agent = self._desk.reinstate(_operator(), request.agent_id)
        return apb.ReinstateAgentResponse(agent=agent_message(agent))

    def ListAgentSignals(
        self, request: apb.ListAgentSignalsRequest, context: grpc.ServicerContext
    ) -> apb.ListAgentSignalsResponse:
        """Lists signals against the caller's agents, newest first."""
        size = _page_size(request.page_size)
        before: int | None = None
        if request.page_token:
            # A token is a signal id: digits, within a 63-bit row id (SQLite's INTEGER).
            token = request.page_token
            if not token.isascii() or not token.isdigit() or len(token) > 18:
                raise InvalidArgument([FieldViolation("page_token", "not a token of this list")])
            before = int(token)
        since = datetime_of(request.since, "since") if request.HasField("since") else None
        signals = self._desk.signals(
            _operator(),
            SignalFilter(
                agent_id=request.agent_id or None,
                kind=request.kind or None,
                since=since,
                before_id=before,
                limit=size + 1,
            ),
        )
        more = len(signals) > size
        signals = signals[:size]
        return apb.ListAgentSignalsResponse(
            signals=[signal_message(s) for s in signals],
            next_page_token=str(signals[-1].id) if more else "",
        )
