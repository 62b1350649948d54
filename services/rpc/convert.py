"""Translation between protobuf messages and domain values (no rules live here)."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

from services.domain.cards import AgentSale, Card, IndustryBinding, OnlineSale
from services.domain.errors import FieldViolation, InvalidArgument
from services.proto.realname.v1 import verification_pb2 as vpb


def datetime_of(value: timestamp_pb2.Timestamp, field: str) -> dt.datetime:
    """An aware datetime from a request's Timestamp; INVALID_ARGUMENT when out of range."""
    try:
        return value.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument([FieldViolation(field, "must be a valid timestamp")]) from None


def timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp for an aware datetime, or None."""
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def card_message(card: Card) -> vpb.Card:
    """The protobuf Card for a domain card."""
    if isinstance(card.channel, AgentSale):
        channel = vpb.SalesChannel(agent=vpb.AgentChannel(agent_id=card.channel.agent_id))
    elif isinstance(card.channel, OnlineSale):
        channel = vpb.SalesChannel(
            online=vpb.OnlineChannel(
                store_authorization_serial=card.channel.store_authorization_serial
            )
        )
    else:
        channel = vpb.SalesChannel(legacy=vpb.LegacyChannel(import_id=card.channel.import_id))
    return vpb.Card(
        msisdn=card.msisdn,
        iccid=card.iccid,
        operator=card.operator,
        card_type=card.card_type.value,  # type: ignore[arg-type]
        state=vpb.CardState.Value(f"CARD_STATE_{card.state.value}"),
        document_type=0 if card.document_type is None else card.document_type.value,  # type: ignore[arg-type]
        document_masked=card.document_masked,
        channel=channel,
        activated_at=timestamp(card.activated_at),
        deactivated_at=timestamp(card.deactivated_at),
        verified=card.verified,
        service_stage=card.service_stage.value,  # type: ignore[arg-type]
        suspension=card.suspension or "",
        industry=industry_message(card.industry),
    )


def industry_message(binding: IndustryBinding | None) -> vpb.IndustryBinding | None:
    """The protobuf IndustryBinding of an industry card, or None."""
    if binding is None:
        return None
    return vpb.IndustryBinding(
        enterprise_id=binding.enterprise_id, scenario=binding.scenario, imei=binding.imei or ""
    )


def channel_fields(channel: vpb.SalesChannel) -> tuple[str | None, str | None]:
    """The (agent_id, store serial) pair a SalesChannel carries; at most one is set."""
    which = channel.WhichOneof("channel")
    if which == "agent":
        return channel.agent.agent_id, None
    if which == "online":
        return None, channel.online.store_authorization_serial
    return None, None
