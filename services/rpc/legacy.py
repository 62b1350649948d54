"""gRPC servicer of realname.v1.LegacyService: translate, call the legacy desk, translate."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import grpc

from services.domain import validation
from services.domain.errors import FieldViolation, InvalidArgument, Violations
from services.domain.holder_names import holder_name_problem
from services.domain.principal import Role
from services.domain.records import ImportRecord, PolicyRecord
from services.features.legacy import (
    DEFAULT_GRACE_DAYS,
    DEFAULT_TERMINATION_DAYS,
    ImportHeader,
    ImportOutcome,
    LegacyDesk,
    RawRow,
    RowBatch,
)
from services.proto.realname.v1 import legacy_pb2 as lpb
from services.proto.realname.v1 import legacy_pb2_grpc as lgrpc
from services.rpc.convert import card_message, timestamp
from services.rpc.interceptor import current_principal
from services.rpc.server import ServiceBinding

LEGACY_SERVICE = lpb.DESCRIPTOR.services_by_name["LegacyService"].full_name


def legacy_binding(desk: LegacyDesk) -> ServiceBinding:
    """The LegacyService binding: operators only, each on its own subscribers."""

    def add(server: grpc.Server) -> None:
        lgrpc.add_LegacyServiceServicer_to_server(LegacyServicer(desk), server)

    return ServiceBinding(
        LEGACY_SERVICE,
        add,
        {LEGACY_SERVICE: frozenset({Role.OPERATOR})},
        subscriber_data=frozenset({"ImportLegacy", "CompleteRegistration"}),
        no_subscriber_data=frozenset({"GetImport", "SetDeadlinePolicy", "GetDeadlinePolicy"}),
    )


def import_message(record: ImportRecord) -> lpb.LegacyImport:
    """The protobuf LegacyImport for an import record."""
    return lpb.LegacyImport(
        import_id=record.import_id,
        state=lpb.ImportState.Value(f"IMPORT_STATE_{record.state}"),
        total_rows=record.total_rows,
        bad_rows=record.bad_rows,
        max_bad_ratio=record.max_bad_ratio,
        committed_rows=record.committed_rows,
        imported_rows=record.imported_rows,
        failed_rows=record.failed_rows,
        updated_at=timestamp(record.updated_at),
        documents_over_cap=record.documents_over_cap,
    )


def _policy_message(policy: PolicyRecord) -> lpb.DeadlinePolicy:
    return lpb.DeadlinePolicy(
        deadline=policy.deadline.isoformat(),
        grace_days=policy.grace_days,
        termination_days=policy.termination_days,
        updated_at=timestamp(policy.updated_at),
    )


def _batches(requests: Iterator[lpb.ImportLegacyRequest]) -> Iterator[RowBatch]:
    for request in requests:
        if request.WhichOneof("part") != "batch":
            raise InvalidArgument(
                [FieldViolation("batch", "only the first message may be a header")]
            )
        batch = request.batch
        rows = [
            RawRow(r.msisdn, r.iccid, r.status, r.document.type, r.document.number, r.activated_on)
            for r in batch.rows
        ]
        yield RowBatch(batch.first_row, rows)


def _outcome_message(outcome: ImportOutcome) -> lpb.ImportLegacyResponse:
    return lpb.ImportLegacyResponse(
        legacy_import=import_message(outcome.record),
        errors=[lpb.RowError(row=e.row, field=e.field, reason=e.reason) for e in outcome.errors],
        errors_truncated=outcome.errors_truncated,
        skipped_rows=outcome.skipped_rows,
    )


class LegacyServicer(lgrpc.LegacyServiceServicer):
    """Exposes the legacy desk to operators."""

    def __init__(self, desk: LegacyDesk) -> None:
        self._desk = desk

    def ImportLegacy(
        self, request_iterator: Iterator[lpb.ImportLegacyRequest], context: grpc.ServicerContext
    ) -> lpb.ImportLegacyResponse:
        """Validates or commits a stream of rows (see the proto)."""
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument([FieldViolation("header", "the first message must be a header")])
        h = first.header
        header = ImportHeader(h.import_id, h.total_rows, h.max_bad_ratio)
        operator = current_principal().organisation
        if h.mode == lpb.IMPORT_MODE_VALIDATE:
            outcome = self._desk.validate(operator, header, _batches(request_iterator))
        elif h.mode == lpb.IMPORT_MODE_COMMIT:
            outcome = self._desk.commit(operator, header, _batches(request_iterator))
        else:
            raise InvalidArgument([FieldViolation("header.mode", "must be VALIDATE or COMMIT")])
        return _outcome_message(outcome)

    def GetImport(
        self, request: lpb.GetImportRequest, context: grpc.ServicerContext
    ) -> lpb.GetImportResponse:
        """Returns one of the caller's imports."""
        record = self._desk.get_import(current_principal().organisation, request.import_id)
        return lpb.GetImportResponse(legacy_import=import_message(record))

    def CompleteRegistration(
        self, request: lpb.CompleteRegistrationRequest, context: grpc.ServicerContext
    ) -> lpb.CompleteRegistrationResponse:
        """Verifies a legacy card under the holder's document."""
        v = Violations()
        msisdn = validation.check_msisdn(v, request.msisdn)
        doc = validation.check_document(
            v, request.document.type, request.document.number, self._desk.today()
        )
        name = request.holder_name
        name_problem = holder_name_problem(name) if name else None
        if name_problem is not None:
            v.add("holder_name", name_problem)
        v.raise_if_any()
        assert msisdn is not None and doc is not None
        card = self._desk.complete_registration(
            current_principal().organisation, msisdn, doc, name or None
        )
        return lpb.CompleteRegistrationResponse(card=card_message(card))

    def SetDeadlinePolicy(
        self, request: lpb.SetDeadlinePolicyRequest, context: grpc.ServicerContext
    ) -> lpb.SetDeadlinePolicyResponse:
        """Sets the caller's deadline policy."""
        p = request.policy
        try:
            deadline = dt.date.fromisoformat(p.deadline)
        except ValueError:
            raise InvalidArgument(
                [FieldViolation("policy.deadline", "must be a date YYYY-MM-DD")]
            ) from None
        policy = self._desk.set_policy(
            current_principal().organisation,
            deadline,
            p.grace_days or DEFAULT_GRACE_DAYS,
            p.termination_days or DEFAULT_TERMINATION_DAYS,
        )
        return lpb.SetDeadlinePolicyResponse(policy=_policy_message(policy))

    def GetDeadlinePolicy(
        self, request: lpb.GetDeadlinePolicyRequest, context: grpc.ServicerContext
    ) -> lpb.GetDeadlinePolicyResponse:
        """Returns the caller's deadline policy."""
        policy = self._desk.get_policy(current_principal().organisation)
        return lpb.GetDeadlinePolicyResponse(policy=_policy_message(policy))
