"""gRPC servicer of realname.v1.SupervisionService: enforcement records and audit queries."""

from __future__ import annotations

import datetime as dt

import grpc

from services.domain import validation
from services.domain.errors import Violations
from services.domain.principal import Principal, Role
from services.domain.pseudonym import Pseudonymizer
from services.domain.records import ActionRow
from services.features.audit_trail import AuditTrail
from services.features.enforcement import EnforcementDesk, EnforcementKind, Standing
from services.proto.realname.v1 import supervision_pb2 as spb
from services.proto.realname.v1 import supervision_pb2_grpc as sgrpc
from services.rpc.convert import datetime_of, timestamp
from services.rpc.interceptor import current_principal
from services.rpc.server import ServiceBinding

SUPERVISION_SERVICE = spb.DESCRIPTOR.services_by_name["SupervisionService"].full_name
MAX_AUDIT_RECORDS = 1000


def supervision_binding(
    desk: EnforcementDesk, trail: AuditTrail, pseudonymizer: Pseudonymizer
) -> ServiceBinding:
    """SupervisionService, for the regulator only."""

    def add(server: grpc.Server) -> None:
        sgrpc.add_SupervisionServiceServicer_to_server(
            SupervisionServicer(desk, trail, pseudonymizer), server
        )

    return ServiceBinding(
        SUPERVISION_SERVICE,
        add,
        {SUPERVISION_SERVICE: frozenset({Role.REGULATOR})},
        # Who accessed a document is itself subscriber data: the regulator's queries are recorded.
        subscriber_data=frozenset({"QueryAudit"}),
        no_subscriber_data=frozenset({"RecordEnforcement", "LiftSuspension", "ListEnforcements"}),
    )


def action_message(action: ActionRow) -> spb.EnforcementAction:
    """The protobuf EnforcementAction."""
    return spb.EnforcementAction(
        action_id=str(action.id),
        operator=action.operator_id,
        kind=EnforcementKind[action.kind].value,  # type: ignore[arg-type]
        amount_yuan=action.amount_yuan or 0,
        reason=action.reason,
        recorded_at=timestamp(action.recorded_at),
        lifted_at=timestamp(action.lifted_at),
        ca_revoked=action.ca_revoked,
    )


def standing_message(standing: Standing) -> spb.OperatorStanding:
    """The protobuf OperatorStanding."""
    return spb.OperatorStanding(
        operator=standing.operator,
        kind=standing.kind,
        warnings=standing.warnings,
        fines=standing.fines,
        fines_total_yuan=standing.fines_total_yuan,
        suspensions=standing.suspensions,
        activation_suspended=standing.activation_suspended,
        ca_revoked=standing.ca_revoked,
        licence_status=standing.licence_status,
    )


class SupervisionServicer(sgrpc.SupervisionServiceServicer):
    """Translates the regulator's calls to the enforcement desk and the audit trail."""

    def __init__(
        self, desk: EnforcementDesk, trail: AuditTrail, pseudonymizer: Pseudonymizer
    ) -> None:
        self._desk = desk
        self._trail = trail
        self._pseudo = pseudonymizer

    def RecordEnforcement(
        self, request: spb.RecordEnforcementRequest, context: grpc.ServicerContext
    ) -> spb.RecordEnforcementResponse:
        """Records an action against an operator."""
        v = Violations()
        kind = None
        try:
            kind = EnforcementKind(request.kind)
        except ValueError:
            v.add("kind", "must be a known enforcement kind")
        if not request.operator:
            v.add("operator", "is required")
        v.raise_if_any()
        assert kind is not None
        action, standing = self._desk.record(
            current_principal().name, request.operator, kind, request.amount_yuan, request.reason
        )
        return spb.RecordEnforcementResponse(
            action=action_message(action), standing=standing_message(standing)
        )

    def LiftSuspension(
        self, request: spb.LiftSuspensionRequest, context: grpc.ServicerContext
    ) -> spb.LiftSuspensionResponse:
        """Lifts an activation suspension."""
        action, standing = self._desk.lift(request.action_id)
        return spb.LiftSuspensionResponse(
            action=action_message(action), standing=standing_message(standing)
        )

    def ListEnforcements(
        self, request: spb.ListEnforcementsRequest, context: grpc.ServicerContext
    ) -> spb.ListEnforcementsResponse:
        """Lists actions and standings."""
        actions, standings = self._desk.list(request.operator or None)
        return spb.ListEnforcementsResponse(
            actions=[action_message(a) for a in actions],
            standings=[standing_message(s) for s in standings],
        )

    def QueryAudit(
        self, request: spb.QueryAuditRequest, context: grpc.ServicerContext
    ) -> spb.QueryAuditResponse:
        """Audit records of a document or of a principal."""
        v = Violations()
        subject = None
        has_document = request.HasField("document")
        if has_document == bool(request.principal):
            v.add("document", "give exactly one of document and principal")
        elif has_document:
            today = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).date()
            doc = validation.check_document(
                v, request.document.type, request.document.number, today
            )
            if doc is not None:
                subject = self._pseudo.document_key(doc)
        else:
            try:
                Principal.parse(request.principal)
            except ValueError:
                v.add("principal", "must be a principal name such as operator-cmcc")
        if not 0 <= request.limit <= MAX_AUDIT_RECORDS:
            v.add("limit", f"must be between 0 and {MAX_AUDIT_RECORDS}")
        v.raise_if_any()
        since = datetime_of(request.since, "since") if request.HasField("since") else None
        records = self._trail.query(
            subject=subject,
            principal=request.principal or None,
            since=since,
            limit=request.limit or 100,
        )
        return spb.QueryAuditResponse(
            entries=[
                spb.AuditEntry(
                    id=r.id,
                    at=timestamp(r.at),
                    principal=r.principal,
                    method=r.method,
                    outcome=r.outcome,
                    subject="" if r.subject is None else r.subject.hex()[:16],
                )
                for r in records
            ]
        )
