"""Agents: the sales points an operator registers, their suspension, and fraud signals.

Activations by an agent pass :class:`AgentGuard`: an unregistered or suspended agent is refused,
and so is a document activated again within the optional minimum interval (one primary-key
read). After a sale the guard computes the signals of :class:`AgentPolicy` in one statement of
indexed reads (plus a count of the agent's documents only while an agent has sold more than the
documents threshold in the window and its signal is not yet recorded) and, only when a signal
fires, one insert; a signal is recorded once per (agent, kind, subject, window bucket).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from registry.clock import Clock, utc_now
from services.domain.cards import ActivateCard, AgentSale
from services.domain.documents import Document
from services.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.domain.pseudonym import Pseudonymizer
from services.features.guards import ActivationGuard
from services.storage import agents_repo as repo
from services.storage import cards_repo
from services.storage.database import Database
from services.storage.rawsql import Probe, Tx

AGENT_NOT_REGISTERED: Final = "AGENT_NOT_REGISTERED"
AGENT_SUSPENDED: Final = "AGENT_SUSPENDED"
ACTIVATION_INTERVAL: Final = "ACTIVATION_INTERVAL"
SUB_AGENT_NOT_ALLOWED: Final = "SUB_AGENT_NOT_ALLOWED"
PARENT_NOT_REGISTERED: Final = "PARENT_NOT_REGISTERED"
AGENT_EXISTS: Final = "AGENT_EXISTS"
AGENT_NOT_FOUND: Final = "AGENT_NOT_FOUND"
UNKNOWN_OPERATOR: Final = "UNKNOWN_OPERATOR"

BATCH_ISSUANCE: Final = "BATCH_ISSUANCE"
MANY_DOCUMENTS: Final = "MANY_DOCUMENTS"
DOCUMENT_MANY_AGENTS: Final = "DOCUMENT_MANY_AGENTS"
DOCUMENT_AT_CAP: Final = "DOCUMENT_AT_CAP"

KINDS: Final = ("SHOP", "SALES_POINT", "ONLINE_STORE")
ACTIVE: Final = "ACTIVE"
SUSPENDED: Final = "SUSPENDED"

AGENT_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
SIGNAL_KIND: Final = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
MAX_NAME: Final = 128
MAX_REASON: Final = 256
MAX_DETAIL: Final = 1000
_CAP_WINDOW: Final = dt.timedelta(days=1)
# A document holds at most a handful of live cards per operator, so this many of an agent's
# latest sales per distinct document over the threshold show it was passed.
_ROWS_PER_DOCUMENT: Final = 5

POLICY_ENV: Final = {
    "batch_max": "REALNAME_AGENT_BATCH_MAX",
    "batch_window": "REALNAME_AGENT_BATCH_WINDOW",
    "documents_max": "REALNAME_AGENT_DOCUMENTS_MAX",
    "documents_window": "REALNAME_AGENT_DOCUMENTS_WINDOW",
    "document_agents_max": "REALNAME_AGENT_DOCUMENT_AGENTS_MAX",
    "document_agents_window": "REALNAME_AGENT_DOCUMENT_AGENTS_WINDOW",
    "min_interval": "REALNAME_AGENT_MIN_INTERVAL",
}
"""The environment variable of each AgentPolicy field."""


def parse_duration(text: str) -> dt.timedelta:
    """``0`` (off) or a whole number of s, m, h or d: ``90s``, ``10m``, ``1h``, ``7d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text == "0":
        return dt.timedelta(0)
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"not a duration like 90s, 10m, 1h or 7d: {text!r}")
    return dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])


@dataclass(frozen=True)
class AgentPolicy:
    """Fraud-signal thresholds (a signal fires when the figure goes over the threshold)."""

    batch_max: int = 100
    """BATCH_ISSUANCE: activations by one agent in ``batch_window``."""
    batch_window: dt.timedelta = dt.timedelta(minutes=10)
    documents_max: int = 50
    """MANY_DOCUMENTS: distinct documents one agent activated for in ``documents_window``."""
    documents_window: dt.timedelta = dt.timedelta(hours=1)
    document_agents_max: int = 3
    """DOCUMENT_MANY_AGENTS: distinct agents one document bought from in its window."""
    document_agents_window: dt.timedelta = dt.timedelta(days=30)
    min_interval: dt.timedelta = dt.timedelta(0)
    """Refuse a document's next activation with the operator sooner than this (0: off)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentPolicy:
        """The policy from ``REALNAME_AGENT_*`` variables; unset ones keep their defaults."""
        values: dict[str, int | dt.timedelta] = {}
        for name, var in POLICY_ENV.items():
            text = env.get(var)
            if text is None or text == "":
                continue
            if name.endswith("_max"):
                if not text.isdigit() or int(text) < 1:
                    raise ValueError(f"{var} must be a whole number >= 1, not {text!r}")
                values[name] = int(text)
            else:
                duration = parse_duration(text)
                if not duration and name != "min_interval":
                    raise ValueError(f"{var} must be a positive duration, not {text!r}")
                values[name] = duration
        return cls(**values)  # type: ignore[arg-type]

    @property
    def scan(self) -> int:
        """How many of a busy agent's latest sales are read to count its documents."""
        return _ROWS_PER_DOCUMENT * (self.documents_max + 1)


@dataclass(frozen=True)
class Agent:
    """A registered agent."""

    operator: str
    agent_id: str
    parent_id: str | None
    name: str
    kind: str
    status: str
    suspension_reason: str | None
    registered_at: dt.datetime
    suspended_at: dt.datetime | None


@dataclass(frozen=True)
class Signal:
    """A recorded fraud signal (``subject``: a document pseudonym, or '')."""

    id: int
    agent_id: str
    kind: str
    subject: str
    subject_masked: str | None
    value: int
    threshold: int
    window_seconds: int
    window_start: dt.datetime
    at: dt.datetime
    detail: str | None


@dataclass(frozen=True)
class SignalFilter:
    """What ListAgentSignals selects."""

    agent_id: str | None = None
    kind: str | None = None
    since: dt.datetime | None = None
    before_id: int | None = None
    limit: int = 100


@dataclass(frozen=True)
class AgentFilter:
    """What ListAgents selects."""

    after: str = ""
    limit: int = 100
    status: str | None = None
    parent_id: str | None = None


def _agent(row: repo.AgentRow) -> Agent:
    return Agent(
        row.operator_id, row.agent_id, row.parent_id, row.name, row.kind, row.status,
        row.suspension_reason, row.registered_at, row.suspended_at,
    )  # fmt: skip


def _signal(row: repo.SignalRow) -> Signal:
    return Signal(
        row.id, row.agent_id, row.kind, row.subject, row.subject_masked, row.value,
        row.threshold, row.window_seconds, row.window_start, row.at, row.detail,
    )  # fmt: skip


def _bucket(now: dt.datetime, window: dt.timedelta) -> dt.datetime:
    """The start of the fixed window bucket holding ``now`` (buckets start at the epoch)."""
    seconds = max(1, int(window.total_seconds()))
    epoch = int(now.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, dt.UTC)


def _inside(at: dt.datetime | None, since: dt.datetime) -> bool:
    return at is not None and at > since


def _check_agent_id(violations: list[FieldViolation], path: str, value: str) -> None:
    if not AGENT_ID.fullmatch(value):
        violations.append(FieldViolation(path, "must be 1-64 characters of [A-Za-z0-9._:-]"))


def _require_agent_id(agent_id: str, path: str = "agent_id") -> None:
    violations: list[FieldViolation] = []
    _check_agent_id(violations, path, agent_id)
    if violations:
        raise InvalidArgument(violations)


def _not_found(operator_id: str, agent_id: str) -> NotFound:
    return NotFound(
        f"operator {operator_id} has no agent {agent_id}",
        reason=AGENT_NOT_FOUND,
        metadata={"agent_id": agent_id},
    )


def flag_agent(
    tx: Tx,
    operator_id: str,
    agent_id: str,
    kind: str,
    detail: str,
    *,
    now: dt.datetime | None = None,
    subject: str = "",
    value: int = 1,
) -> None:
    """Records a signal against an agent from another feature (e.g. DISPUTED_CARD), in ``tx``.

    ``kind`` is an upper-case identifier; ``detail`` must not hold a clear document number.
    The agent need not be registered (sales predating registration are flagged too).
    """
    if not SIGNAL_KIND.fullmatch(kind):
        raise ValueError(f"signal kind must be an upper-case identifier, not {kind!r}")
    at = now or utc_now()
    repo.record_signals(
        tx,
        [
            repo.NewSignal(
                operator_id, agent_id, kind, value, 0, 0, at, subject=subject,
                detail=detail[:MAX_DETAIL],
            )
        ],
        at,
    )  # fmt: skip


class AgentDesk:
    """Registers, suspends and lists an operator's agents, and reads their signals."""

    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self._db = db
        self._clock = clock

    @staticmethod
    def _operator(tx: Tx, operator_id: str) -> cards_repo.OperatorRow:
        op = cards_repo.get_operator(tx, operator_id)
        if op is None:
            raise PermissionDenied(
                "the calling operator is not registered with this service",
                reason=UNKNOWN_OPERATOR,
                metadata={"operator": operator_id},
            )
        return op

    def register(
        self, operator_id: str, agent_id: str, parent_id: str | None, name: str, kind: str
    ) -> Agent:
        """Registers an agent (idempotent for the same registration)."""
        violations: list[FieldViolation] = []
        _check_agent_id(violations, "agent_id", agent_id)
        if parent_id is not None:
            _check_agent_id(violations, "parent_agent_id", parent_id)
            if parent_id == agent_id:
                violations.append(FieldViolation("parent_agent_id", "an agent is not its parent"))
        name = name or agent_id
        if len(name) > MAX_NAME or not name.isprintable():
            violations.append(FieldViolation("name", f"must be 1-{MAX_NAME} printable characters"))
        if kind not in KINDS:
            violations.append(FieldViolation("kind", f"must be one of {', '.join(KINDS)}"))
        if violations:
            raise InvalidArgument(violations)

        def work(tx: Tx) -> Agent:
            op = self._operator(tx, operator_id)
            if parent_id is not None and op.kind == "virtual":
                raise FailedPrecondition(
                    f"virtual operator {operator_id}'s agents may not appoint sub-agents",
                    reason=SUB_AGENT_NOT_ALLOWED,
                    metadata={"operator": operator_id},
                )
            if parent_id is not None and repo.get_agent(tx, operator_id, parent_id) is None:
                raise FailedPrecondition(
                    f"operator {operator_id} has no agent {parent_id} to be the parent",
                    reason=PARENT_NOT_REGISTERED,
                    metadata={"parent_agent_id": parent_id},
                )
            repo.insert_agent(
                tx, operator_id=operator_id, agent_id=agent_id, parent_id=parent_id, name=name,
                kind=kind, now=self._clock(),
            )  # fmt: skip
            row = repo.get_agent(tx, operator_id, agent_id)
            assert row is not None
            if (row.parent_id, row.name, row.kind) != (parent_id, name, kind):
                raise AlreadyExists(
                    f"operator {operator_id} already has an agent {agent_id}, registered otherwise",
                    reason=AGENT_EXISTS,
                    metadata={"agent_id": agent_id},
                )
            return _agent(row)

        return self._db.run_tx(work)

    def get(self, operator_id: str, agent_id: str) -> Agent:
        """One of the operator's agents."""
        _require_agent_id(agent_id)

        def work(tx: Tx) -> Agent:
            self._operator(tx, operator_id)
            row = repo.get_agent(tx, operator_id, agent_id)
            if row is None:
                raise _not_found(operator_id, agent_id)
            return _agent(row)

        return self._db.run_tx(work, readonly=True)

    def agents(self, operator_id: str, selection: AgentFilter) -> list[Agent]:
        """The operator's agents in id order, after ``selection.after``."""
        if selection.parent_id is not None:
            _require_agent_id(selection.parent_id, "parent_agent_id")

        def work(tx: Tx) -> list[Agent]:
            self._operator(tx, operator_id)
            rows = repo.list_agents(
                tx, operator_id, after=selection.after, limit=selection.limit,
                status=selection.status, parent_id=selection.parent_id,
            )  # fmt: skip
            return [_agent(r) for r in rows]

        return self._db.run_tx(work, readonly=True)

    def suspend(self, operator_id: str, agent_id: str, reason: str) -> Agent:
        """Suspends an agent: its activations are refused until it is reinstated."""
        if not reason or len(reason) > MAX_REASON or not reason.isprintable():
            raise InvalidArgument(
                [FieldViolation("reason", f"must be 1-{MAX_REASON} printable characters")]
            )
        return self._set_status(operator_id, agent_id, SUSPENDED, reason)

    def reinstate(self, operator_id: str, agent_id: str) -> Agent:
        """Lifts an agent's suspension."""
        return self._set_status(operator_id, agent_id, ACTIVE, None)

    def _set_status(
        self, operator_id: str, agent_id: str, status: str, reason: str | None
    ) -> Agent:
        _require_agent_id(agent_id)

        def work(tx: Tx) -> Agent:
            self._operator(tx, operator_id)
            now = self._clock() if status == SUSPENDED else None
            repo.set_status(tx, operator_id, agent_id, status=status, reason=reason, now=now)
            row = repo.get_agent(tx, operator_id, agent_id)
            if row is None:
                raise _not_found(operator_id, agent_id)
            return _agent(row)

        return self._db.run_tx(work)

    def signals(self, operator_id: str, selection: SignalFilter) -> list[Signal]:
        """Signals against the operator's agents, newest first."""
        if selection.agent_id is not None:
            _require_agent_id(selection.agent_id)
        if selection.kind is not None and not SIGNAL_KIND.fullmatch(selection.kind):
            raise InvalidArgument([FieldViolation("kind", "must be an upper-case identifier")])

        def work(tx: Tx) -> list[Signal]:
            self._operator(tx, operator_id)
            rows = repo.list_signals(
                tx, operator_id, before_id=selection.before_id, limit=selection.limit,
                agent_id=selection.agent_id, kind=selection.kind, since=selection.since,
            )  # fmt: skip
            return [_signal(r) for r in rows]

        return self._db.run_tx(work, readonly=True)


class AgentGuard(ActivationGuard):
    """Refuses sales by unregistered or suspended agents; records fraud signals after sales."""

    def __init__(self, pseudonymizer: Pseudonymizer, policy: AgentPolicy | None = None) -> None:
        self._pseudo = pseudonymizer
        self.policy = policy or AgentPolicy()

    def probes(self, operator_id: str, cmd: ActivateCard) -> Sequence[Probe]:
        """The agent's status (agent sales), then the document's last activation (if an interval
        between activations is set)."""
        wanted: list[Probe] = []
        if isinstance(cmd.channel, AgentSale):
            wanted.append(repo.suspension_probe(operator_id, cmd.channel.agent_id))
        if self.policy.min_interval:
            key = self._pseudo.document_key(cmd.document)
            wanted.append(repo.last_activation_probe(key, operator_id))
        return wanted

    def check(
        self,
        tx: Tx,
        operator_id: str,
        cmd: ActivateCard,
        now: dt.datetime,
        answers: Sequence[Any],
    ) -> None:
        """Refuses an unregistered or suspended agent, and a too early repeat activation."""
        values = iter(answers)
        if isinstance(cmd.channel, AgentSale):
            agent_id = cmd.channel.agent_id
            suspended = next(values)
            if suspended is None:
                raise FailedPrecondition(
                    f"operator {operator_id} has not registered agent {agent_id}",
                    reason=AGENT_NOT_REGISTERED,
                    metadata={"agent_id": agent_id},
                )
            if suspended == agent_id:
                raise FailedPrecondition(
                    f"agent {agent_id} is suspended by operator {operator_id}",
                    reason=AGENT_SUSPENDED,
                    metadata={"agent_id": agent_id},
                )
            if suspended:
                # A suspended franchise stops every sales point under it, at any depth.
                raise FailedPrecondition(
                    f"agent {agent_id} sells under agent {suspended}, suspended by operator "
                    f"{operator_id}",
                    reason=AGENT_SUSPENDED,
                    metadata={"agent_id": agent_id, "suspended_agent_id": str(suspended)},
                )
        if self.policy.min_interval:
            self._refuse_too_soon(operator_id, cmd.document, tx.parse_timestamp(next(values)), now)

    def new_holder(self, tx: Tx, operator_id: str, document: Document, now: dt.datetime) -> None:
        """A transfer's new holder is held to the minimum interval like an activation's."""
        if self.policy.min_interval:
            last = repo.last_activation(tx, self._pseudo.document_key(document), operator_id)
            self._refuse_too_soon(operator_id, document, last, now)

    def _refuse_too_soon(
        self, operator_id: str, document: Document, last: dt.datetime | None, now: dt.datetime
    ) -> None:
        """Refuses a card for a document that got one with the operator within the interval."""
        interval = self.policy.min_interval
        if last is not None and now - last < interval:
            allowed = last + interval
            raise FailedPrecondition(
                f"document {document.masked()} had a card activated with operator "
                f"{operator_id} less than {interval} ago",
                reason=ACTIVATION_INTERVAL,
                metadata={
                    "operator": operator_id,
                    "min_interval_seconds": str(int(interval.total_seconds())),
                    "next_allowed_at": allowed.isoformat(timespec="seconds"),
                },
            )

    def activated(
        self, tx: Tx, operator_id: str, card_id: int, cmd: ActivateCard, now: dt.datetime
    ) -> None:
        """Computes the agent's and the document's signals and records those that fire."""
        if not isinstance(cmd.channel, AgentSale):
            return
        p = self.policy
        agent_id = cmd.channel.agent_id
        key = self._pseudo.document_key(cmd.document)
        batch_bucket = _bucket(now, p.batch_window)
        documents_bucket = _bucket(now, p.documents_window)
        pace, standing = repo.sale_activity(
            tx, operator_id, agent_id, key, batch_n=p.batch_max, documents_n=p.documents_max,
            batch_signal=(BATCH_ISSUANCE, batch_bucket),
            documents_signal=(MANY_DOCUMENTS, documents_bucket),
            agents_since=now - p.document_agents_window,
            batch_since=now - p.batch_window, documents_since=now - p.documents_window,
        )  # fmt: skip
        fired: list[repo.NewSignal] = []

        def fire(
            kind: str, value: int, threshold: int, span: dt.timedelta, per_document: bool
        ) -> None:
            fired.append(
                repo.NewSignal(
                    operator_id, agent_id, kind, value, threshold, int(span.total_seconds()),
                    _bucket(now, span), subject=key.hex() if per_document else "",
                    subject_masked=cmd.document.masked() if per_document else None,
                )
            )  # fmt: skip

        if _inside(pace.batch_nth, now - p.batch_window) and not pace.batch_recorded:
            # The (batch_max+1)-th latest sale is in the window: at least batch_max+1 sales.
            fire(BATCH_ISSUANCE, p.batch_max + 1, p.batch_max, p.batch_window, False)
        if _inside(pace.documents_nth, now - p.documents_window) and not pace.documents_recorded:
            # Enough sales to possibly be over; only then are the documents counted.
            since = now - p.documents_window
            documents = repo.distinct_documents(tx, operator_id, agent_id, since, scan=p.scan)
            if documents > p.documents_max:
                fire(MANY_DOCUMENTS, documents, p.documents_max, p.documents_window, False)
        if standing.agents > p.document_agents_max:
            fire(
                DOCUMENT_MANY_AGENTS, standing.agents, p.document_agents_max,
                p.document_agents_window, True,
            )  # fmt: skip
        if standing.limit and standing.active >= standing.limit:
            fire(DOCUMENT_AT_CAP, standing.active, standing.limit, _CAP_WINDOW, True)
        repo.record_signals(tx, fired, now)
