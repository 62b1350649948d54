"""gRPC servicer of realname.v1.ComplianceService: the regulator's figures."""

from __future__ import annotations

import grpc

from services.domain.principal import Role
from services.features.compliance import ComplianceDesk, OperatorFigures, Target
from services.proto.realname.v1 import compliance_pb2 as cpb
from services.proto.realname.v1 import compliance_pb2_grpc as cgrpc
from services.rpc.convert import timestamp
from services.rpc.server import ServiceBinding

COMPLIANCE_SERVICE = cpb.DESCRIPTOR.services_by_name["ComplianceService"].full_name


def compliance_binding(desk: ComplianceDesk) -> ServiceBinding:
    """ComplianceService, for the regulator only."""

    def add(server: grpc.Server) -> None:
        cgrpc.add_ComplianceServiceServicer_to_server(ComplianceServicer(desk), server)

    return ServiceBinding(
        COMPLIANCE_SERVICE,
        add,
        {COMPLIANCE_SERVICE: frozenset({Role.REGULATOR})},
        subscriber_data=frozenset(),
        no_subscriber_data=frozenset({"GetComplianceReport"}),  # counts only, no document
    )


def operator_message(f: OperatorFigures, targets: list[Target]) -> cpb.OperatorCompliance:
    """The protobuf figures of one operator."""
    return cpb.OperatorCompliance(
        operator=f.operator,
        kind=f.kind,
        live_cards=f.live_cards,
        verified_cards=f.verified_cards,
        real_name_rate=f.real_name_rate,
        targets=[
            cpb.RateTarget(
                rate=t.rate,
                due=t.due.isoformat(),
                met=f.shortfall(t) == 0,
                shortfall_cards=f.shortfall(t),
            )
            for t in targets
        ],
        documents_by_cards=f.documents_by_cards,
        documents_over_cap=f.documents_over_cap,
        cards_by_stage=f.cards_by_stage,
        disputes_opened=f.disputes_opened,
        disputes_resolved=f.disputes_resolved,
        agents_flagged=f.agents_flagged,
        agents_suspended=f.agents_suspended,
        stores_authorized=f.stores_authorized,
        stores_revoked=f.stores_revoked,
        enforcement_actions=f.enforcement_actions,
    )


class ComplianceServicer(cgrpc.ComplianceServiceServicer):
    """Computes the compliance report for the regulator."""

    def __init__(self, desk: ComplianceDesk) -> None:
        self._desk = desk

    def GetComplianceReport(
        self, request: cpb.GetComplianceReportRequest, context: grpc.ServicerContext
    ) -> cpb.GetComplianceReportResponse:
        """The figures now, and the daily history."""
        report = self._desk.report(request.operator or None)
        return cpb.GetComplianceReportResponse(
            computed_at=timestamp(report.computed_at),
            operators=[operator_message(f, report.targets) for f in report.operators],
            provinces=[
                cpb.ProvinceCompliance(
                    province=p.province,
                    live_cards=p.live_cards,
                    verified_cards=p.verified_cards,
                    real_name_rate=p.real_name_rate,
                )
                for p in report.provinces
            ],
            history=[
                cpb.RateSample(day=day, operator=op, real_name_rate=rate)
                for day, op, rate in report.history
            ],
        )
