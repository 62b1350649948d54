"""gRPC servicer of realname.v1.RegistryService: translate, call the seller registry, translate."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from registry.authz.records import (
    ApplicationRecord,
    ApplicationRequest,
    AuthorizationRecord,
    Contact,
    Qualifications,
)
from registry.authz.tables import APP_APPROVED, APP_DENIED, APP_ISSUED, APP_SUBMITTED
from registry.authz.workflow import MAX_VALIDITY
from registry.pki.issuance import STORE_VALIDITY
from registry.pki.scope import CardType, Scope
from services.domain.errors import Violations
from services.domain.principal import Role
from services.features.seller_checks import SellerChecks, SellerVerdict, check_filters, sweep_limits
from services.features.sellers import SellerDesk
from services.features.transparency import (
    INCLUDED,
    NOT_LOGGED,
    PENDING,
    CertificateInclusion,
    TransparencyLog,
)
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import registry_pb2 as rpb
from services.proto.realname.v1 import registry_pb2_grpc as rgrpc
from services.rpc.convert import timestamp
from services.rpc.interceptor import current_principal
from services.rpc.server import ServiceBinding

REGISTRY_SERVICE = rpb.DESCRIPTOR.services_by_name["RegistryService"].full_name

_READERS = frozenset({Role.OPERATOR, Role.MARKETPLACE, Role.COURIER, Role.REGULATOR})


def registry_binding(
    desk: SellerDesk, checks: SellerChecks, log: TransparencyLog | None = None
) -> ServiceBinding:
    """The RegistryService binding with its per-method access rules (see the proto).

    With ``log``, VerifySeller can return the inclusion proofs of the certificates it verifies.
    """

    def add(server: grpc.Server) -> None:
        rgrpc.add_RegistryServiceServicer_to_server(RegistryServicer(desk, checks, log), server)

    operators = frozenset({Role.OPERATOR})
    rules = {
        REGISTRY_SERVICE: operators,
        f"{REGISTRY_SERVICE}/SubmitApplication": frozenset({Role.OPERATOR, Role.MARKETPLACE}),
        f"{REGISTRY_SERVICE}/GetApplication": frozenset({Role.OPERATOR, Role.MARKETPLACE}),
        f"{REGISTRY_SERVICE}/GetAuthorization": _READERS,
        f"{REGISTRY_SERVICE}/ListAuthorizations": _READERS,
        f"{REGISTRY_SERVICE}/VerifySeller": _READERS,
        f"{REGISTRY_SERVICE}/VerifySellers": frozenset({Role.MARKETPLACE, Role.REGULATOR}),
    }
    # Sellers are businesses: nothing here is subscriber data.
    return ServiceBinding(
        REGISTRY_SERVICE,
        add,
        rules,
        subscriber_data=frozenset(),
        no_subscriber_data=frozenset(
            {
                "SubmitApplication",
                "GetApplication",
                "ListApplications",
                "ReviewApplication",
                "IssueAuthorization",
                "RenewAuthorization",
                "RevokeAuthorization",
                "GetAuthorization",
                "ListAuthorizations",
                "VerifySeller",
                "VerifySellers",
            }
        ),
    )


_CARD_TYPES = {cpb.CARD_TYPE_PERSONAL: CardType.PERSONAL, cpb.CARD_TYPE_INDUSTRY: CardType.INDUSTRY}
_CARD_TYPE_VALUES = {value: key for key, value in _CARD_TYPES.items()}
_APP_STATUS = {
    APP_SUBMITTED: rpb.APPLICATION_STATUS_SUBMITTED,
    APP_APPROVED: rpb.APPLICATION_STATUS_APPROVED,
    APP_DENIED: rpb.APPLICATION_STATUS_DENIED,
    APP_ISSUED: rpb.APPLICATION_STATUS_ISSUED,
}
_APP_STATUS_NAMES = {value: key for key, value in _APP_STATUS.items()}


def _scope_message(scope: Scope) -> rpb.Scope:
    return rpb.Scope(
        card_types=[_CARD_TYPE_VALUES[t] for t in sorted(scope.card_types)],
        provinces=sorted(scope.provinces),
        nationwide=scope.nationwide,
    )


def _card_type_names(v: Violations, values: list[int], path: str) -> tuple[str, ...]:
    names = []
    for value in values:
        card_type = _CARD_TYPES.get(value)  # type: ignore[call-overload]
        if card_type is None:
            v.add(path, "must list CARD_TYPE_PERSONAL or CARD_TYPE_INDUSTRY")
            return ()
        names.append(card_type.value)
    return tuple(names)


def _optional_card_type(v: Violations, value: int) -> CardType | None:
    if value == cpb.CARD_TYPE_UNSPECIFIED:
        return None
    card_type: CardType | None = _CARD_TYPES.get(value)  # type: ignore[call-overload]
    if card_type is None:
        v.add("card_type", "unknown card type")
    return card_type


def _validity(days: int) -> dt.timedelta:
    # Clamped into timedelta's range (int32 days overflow it); the workflow refuses out-of-range.
    return dt.timedelta(days=max(-1, min(days, MAX_VALIDITY.days + 1))) if days else STORE_VALIDITY


def application_message(record: ApplicationRecord) -> rpb.Application:
    """The protobuf Application for a stored application."""
    q = record.qualifications
    qualifications = rpb.Qualifications(
        business_licence_number=q.business_licence,
        contact=rpb.Contact(name=q.contact.name, phone=q.contact.phone, email=q.contact.email),
    )
    if q.protection_certification is not None:
        qualifications.protection_certification = q.protection_certification
    if q.protection_level is not None:
        qualifications.protection_assessment_level = q.protection_level
    message = rpb.Application(
        application_id=record.id,
        operator=record.operator,
        store=rpb.Store(
            shop=rpb.Shop(marketplace=record.marketplace, shop_id=record.shop_id),
            legal_name=record.legal_name,
            credit_code=record.credit_code,
        ),
        scope=_scope_message(record.scope),
        qualifications=qualifications,
        status=_APP_STATUS[record.status],
        submitted_by=record.submitted_by,
        submitted_at=timestamp(record.submitted_at),
        authorization_serial=record.serial_hex or "",
    )
    if record.reviewed_at is not None:
        message.review.CopyFrom(
            rpb.Review(
                decision=(
                    rpb.REVIEW_DECISION_DENY
                    if record.status == APP_DENIED
                    else rpb.REVIEW_DECISION_APPROVE
                ),
                reason=record.decision_reason or "",
                assessment=record.assessment or "",
                reviewed_by=record.reviewed_by or "",
                reviewed_at=timestamp(record.reviewed_at),
            )
        )
    return message


def authorization_message(record: AuthorizationRecord, now: dt.datetime) -> rpb.Authorization:
    """The protobuf Authorization for a stored authorization (status as of ``now``)."""
    if record.revoked_at is not None:
        status = rpb.AUTHORIZATION_STATUS_REVOKED
    elif record.expired(now):
        status = rpb.AUTHORIZATION_STATUS_EXPIRED
    else:
        status = rpb.AUTHORIZATION_STATUS_ACTIVE
    return rpb.Authorization(
        serial=record.serial_hex,
        operator=record.operator,
        store=rpb.Store(
            shop=rpb.Shop(marketplace=record.marketplace, shop_id=record.shop_id),
            legal_name=record.legal_name,
            credit_code=record.credit_code,
        ),
        scope=_scope_message(record.scope),
        not_before=timestamp(record.not_before),
        not_after=timestamp(record.not_after),
        status=status,
        revoked_at=timestamp(record.revoked_at),
        revocation_reason=record.revocation_reason or 0,  # type: ignore[arg-type]
        renewed_from=record.renewed_from or "",
        superseded_by=record.superseded_by or "",
        application_id=record.application_id or 0,
        issued_at=timestamp(record.issued_at),
        current=record.is_current,
        certificate=record.certificate,
    )


_VERDICT_REASONS = {
    name: rpb.VerdictReason.Value(f"VERDICT_REASON_{name}")
    for name in (
        "AUTHORIZED",
        "REVOKED",
        "EXPIRED",
        "NOT_YET_VALID",
        "OPERATOR_REVOKED",
        "OUT_OF_SCOPE",
        "UNKNOWN_STORE",
        "INVALID_SIGNATURE",
    )
}


def verdict_message(verdict: SellerVerdict) -> rpb.SellerVerdict:
    """The protobuf SellerVerdict for a domain verdict (unset fields stay empty)."""
    message = rpb.SellerVerdict(
        reason=_VERDICT_REASONS[verdict.reason.value],
        authorized=verdict.authorized,
        detail=verdict.detail,
        shop=rpb.Shop(marketplace=verdict.marketplace, shop_id=verdict.shop_id),
        serial=verdict.serial_hex,
        operator=verdict.operator,
        legal_name=verdict.legal_name,
        credit_code=verdict.credit_code,
        not_before=timestamp(verdict.not_before),
        not_after=timestamp(verdict.not_after),
        revoked_at=timestamp(verdict.revoked_at),
        revocation_reason=verdict.revocation_reason or 0,  # type: ignore[arg-type]
    )
    if verdict.scope is not None:
        message.scope.CopyFrom(_scope_message(verdict.scope))
    return message


_INCLUSION_STATUS = {
    INCLUDED: rpb.LOG_INCLUSION_STATUS_INCLUDED,
    PENDING: rpb.LOG_INCLUSION_STATUS_PENDING,
    NOT_LOGGED: rpb.LOG_INCLUSION_STATUS_NOT_LOGGED,
}


def inclusion_message(inclusion: CertificateInclusion) -> rpb.LogInclusion:
    """The protobuf LogInclusion for a certificate's place in the log."""
    return rpb.LogInclusion(
        status=_INCLUSION_STATUS[inclusion.status],
        leaf_index=inclusion.leaf_index,
        tree_size=inclusion.tree_size,
        hashes=list(inclusion.hashes),
        entry=inclusion.entry,
        leaf_hash=inclusion.leaf_hash,
        checkpoint=inclusion.checkpoint,
    )


def _der(certificate: bytes) -> bytes:
    """The DER of a presented certificate (PEM or DER; already parsed once by the verifier)."""
    if certificate.lstrip().startswith(b"-----BEGIN"):
        loaded = x509.load_pem_x509_certificate(certificate)
        return loaded.public_bytes(serialization.Encoding.DER)
    return certificate


class RegistryServicer(rgrpc.RegistryServiceServicer):
    """Exposes the seller registry; its rules: SellerDesk, SellerChecks, registry.authz."""

    def __init__(
        self, desk: SellerDesk, checks: SellerChecks, log: TransparencyLog | None = None
    ) -> None:
        self._desk = desk
        self._checks = checks
        self._log = log

    def _log_inclusion(self, verdict: SellerVerdict, certificate: bytes | None) -> rpb.LogInclusion:
        if self._log is None:
            return rpb.LogInclusion(status=rpb.LOG_INCLUSION_STATUS_UNAVAILABLE)
        if certificate is None:
            if not verdict.serial_hex:
                return rpb.LogInclusion(status=rpb.LOG_INCLUSION_STATUS_NOT_LOGGED)
            certificate = self._desk.get_authorization(verdict.serial_hex).certificate
        return inclusion_message(self._log.certificate_inclusion(certificate))

    def SubmitApplication(
        self, request: rpb.SubmitApplicationRequest, context: grpc.ServicerContext
    ) -> rpb.SubmitApplicationResponse:
        """Files an application."""
        v = Violations()
        card_types = _card_type_names(v, list(request.scope.card_types), "scope.card_types")
        v.raise_if_any()
        q = request.qualifications
        which = q.WhichOneof("information_protection")
        app = ApplicationRequest(
            operator=request.operator,
            marketplace=request.store.shop.marketplace,
            shop_id=request.store.shop.shop_id,
            legal_name=request.store.legal_name,
            credit_code=request.store.credit_code,
            card_types=card_types,
            provinces=tuple(request.scope.provinces),
            nationwide=request.scope.nationwide,
            csr=request.csr,
            qualifications=Qualifications(
                business_licence=q.business_licence_number,
                protection_certification=(
                    q.protection_certification if which == "protection_certification" else None
                ),
                protection_level=(
                    q.protection_assessment_level
                    if which == "protection_assessment_level"
                    else None
                ),
                contact=Contact(q.contact.name, q.contact.phone, q.contact.email),
            ),
        )
        record = self._desk.submit_application(current_principal(), app)
        return rpb.SubmitApplicationResponse(application=application_message(record))

    def GetApplication(
        self, request: rpb.GetApplicationRequest, context: grpc.ServicerContext
    ) -> rpb.GetApplicationResponse:
        """Returns one application."""
        record = self._desk.get_application(current_principal(), request.application_id)
        return rpb.GetApplicationResponse(application=application_message(record))

    def ListApplications(
        self, request: rpb.ListApplicationsRequest, context: grpc.ServicerContext
    ) -> rpb.ListApplicationsResponse:
        """Lists the caller's applications."""
        records = self._desk.list_applications(
            current_principal(),
            _APP_STATUS_NAMES.get(request.status),
            request.after_application_id,
            request.page_size,
        )
        return rpb.ListApplicationsResponse(applications=[application_message(r) for r in records])

    def ReviewApplication(
        self, request: rpb.ReviewApplicationRequest, context: grpc.ServicerContext
    ) -> rpb.ReviewApplicationResponse:
        """Approves or denies an application."""
        v = Violations()
        if request.decision not in (rpb.REVIEW_DECISION_APPROVE, rpb.REVIEW_DECISION_DENY):
            v.add("decision", "must be REVIEW_DECISION_APPROVE or REVIEW_DECISION_DENY")
        v.raise_if_any()
        record = self._desk.review_application(
            current_principal(),
            request.application_id,
            approve=request.decision == rpb.REVIEW_DECISION_APPROVE,
            reason=request.reason,
            assessment=request.assessment,
        )
        return rpb.ReviewApplicationResponse(application=application_message(record))

    def IssueAuthorization(
        self, request: rpb.IssueAuthorizationRequest, context: grpc.ServicerContext
    ) -> rpb.IssueAuthorizationResponse:
        """Issues an approved application's certificate."""
        record = self._desk.issue(
            current_principal(),
            request.application_id,
            _validity(request.validity_days),
        )
        return rpb.IssueAuthorizationResponse(
            authorization=authorization_message(record, self._desk.now())
        )

    def RenewAuthorization(
        self, request: rpb.RenewAuthorizationRequest, context: grpc.ServicerContext
    ) -> rpb.RenewAuthorizationResponse:
        """Renews an authorization."""
        renewed, previous = self._desk.renew(
            current_principal(),
            request.serial,
            request.csr or None,
            _validity(request.validity_days),
        )
        now = self._desk.now()
        return rpb.RenewAuthorizationResponse(
            authorization=authorization_message(renewed, now),
            previous=authorization_message(previous, now),
        )

    def RevokeAuthorization(
        self, request: rpb.RevokeAuthorizationRequest, context: grpc.ServicerContext
    ) -> rpb.RevokeAuthorizationResponse:
        """Revokes an authorization."""
        record = self._desk.revoke(
            current_principal(), request.serial, int(request.reason), request.comment or None
        )
        return rpb.RevokeAuthorizationResponse(
            authorization=authorization_message(record, self._desk.now())
        )

    def GetAuthorization(
        self, request: rpb.GetAuthorizationRequest, context: grpc.ServicerContext
    ) -> rpb.GetAuthorizationResponse:
        """Returns one authorization."""
        record = self._desk.get_authorization(request.serial)
        return rpb.GetAuthorizationResponse(
            authorization=authorization_message(record, self._desk.now())
        )

    def ListAuthorizations(
        self, request: rpb.ListAuthorizationsRequest, context: grpc.ServicerContext
    ) -> rpb.ListAuthorizationsResponse:
        """Lists authorizations."""
        records = self._desk.list_authorizations(
            operator=request.operator or None,
            marketplace=request.marketplace or None,
            shop_id=request.shop_id or None,
            current_only=request.current_only,
            after_serial=request.after_serial,
            limit=request.page_size,
        )
        now = self._desk.now()
        return rpb.ListAuthorizationsResponse(
            authorizations=[authorization_message(r, now) for r in records]
        )

    def VerifySeller(
        self, request: rpb.VerifySellerRequest, context: grpc.ServicerContext
    ) -> rpb.VerifySellerResponse:
        """Verifies one seller, by shop or by certificate."""
        v = Violations()
        card_type = _optional_card_type(v, request.card_type)
        province, operator = check_filters(v, request.province, request.operator)
        which = request.WhichOneof("seller")
        if which is None:
            v.add("seller", "name a shop or give a certificate")
        elif which == "shop" and not (request.shop.marketplace and request.shop.shop_id):
            v.add("shop", "marketplace and shop_id are required")
        v.raise_if_any()
        if which == "certificate":
            verdict = self._checks.verify_certificate(request.certificate, card_type, province)
        else:
            verdict = self._checks.verify_shop(
                request.shop.marketplace, request.shop.shop_id, card_type, province, operator
            )
        message = verdict_message(verdict)
        if request.include_log_proof:
            presented = _der(request.certificate) if which == "certificate" else None
            message.log_inclusion.CopyFrom(self._log_inclusion(verdict, presented))
        return rpb.VerifySellerResponse(verdict=message, verified_at=timestamp(self._desk.now()))

    def VerifySellers(
        self, request_iterator: Iterator[rpb.VerifySellersRequest], context: grpc.ServicerContext
    ) -> Iterator[rpb.VerifySellersResponse]:
        """Answers each batch of a sweep with its verdicts, in order."""
        for request in request_iterator:
            v = Violations()
            shop_ids = list(request.shop_ids)
            sweep_limits(v, request.marketplace, shop_ids)
            card_type = _optional_card_type(v, request.card_type)
            province, operator = check_filters(v, request.province, request.operator)
            v.raise_if_any()
            verdicts = self._checks.verify_shops(
                request.marketplace, shop_ids, card_type, province, operator
            )
            yield rpb.VerifySellersResponse(
                verdicts=[_sweep_message(verdict) for verdict in verdicts],
                verified_at=timestamp(self._desk.now()),
            )


_SWEEP_SHOP = rpb.Shop


def _sweep_message(verdict: SellerVerdict) -> rpb.SellerVerdict:
    # The sweep's lean verdict: building every field would cost more than judging the shop.
    message = rpb.SellerVerdict(
        reason=_VERDICT_REASONS[verdict.reason.value],
        authorized=verdict.authorized,
        shop=_SWEEP_SHOP(marketplace=verdict.marketplace, shop_id=verdict.shop_id),
        serial=verdict.serial_hex,
        operator=verdict.operator,
    )
    # Whole seconds, set directly: FromDatetime costs more than the rest of the message.
    if verdict.not_after is not None:
        message.not_after.seconds = int(verdict.not_after.timestamp())
    if verdict.revoked_at is not None:
        message.revoked_at.seconds = int(verdict.revoked_at.timestamp())
    return message
