"""gRPC servicer of realname.v1.ProofingService: translate, call the proofing desk, translate."""

from __future__ import annotations

import datetime as dt

import grpc

from services.domain import validation
from services.domain.attestation import ReaderAttestation
from services.domain.documents import Document
from services.domain.errors import Violations
from services.domain.principal import Role
from services.domain.records import ReaderRow, SignalRow
from services.features.proofing import Policy, ProofingDesk, ReaderLocation
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import proofing_pb2 as ppb
from services.proto.realname.v1 import proofing_pb2_grpc as pgrpc
from services.proto.realname.v1 import verification_pb2 as vpb
from services.rpc.convert import timestamp
from services.rpc.interceptor import current_principal
from services.rpc.server import ServiceBinding

PROOFING_SERVICE = ppb.DESCRIPTOR.services_by_name["ProofingService"].full_name


def proofing_binding(desk: ProofingDesk) -> ServiceBinding:
    """The ProofingService binding: operators run their policy, readers and nonces."""

    def add(server: grpc.Server) -> None:
        pgrpc.add_ProofingServiceServicer_to_server(ProofingServicer(desk), server)

    operator = frozenset({Role.OPERATOR})
    regulator = frozenset({Role.REGULATOR})
    rules = {
        PROOFING_SERVICE: operator,
        f"{PROOFING_SERVICE}/BlockDocument": regulator,
        f"{PROOFING_SERVICE}/UnblockDocument": regulator,
        f"{PROOFING_SERVICE}/ListFraudSignals": operator | regulator,
    }
    return ServiceBinding(
        PROOFING_SERVICE,
        add,
        rules,
        subscriber_data=frozenset({"BlockDocument", "UnblockDocument"}),
        # Fraud signals name readers and agents, never a person.
        no_subscriber_data=frozenset(
            {
                "SetProofingPolicy",
                "GetProofingPolicy",
                "RegisterReader",
                "ListReaders",
                "RevokeReader",
                "GetAttestationNonce",
                "ListFraudSignals",
            }
        ),
    )


def attestation_of(request: vpb.ActivateCardRequest) -> ReaderAttestation | None:
    """The ReaderAttestation an ActivateCardRequest carries, or None."""
    if not request.HasField("attestation"):
        return None
    return ReaderAttestation(request.attestation.payload, request.attestation.signature)


def _today() -> dt.date:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).date()


def _document(document: cpb.Document) -> Document:
    v = Violations()
    doc = validation.check_document(v, document.type, document.number, _today())
    v.raise_if_any()
    assert doc is not None
    return doc


def _policy_message(policy: Policy | None) -> ppb.ProofingPolicy:
    if policy is None:
        return ppb.ProofingPolicy(enabled=False)
    return ppb.ProofingPolicy(
        enabled=True,
        attestation_required=policy.attestation_required,
        identity_check_required=policy.identity_check_required,
        face_match_threshold_permille=policy.face_match_threshold_permille,
        freshness_seconds=policy.freshness_seconds,
        updated_at=timestamp(policy.updated_at),
    )


def reader_message(row: ReaderRow) -> ppb.Reader:
    """The protobuf Reader of a stored reader."""
    revoked = row.revoked_at is not None
    return ppb.Reader(
        serial=row.serial,
        operator=row.operator_id,
        agent_id=row.agent_id,
        key_algorithm=row.key_algorithm,
        key_fingerprint=row.key_fingerprint,
        location=None
        if row.latitude is None or row.longitude is None
        else ppb.ReaderLocation(
            latitude=row.latitude, longitude=row.longitude, label=row.location_label
        ),
        status=ppb.READER_STATUS_REVOKED if revoked else ppb.READER_STATUS_ACTIVE,
        registered_at=timestamp(row.registered_at),
        revoked_at=timestamp(row.revoked_at),
        revocation_reason=row.revocation_reason or "",
    )


def _signal_message(row: SignalRow) -> ppb.FraudSignal:
    return ppb.FraudSignal(
        id=row.id,
        kind=ppb.FraudSignalKind.Value(f"FRAUD_SIGNAL_KIND_{row.kind}"),
        operator=row.operator_id,
        agent_id=row.agent_id,
        reader_serial=row.reader_serial,
        detail=row.detail,
        observed_at=timestamp(row.observed_at),
    )


class ProofingServicer(pgrpc.ProofingServiceServicer):
    """Exposes the proofing desk to operators and the regulator."""

    def __init__(self, desk: ProofingDesk) -> None:
        self._desk = desk

    def SetProofingPolicy(
        self, request: ppb.SetProofingPolicyRequest, context: grpc.ServicerContext
    ) -> ppb.SetProofingPolicyResponse:
        """Turns proofing on for the caller (or changes it), or off with enabled=false."""
        p = request.policy
        if not p.enabled:
            self._desk.turn_off(current_principal().organisation)
            return ppb.SetProofingPolicyResponse(policy=_policy_message(None))
        policy = self._desk.set_policy(
            current_principal().organisation,
            Policy(
                attestation_required=p.attestation_required,
                identity_check_required=p.identity_check_required,
                face_match_threshold_permille=p.face_match_threshold_permille,
                freshness_seconds=p.freshness_seconds or 300,
            ),
        )
        return ppb.SetProofingPolicyResponse(policy=_policy_message(policy))

    def GetProofingPolicy(
        self, request: ppb.GetProofingPolicyRequest, context: grpc.ServicerContext
    ) -> ppb.GetProofingPolicyResponse:
        """The caller's policy."""
        policy = self._desk.get_policy(current_principal().organisation)
        return ppb.GetProofingPolicyResponse(policy=_policy_message(policy))

    def RegisterReader(
        self, request: ppb.RegisterReaderRequest, context: grpc.ServicerContext
    ) -> ppb.RegisterReaderResponse:
        """Registers a reader to one of the caller's agents."""
        loc = request.location
        row = self._desk.register_reader(
            current_principal().organisation,
            request.serial,
            request.agent_id,
            request.public_key_pem,
            # No location message is "unknown", not (0, 0).
            ReaderLocation(loc.latitude, loc.longitude, loc.label)
            if request.HasField("location")
            else None,
        )
        return ppb.RegisterReaderResponse(reader=reader_message(row))

    def ListReaders(
        self, request: ppb.ListReadersRequest, context: grpc.ServicerContext
    ) -> ppb.ListReadersResponse:
        """The caller's readers."""
        rows = self._desk.list_readers(current_principal().organisation, request.agent_id)
        return ppb.ListReadersResponse(readers=[reader_message(r) for r in rows])

    def RevokeReader(
        self, request: ppb.RevokeReaderRequest, context: grpc.ServicerContext
    ) -> ppb.RevokeReaderResponse:
        """Revokes one of the caller's readers."""
        row = self._desk.revoke_reader(
            current_principal().organisation, request.serial, request.reason
        )
        return ppb.RevokeReaderResponse(reader=reader_message(row))

    def GetAttestationNonce(
        self, request: ppb.GetAttestationNonceRequest, context: grpc.ServicerContext
    ) -> ppb.GetAttestationNonceResponse:
        """A single-use nonce for the caller's next attestation."""
        nonce, expires = self._desk.issue_nonce(current_principal().organisation)
        return ppb.GetAttestationNonceResponse(nonce=nonce, expires_at=timestamp(expires))

    def BlockDocument(
        self, request: ppb.BlockDocumentRequest, context: grpc.ServicerContext
    ) -> ppb.BlockDocumentResponse:
        """Blocks a document (regulator)."""
        v = Violations()
        doc = validation.check_document(v, request.document.type, request.document.number, _today())
        known = request.reason in ppb.BlockReason.values()
        reason = ppb.BlockReason.Name(request.reason).removeprefix("BLOCK_REASON_") if known else ""
        if request.reason == ppb.BLOCK_REASON_UNSPECIFIED or not known:
            v.add("reason", "must be BLOCK_REASON_LOST, _STOLEN or _CANCELLED")
        v.raise_if_any()
        assert doc is not None
        outcome = self._desk.block_document(doc, reason, request.reference)
        return ppb.BlockDocumentResponse(
            document_masked=outcome.document_masked,
            already_blocked=outcome.already_blocked,
            cards_flagged=outcome.cards_flagged,
        )

    def UnblockDocument(
        self, request: ppb.UnblockDocumentRequest, context: grpc.ServicerContext
    ) -> ppb.UnblockDocumentResponse:
        """Unblocks a document (regulator)."""
        doc = _document(request.document)
        was = self._desk.unblock_document(doc)
        return ppb.UnblockDocumentResponse(document_masked=doc.masked(), was_blocked=was)

    def ListFraudSignals(
        self, request: ppb.ListFraudSignalsRequest, context: grpc.ServicerContext
    ) -> ppb.ListFraudSignalsResponse:
        """Signals: an operator's own, or (regulator) everyone's."""
        rows = self._desk.list_signals(current_principal(), request.operator or None, request.limit)
        return ppb.ListFraudSignalsResponse(signals=[_signal_message(r) for r in rows])
