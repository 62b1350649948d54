"""Enterprises and their industry-card quota: registration, scenarios and the activation rules.

An industry card is registered under its enterprise's responsible person (the request's document
must be that person's: otherwise anyone who knows a credit code could take cards off the
personal cap) and counts under the enterprise's quota with the calling operator, not under the
person's 5. The quota is claimed by one conditional statement on the enterprise's row, like a
personal slot on ``holdings``; a refusal is diagnosed afterwards by one read.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from registry.clock import Clock, utc_now
from services.domain.cards import Eligibility, IndustryBinding
from services.domain.documents import Document
from services.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    QuotaViolation,
    RealnameError,
    Violations,
)
from services.domain.pseudonym import Pseudonymizer
from services.domain.records import EnterpriseRow, ScenarioRow
from services.domain.validation import check_credit_code, check_document, check_scenario_name
from services.storage import cards_repo
from services.storage import industry_repo as repo
from services.storage.database import Database
from services.storage.rawsql import Tx

ENTERPRISE_NOT_REGISTERED = "ENTERPRISE_NOT_REGISTERED"
SCENARIO_NOT_DECLARED = "SCENARIO_NOT_DECLARED"
NOT_RESPONSIBLE_PERSON = "NOT_RESPONSIBLE_PERSON"
ENTERPRISE_QUOTA_REACHED = "ENTERPRISE_QUOTA_REACHED"
ENTERPRISE_EXISTS = "ENTERPRISE_EXISTS"
SCENARIO_IN_USE = "SCENARIO_IN_USE"
RESALE_PROHIBITED = "RESALE_PROHIBITED"

MAX_SCENARIOS = 32
MAX_APNS = 16
MAX_QUOTA = 10_000_000
DEFAULT_PAGE = 100
MAX_PAGE = 1000
# An APN network identifier (3GPP TS 23.003 §9.1): dot-separated labels of letters, digits
# and hyphens, at most 63 characters; compared in lower case.
_APN_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MAX_APN = 63
_MAX_NAME = 128


@dataclass(frozen=True)
class RegisterEnterprise:
    """A validated request to register an enterprise with the calling operator."""

    credit_code: str
    name: str
    responsible_person: Document
    scenarios: tuple[ScenarioRow, ...]
    card_quota: int


def apn_problem(apn: str) -> str | None:
    """Why an APN network identifier is bad, or None."""
    if not apn or len(apn) > _MAX_APN:
        return f"must be 1-{_MAX_APN} characters"
    if not all(_APN_LABEL.fullmatch(label) for label in apn.lower().split(".")):
        return "must be dot-separated labels of letters, digits and hyphens"
    return None


def check_scenarios(
    violations: Violations, raw: Sequence[tuple[str, Sequence[str]]], path: str = "scenarios"
) -> tuple[ScenarioRow, ...]:
    """Validates declared scenarios: unique names, each with 1-16 valid APNs (lower-cased)."""
    if not raw:
        violations.add(path, "declare at least one scenario")
    if len(raw) > MAX_SCENARIOS:
        violations.add(path, f"at most {MAX_SCENARIOS} scenarios")
        return ()
    out: list[ScenarioRow] = []
    seen: set[str] = set()
    for i, (name, apns) in enumerate(raw):
        at = f"{path}[{i}]"
        good = check_scenario_name(violations, name, f"{at}.name")
        if good is not None and good in seen:
            violations.add(f"{at}.name", f"scenario {good!r} is declared twice")
        if not apns or len(apns) > MAX_APNS:
            violations.add(f"{at}.apns", f"list 1-{MAX_APNS} APNs")
            continue
        for j, apn in enumerate(apns):
            problem = apn_problem(apn)
            if problem is not None:
                violations.add(f"{at}.apns[{j}]", problem)
        if good is not None:
            seen.add(good)
            out.append(ScenarioRow(good, tuple(sorted({a.lower() for a in apns}))))
    return tuple(out)


def register_command(
    *,
    credit_code: str,
    name: str,
    document_type: int,
    document_number: str,
    scenarios: Sequence[tuple[str, Sequence[str]]],
    card_quota: int,
    today: dt.date,
) -> RegisterEnterprise:
    """Builds a RegisterEnterprise command, or raises InvalidArgument listing every bad field."""
    v = Violations()
    code = check_credit_code(v, credit_code, "credit_code")
    clean_name = name.strip()
    if not clean_name or len(clean_name) > _MAX_NAME or not clean_name.isprintable():
        v.add("name", f"must be 1-{_MAX_NAME} printable characters")
    doc = check_document(v, document_type, document_number, today, "responsible_person")
    declared = check_scenarios(v, scenarios)
    if not 1 <= card_quota <= MAX_QUOTA:
        v.add("card_quota", f"must be 1-{MAX_QUOTA}")
    v.raise_if_any()
    assert code is not None and doc is not None
    return RegisterEnterprise(code, clean_name, doc, declared, card_quota)


def _not_registered(operator_id: str, credit_code: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"enterprise {credit_code} is not registered with operator {operator_id}",
        reason=ENTERPRISE_NOT_REGISTERED,
        metadata={"operator": operator_id, "enterprise": credit_code},
    )


def claim_card(tx: Tx, operator_id: str, binding: IndustryBinding, holder_key: bytes) -> bool:
    """Takes one card of the enterprise's quota if the activation may have it (one statement)."""
    return repo.claim_quota(tx, operator_id, binding.enterprise_id, binding.scenario, holder_key)


def activation_refusal(
    tx: Tx, operator_id: str, binding: IndustryBinding, holder_key: bytes
) -> RealnameError:
    """Why ``claim_card`` refused: unknown enterprise, undeclared scenario, person or quota."""
    target = repo.industry_target(tx, operator_id, binding.enterprise_id, binding.scenario)
    reason = _refusal_reason(target, holder_key)
    if reason == ENTERPRISE_NOT_REGISTERED or target is None:
        return _not_registered(operator_id, binding.enterprise_id)
    meta = {"operator": operator_id, "enterprise": binding.enterprise_id}
    if reason == SCENARIO_NOT_DECLARED:
        return FailedPrecondition(
            f"scenario {binding.scenario!r} is not declared by enterprise {binding.enterprise_id}",
            reason=SCENARIO_NOT_DECLARED,
            metadata={**meta, "scenario": binding.scenario},
        )
    if reason == NOT_RESPONSIBLE_PERSON:
        return FailedPrecondition(
            "industry cards are registered under the enterprise's responsible person; the "
            "document presented is not theirs",
            reason=NOT_RESPONSIBLE_PERSON,
            metadata=meta,
        )
    return QuotaExceeded(
        f"enterprise {binding.enterprise_id} already holds its quota of {target.card_quota} "
        f"industry cards with operator {operator_id}",
        reason=ENTERPRISE_QUOTA_REACHED,
        violations=[
            QuotaViolation(
                f"enterprise:{binding.enterprise_id}/operator:{operator_id}",
                f"at most {target.card_quota} live industry cards for this enterprise",
            )
        ],
        metadata={**meta, "limit": str(target.card_quota)},
    )


def _refusal_reason(target: repo.IndustryTarget | None, holder_key: bytes) -> str:
    if target is None:
        return ENTERPRISE_NOT_REGISTERED
    if not target.scenario_declared:
        return SCENARIO_NOT_DECLARED
    if target.responsible_key != holder_key:
        return NOT_RESPONSIBLE_PERSON
    if target.active >= target.card_quota:
        return ENTERPRISE_QUOTA_REACHED
    return ""


def eligibility(
    tx: Tx, operator_id: str, binding: IndustryBinding, holder_key: bytes
) -> Eligibility | None:
    """Whether the enterprise can get another card; None when the operator is unknown."""
    target = repo.industry_target(tx, operator_id, binding.enterprise_id, binding.scenario)
    if target is None:
        if cards_repo.get_operator(tx, operator_id) is None:
            return None
        return Eligibility(False, 0, 0, ENTERPRISE_NOT_REGISTERED)
    reason = _refusal_reason(target, holder_key)
    return Eligibility(reason == "", target.active, target.card_quota, reason)


class EnterpriseDesk:
    """Registers the calling operator's enterprises and keeps their declared scenarios."""

    def __init__(self, db: Database, pseudonymizer: Pseudonymizer, clock: Clock = utc_now):
        self._db = db
        self._pseudo = pseudonymizer
        self._clock = clock

    def today(self) -> dt.date:
        """The current date in China Standard Time (documents' calendar)."""
        return (self._clock() + dt.timedelta(hours=8)).date()

    def register(self, operator_id: str, cmd: RegisterEnterprise) -> EnterpriseRow:
        """Registers an enterprise; ALREADY_EXISTS if the operator has one with this code."""
        key = self._pseudo.document_key(cmd.responsible_person)

        def work(tx: Tx) -> EnterpriseRow:
            if cards_repo.get_operator(tx, operator_id) is None:
                raise PermissionDenied(
                    "the calling operator is not registered with this service",
                    reason="UNKNOWN_OPERATOR",
                    metadata={"operator": operator_id},
                )
            if not repo.insert_enterprise(
                tx,
                operator_id=operator_id,
                credit_code=cmd.credit_code,
                name=cmd.name,
                responsible_key=key,
                responsible_type=cmd.responsible_person.type,
                responsible_masked=cmd.responsible_person.masked(),
                card_quota=cmd.card_quota,
                now=self._clock(),
            ):
                raise AlreadyExists(
                    f"enterprise {cmd.credit_code} is already registered with {operator_id}",
                    reason=ENTERPRISE_EXISTS,
                    metadata={"enterprise": cmd.credit_code},
                )
            repo.replace_scenarios(tx, operator_id, cmd.credit_code, cmd.scenarios)
            found = repo.enterprise(tx, operator_id, cmd.credit_code)
            assert found is not None
            return found

        return self._db.run_tx(work)

    def get(self, operator_id: str, credit_code: str) -> EnterpriseRow:
        """One of the operator's enterprises; NOT_FOUND for another operator's or none."""

        def work(tx: Tx) -> EnterpriseRow:
            found = repo.enterprise(tx, operator_id, credit_code)
            if found is None:
                raise NotFound(
                    f"operator {operator_id} has no enterprise {credit_code}",
                    reason="ENTERPRISE_NOT_FOUND",
                )
            return found

        return self._db.run_tx(work, readonly=True)

    def list(self, operator_id: str, after: str, limit: int) -> list[EnterpriseRow]:
        """A page of the operator's enterprises after credit code ``after``."""
        return self._db.run_tx(
            lambda tx: repo.list_enterprises(tx, operator_id, after, limit), readonly=True
        )

    def update_scenarios(
        self, operator_id: str, credit_code: str, scenarios: tuple[ScenarioRow, ...]
    ) -> EnterpriseRow:
        """Replaces the declared scenarios; refuses to drop one that live cards are bound to."""

        def work(tx: Tx) -> EnterpriseRow:
            # Holding the row that activations claim on keeps the live-card count below exact.
            if not repo.lock_enterprise(tx, operator_id, credit_code):
                raise NotFound(
                    f"operator {operator_id} has no enterprise {credit_code}",
                    reason="ENTERPRISE_NOT_FOUND",
                )
            kept = {s.name for s in scenarios}
            in_use = {
                name: count
                for name, count in repo.live_cards_by_scenario(tx, operator_id, credit_code).items()
                if name not in kept
            }
            if in_use:
                names = ", ".join(sorted(in_use))
                raise FailedPrecondition(
                    f"live cards are bound to scenario(s) {names}; deactivate them first",
                    reason=SCENARIO_IN_USE,
                    metadata={"scenarios": names},
                )
            repo.replace_scenarios(tx, operator_id, credit_code, scenarios)
            found = repo.enterprise(tx, operator_id, credit_code)
            assert found is not None
            return found

        return self._db.run_tx(work)
