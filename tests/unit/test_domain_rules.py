"""The pure domain rules on their own: request validation, the audit hash chain, retry budgets."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pytest

from registry.subscribers import DocumentType
from services.domain import retry_budget
from services.domain.audit import GENESIS, AuditRecord, PruneEvent, chain_next
from services.domain.cards import AgentSale, CardType, OnlineSale
from services.domain.errors import InvalidArgument
from services.domain.validation import activate_command

TODAY = dt.date(2026, 12, 3)
GOOD = {
    "request_id": "order-1001",
    "document_type": DocumentType.RESIDENT_ID_CARD.value,
    "document_number": "1101 0519 4912 3100 2x",
    "msisdn": "13800138000",
    "iccid": "89860012345678901238",
    "card_type": 1,
    "agent_id": "shop-0042",
    "store_serial": None,
    "today": TODAY,
}


def test_a_good_activation_is_normalised_into_a_command() -> None:
    command = activate_command(**GOOD)  # type: ignore[arg-type]
    assert command.request_id == "order-1001"
    assert command.document.type is DocumentType.RESIDENT_ID_CARD
    assert command.document.number == "11010519491231002X"
    assert command.card_type is CardType.PERSONAL
    assert command.channel == AgentSale("shop-0042")
    assert "11010519491231002X" not in repr(command.document)


def test_an_online_sale_names_its_store_serial_in_canonical_hex() -> None:
    command = activate_command(**{**GOOD, "agent_id": None, "store_serial": "0x5ABC"})  # type: ignore[arg-type]
    assert command.channel == OnlineSale("5abc")


def test_every_bad_field_is_reported_at_once() -> None:
    bad = {
        **GOOD,
        "request_id": "",
        "document_number": "110105194912310021",  # wrong check character
        "msisdn": "1380013800",
        "iccid": "89860012345678901234",  # wrong Luhn digit
        "agent_id": None,
    }
    with pytest.raises(InvalidArgument) as raised:
        activate_command(**bad)  # type: ignore[arg-type]
    fields = {violation.field for violation in raised.value.violations}
    assert {"request_id", "msisdn", "iccid", "channel"} <= fields
    assert any(field.startswith("document") for field in fields)
    assert "110105194912310021" not in str(raised.value)


RECORD = AuditRecord(
    id=7,
    at=dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC),
    principal="operator/cmcc",
    method="/realname.v1.VerificationService/ActivateCard",
    outcome="OK",
    subject=bytes(range(32)),
)


def test_the_audit_chain_is_deterministic_and_moves_with_every_field() -> None:
    head = chain_next(GENESIS, RECORD)
    assert head == chain_next(GENESIS, RECORD) and len(head) == 32
    changes = {
        "id": 8,
        "at": RECORD.at + dt.timedelta(milliseconds=1),
        "principal": "operator/cucc",
        "method": "/realname.v1.VerificationService/ListCards",
        "outcome": "PERMISSION_DENIED",
        "subject": None,
    }
    for name, value in changes.items():
        assert chain_next(GENESIS, dataclasses.replace(RECORD, **{name: value})) != head, name


def test_dropping_a_record_breaks_every_later_chain_value() -> None:
    second = dataclasses.replace(RECORD, id=8)
    third = dataclasses.replace(RECORD, id=9)
    full = chain_next(chain_next(chain_next(GENESIS, RECORD), second), third)
    assert chain_next(chain_next(GENESIS, RECORD), third) != full
    assert chain_next(chain_next(GENESIS, second), third) != full


def test_a_prune_event_reads_back_from_its_label_and_knows_its_retention() -> None:
    newest = dt.datetime(2023, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    event = PruneEvent(1, 18, bytes(range(32)), dt.timedelta(days=1095), newest)
    assert PruneEvent.parse(event.label(), event.base_chain) == event
    assert PruneEvent.parse("realname-audit:18", event.base_chain) is None
    assert PruneEvent.parse(event.label() + "x", event.base_chain) is None
    assert not event.younger_than_retention(newest + dt.timedelta(days=1096))
    assert event.younger_than_retention(newest + dt.timedelta(minutes=5))


def test_without_a_deadline_retries_stop_at_the_fixed_budget() -> None:
    with retry_budget.call_deadline(None):
        assert retry_budget.may_retry(retry_budget.MAX_ATTEMPTS - 1)
        assert not retry_budget.may_retry(retry_budget.MAX_ATTEMPTS)


def test_a_deadline_with_time_left_allows_more_retries_and_a_spent_one_none() -> None:
    with retry_budget.call_deadline(60.0):
        assert retry_budget.may_retry(retry_budget.MAX_ATTEMPTS * 10)
    with retry_budget.call_deadline(0.01):
        time.sleep(0.02)
        assert not retry_budget.may_retry(retry_budget.MAX_ATTEMPTS)
        assert retry_budget.may_retry(0)
