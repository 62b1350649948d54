"""Registering agents through AgentService, so that test activations can name them."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from services.proto.realname.v1 import agents_pb2 as apb
from services.proto.realname.v1 import agents_pb2_grpc as agrpc


def agent_stub(channel: grpc.Channel) -> agrpc.AgentServiceStub:
    """An AgentService stub on ``channel``."""
    return agrpc.AgentServiceStub(channel)


def register_agents(
    channel: grpc.Channel, ids: Iterable[str], parent: str | None = None
) -> list[apb.Agent]:
    """Registers the calling operator's agents (idempotent), optionally under ``parent``."""
    stub = agent_stub(channel)
    return [
        stub.RegisterAgent(
            apb.RegisterAgentRequest(agent_id=agent_id, parent_agent_id=parent or ""), timeout=10
        ).agent
        for agent_id in ids
    ]
