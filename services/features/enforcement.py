"""The regulator's enforcement records: warnings, fines, suspensions and licence standing."""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from registry.clock import Clock, utc_now
from services.domain.cards import ActivateCard
from services.domain.documents import Document
from services.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    RealnameError,
)
from services.domain.records import ActionRow
from services.features.guards import ActivationGuard
from services.storage import cards_repo
from services.storage import enforcement_repo as repo
from services.storage.database import Database
from services.storage.rawsql import Probe, Tx

OPERATOR_SUSPENDED_BY_REGULATOR = "OPERATOR_SUSPENDED_BY_REGULATOR"
# The regulation's range for a fine, in yuan.
FINE_MIN_YUAN, FINE_MAX_YUAN = 10_000, 30_000
MAX_REASON = 500


class EnforcementKind(Enum):
    """What the regulator did; values match the proto enum numbers."""

    WARNING = 1
    FINE = 2
    SUSPEND_ACTIVATION = 3


@dataclass(frozen=True)
class Standing:
    """An operator's record with the regulator (its licence status, for a virtual operator)."""

    operator: str
    kind: str
    warnings: int
    fines: int
    fines_total_yuan: int
    suspensions: int
    activation_suspended: bool
    ca_revoked: bool
    # The recorded kind of each action that also revoked the operator's CA.
    revoking_kinds: tuple[str, ...] = ()

    @property
    def ca_revocations(self) -> int:
        """Actions that revoked the operator's authorization CA."""
        return len(self.revoking_kinds)

    def by_own_kind(self) -> dict[str, int]:
        """Each action once, under its own kind: an action that revoked the CA counts as a CA
        revocation whatever kind it was recorded with (a revocation is not a warning)."""
        return {
            "warnings": self.warnings - self.revoking_kinds.count("WARNING"),
            "fines": self.fines - self.revoking_kinds.count("FINE"),
            "suspensions": self.suspensions - self.revoking_kinds.count("SUSPEND_ACTIVATION"),
            "ca_revocations": self.ca_revocations,
        }

    @property
    def licence_status(self) -> str:
        """GOOD, ON_RECORD, SUSPENDED or CA_REVOKED: the most severe that applies."""
        if self.ca_revoked:
            return "CA_REVOKED"
        if self.activation_suspended:
            return "SUSPENDED"
        if self.warnings or self.fines or self.suspensions:
            return "ON_RECORD"
        return "GOOD"


def validate_action(kind: EnforcementKind, amount_yuan: int, reason: str) -> str:
    """Checks an action's fields; returns the reason text, or raises INVALID_ARGUMENT."""
    violations = []
    if kind is EnforcementKind.FINE:
        if not FINE_MIN_YUAN <= amount_yuan <= FINE_MAX_YUAN:
            violations.append(
                FieldViolation(
                    "amount_yuan",
                    f"a fine must be between {FINE_MIN_YUAN:,} and {FINE_MAX_YUAN:,} yuan",
                )
            )
    elif amount_yuan != 0:
        violations.append(FieldViolation("amount_yuan", "only a fine carries an amount"))
    text = reason.strip()
    if not text or len(text) > MAX_REASON:
        violations.append(FieldViolation("reason", f"must be 1-{MAX_REASON} characters"))
    elif any(unicodedata.category(ch) == "Cc" for ch in text):
        violations.append(FieldViolation("reason", "must not contain control characters"))
    if violations:
        raise InvalidArgument(violations)
    return text


class EnforcementDesk:
    """Records actions against operators and answers whether an operator may activate."""

    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self._db = db
        self._clock = clock

    def record(
        self,
        principal: str,
        operator_id: str,
        kind: EnforcementKind,
        amount_yuan: int,
        reason: str,
        *,
        ca_revoked: bool = False,
    ) -> tuple[ActionRow, Standing]:
        """Records an action against a registered operator."""
        text = validate_action(kind, amount_yuan, reason)

        def work(tx: Tx) -> tuple[ActionRow, Standing]:
            operator = cards_repo.get_operator(tx, operator_id)
            if operator is None:
                raise NotFound(f"no operator {operator_id!r}", reason="UNKNOWN_OPERATOR")
            action = repo.insert_action(
                tx,
                operator_id=operator_id,
                kind=kind.name,
                amount_yuan=amount_yuan if kind is EnforcementKind.FINE else None,
                reason=text,
                recorded_by=principal,
                now=self._clock(),
                ca_revoked=ca_revoked,
            )
            return action, _standing(tx, operator_id, operator.kind)

        return self._db.run_tx(work)

    def lift(self, action_ref: str) -> tuple[ActionRow, Standing]:
        """Lifts an activation suspension."""
        if not action_ref.isascii() or not action_ref.isdigit() or len(action_ref) > 18:
            raise InvalidArgument([FieldViolation("action_id", "must be an action id")])

        def work(tx: Tx) -> tuple[ActionRow, Standing]:
            action = repo.action_by_id(tx, int(action_ref))
            if action is None:
                raise NotFound(f"no enforcement action {action_ref}", reason="ACTION_NOT_FOUND")
            if not repo.lift(tx, action.id, self._clock()):
                raise FailedPrecondition(
                    "only a suspension that is still in force can be lifted",
                    reason="NOT_A_LIVE_SUSPENSION",
                )
            lifted = repo.action_by_id(tx, action.id)
            operator = cards_repo.get_operator(tx, action.operator_id)
            assert lifted is not None and operator is not None
            return lifted, _standing(tx, action.operator_id, operator.kind)

        return self._db.run_tx(work)

    def list(self, operator_id: str | None) -> tuple[list[ActionRow], list[Standing]]:
        """Actions (newest first) and standings, of one operator or of all."""

        def work(tx: Tx) -> tuple[list[ActionRow], list[Standing]]:
            operators = cards_repo.all_operators(tx)
            if operator_id is not None and operator_id not in operators:
                raise NotFound(f"no operator {operator_id!r}", reason="UNKNOWN_OPERATOR")
            chosen = [operator_id] if operator_id is not None else sorted(operators)
            standings = [_standing(tx, op, operators[op].kind) for op in chosen]
            return repo.actions(tx, operator_id), standings

        return self._db.run_tx(work, readonly=True)


def _standing(tx: Tx, operator_id: str, kind: str) -> Standing:
    rows = repo.actions(tx, operator_id, limit=100_000)
    fines = [r for r in rows if r.kind == "FINE"]
    return Standing(
        operator=operator_id,
        kind=kind,
        warnings=sum(1 for r in rows if r.kind == "WARNING"),
        fines=len(fines),
        fines_total_yuan=sum(r.amount_yuan or 0 for r in fines),
        suspensions=sum(1 for r in rows if r.kind == "SUSPEND_ACTIVATION"),
        activation_suspended=any(
            r.kind == "SUSPEND_ACTIVATION" and r.lifted_at is None for r in rows
        ),
        ca_revoked=any(r.ca_revoked for r in rows),
        revoking_kinds=tuple(r.kind for r in rows if r.ca_revoked),
    )


class SuspensionGuard(ActivationGuard):
    """Refuses activations by an operator whose new-user activation the regulator suspended."""

    def probes(self, operator_id: str, cmd: ActivateCard) -> Sequence[Probe]:
        """Whether a suspension is in force."""
        return (repo.suspension_probe(operator_id),)

    def check(
        self,
        tx: Tx,
        operator_id: str,
        cmd: ActivateCard,
        now: dt.datetime,
        answers: Sequence[Any],
    ) -> None:
        """Raises FAILED_PRECONDITION while a suspension is in force."""
        if answers[0] is not None:
            raise _suspended(operator_id)

    def eligibility_probes(self, operator_id: str, document: Document) -> Sequence[Probe]:
        """Whether a suspension is in force."""
        return (repo.suspension_probe(operator_id),)

    def eligibility(
        self, operator_id: str, document: Document, answers: Sequence[Any]
    ) -> RealnameError | None:
        """While a suspension is in force, no document is eligible with the operator."""
        return None if answers[0] is None else _suspended(operator_id)


def _suspended(operator_id: str) -> FailedPrecondition:
    """The refusal of an activation (or eligibility) by a suspended operator."""
    return FailedPrecondition(
        f"the regulator has suspended new-user activation by operator {operator_id}",
        reason=OPERATOR_SUSPENDED_BY_REGULATOR,
        metadata={"operator": operator_id},
    )
