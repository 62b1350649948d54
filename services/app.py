"""The composition root: builds the domain services of a process and binds them to gRPC."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import grpc
from starlette.routing import BaseRoute

from registry.authz import authorities
from registry.authz.errors import RegistryError
from registry.clock import Clock, utc_now
from registry.delivery import DEFAULT_MAX_AGE, DeliveryBundle
from registry.pki import PkiError
from services.domain.errors import FailedPrecondition, Unavailable
from services.domain.principal import Role
from services.domain.pseudonym import Pseudonymizer
from services.domain.ratelimit import RateLimiter
from services.features.agents import AgentDesk, AgentGuard, AgentPolicy, flag_agent
from services.features.audit_trail import AuditTrail
from services.features.cards import CardDesk
from services.features.citizen import CitizenDesk
from services.features.compliance import DEFAULT_TARGETS, ComplianceDesk, parse_targets
from services.features.delivery import DeliveryConfig, DeliveryDesk
from services.features.delivery_bundle import export_bundle
from services.features.enforcement import EnforcementDesk, SuspensionGuard
from services.features.industry import EnterpriseDesk
from services.features.legacy import LegacyDesk, cap_policy_start
from services.features.proofing import ProofingConfig, ProofingDesk, wire_proofing
from services.features.seller_checks import RegistryWatch, SellerChecks
from services.features.sellers import RegistryConfig, SellerDesk, operator_keys
from services.features.service_authorization import ServiceAuthorizer
from services.features.transparency import TransparencyLog
from services.http.courier import courier_page_routes
from services.http.log_routes import log_routes
from services.http.pki_routes import pki_routes
from services.http.public_routes import public_routes
from services.proto.realname.v1 import verification_pb2, verification_pb2_grpc
from services.rpc.agents import agent_binding
from services.rpc.citizen import citizen_bindings
from services.rpc.compliance import compliance_binding
from services.rpc.delivery import delivery_binding
from services.rpc.industry import enterprise_binding, network_binding
from services.rpc.legacy import legacy_binding
from services.rpc.log import log_binding
from services.rpc.proofing import proofing_binding
from services.rpc.registry import registry_binding
from services.rpc.server import ServiceBinding
from services.rpc.supervision import supervision_binding
from services.rpc.verification import VerificationServicer
from services.runtime.ca_material import contact_sealer
from services.runtime.periodic import PeriodicJob
from services.storage.database import Database

VERIFICATION_SERVICE = verification_pb2.DESCRIPTOR.services_by_name["VerificationService"].full_name


@dataclass
class App:
    """Everything a serving process holds: its database, pseudonymizer and domain services."""

    db: Database
    pseudonymizer: Pseudonymizer
    cards: CardDesk
    log: TransparencyLog | None = None
    sellers: SellerDesk | None = None
    seller_checks: SellerChecks | None = None
    deliveries: DeliveryDesk | None = None
    legacy: LegacyDesk | None = None
    citizens: CitizenDesk | None = None
    audit: AuditTrail | None = None
    enforcement: EnforcementDesk | None = None
    compliance: ComplianceDesk | None = None
    agents: AgentDesk | None = None
    enterprises: EnterpriseDesk | None = None
    network: ServiceAuthorizer | None = None
    proofing: ProofingDesk | None = None
    operator_keys: authorities.OperatorKeys | None = None
    clock: Clock = utc_now

    @classmethod
    def build(
        cls,
        db: Database,
        pseudonymizer: Pseudonymizer,
        clock: Clock = utc_now,
        *,
        log: TransparencyLog | None = None,
        registry: RegistryConfig | None = None,
        delivery: DeliveryConfig | None = None,
        document_limiter: RateLimiter | None = None,
        agent_policy: AgentPolicy | None = None,
        proofing: ProofingConfig | None = None,
    ) -> App:
        """Wires the domain services over one database (and the transparency log, if given).

        ``registry`` configures the seller registry (CA keys, public URL); without it the registry
        verifies and serves CRLs already signed but cannot sign anything new.
        """
        config = registry or RegistryConfig(sealer=contact_sealer(pseudonymizer))
        keys = operator_keys(config)
        sellers = SellerDesk(db, config, keys, clock)
        checks = SellerChecks(db, config, keys, clock)
        # This process's issuances, renewals and revocations reach its shop cache at once.
        sellers.on_change(checks.watch.changed)
        cards = CardDesk(
            db, pseudonymizer, clock, sellers=checks, document_limiter=document_limiter
        )
        deliveries = DeliveryDesk(db, checks, clock, delivery)
        app = cls(db, pseudonymizer, cards, log, sellers, checks, deliveries)
        app.operator_keys = keys
        app.clock = clock
        app.citizens = CitizenDesk(db, pseudonymizer, clock)
        app.audit = AuditTrail(db, clock)
        app.enforcement = EnforcementDesk(db, clock)
        targets = os.environ.get("REALNAME_COMPLIANCE_TARGETS", DEFAULT_TARGETS)
        app.compliance = ComplianceDesk(db, parse_targets(targets), clock)
        cards.add_guard(SuspensionGuard())
        policy_start = cap_policy_start(os.environ.get("REALNAME_CAP_POLICY_START"))
        app.legacy = LegacyDesk(db, pseudonymizer, clock, policy_start)
        # Agents: sales by unregistered or suspended agents are refused; signals recorded.
        policy = agent_policy or AgentPolicy.from_env(os.environ)
        cards.add_guard(AgentGuard(pseudonymizer, policy))
        app.agents = AgentDesk(db, clock)
        app.citizens.set_agent_flagger(flag_agent)
        app.enterprises = EnterpriseDesk(db, pseudonymizer, clock)
        app.network = ServiceAuthorizer(db)
        # Identity proofing: off for operators without a policy; blocklist and sealed names.
        app.proofing = wire_proofing(
            db, pseudonymizer, clock, cards, proofing, flag_agent=flag_agent
        )
        # A legacy subscriber completing registration is screened like a buyer.
        app.legacy.add_holder_check(app.proofing.screen)
        return app

    def delivery_bundle(self) -> DeliveryBundle:
        """The courier's offline bundle now, as ``realname bundle export`` writes it."""
        if self.log is None or self.operator_keys is None:
            raise FailedPrecondition("no transparency log: no bundle", reason="NO_LOG")
        max_age = self.deliveries.config.offline_window if self.deliveries else DEFAULT_MAX_AGE
        return export_bundle(
            self.db, self.log, self.operator_keys, now=self.clock(), max_age=max_age
        )

    def bindings(self) -> list[ServiceBinding]:
        """The gRPC services this process serves, with their access rules."""

        def add_verification(server: grpc.Server) -> None:
            verification_pb2_grpc.add_VerificationServiceServicer_to_server(
                VerificationServicer(self.cards), server
            )

        bindings = [
            ServiceBinding(
                VERIFICATION_SERVICE,
                add_verification,
                {VERIFICATION_SERVICE: frozenset({Role.OPERATOR})},
                subscriber_data=frozenset(
                    {
                        "CheckEligibility",
                        "ActivateCard",
                        "DeactivateCard",
                        "GetCard",
                        "ListCards",
                        "TransferCard",
                        "ReverifyHolder",
                    }
                ),
                no_subscriber_data=frozenset(),
            )
        ]
        if self.log is not None:
            bindings.append(log_binding(self.log))
        if self.sellers is not None and self.seller_checks is not None:
            bindings.append(registry_binding(self.sellers, self.seller_checks, self.log))
        if self.deliveries is not None:
            bindings.append(delivery_binding(self.deliveries))
        if self.legacy is not None:
            bindings.append(legacy_binding(self.legacy))
        if self.citizens is not None:
            bindings.extend(citizen_bindings(self.citizens))
        if self.enforcement is not None and self.audit is not None:
            bindings.append(supervision_binding(self.enforcement, self.audit, self.pseudonymizer))
        if self.compliance is not None:
            bindings.append(compliance_binding(self.compliance))
        if self.agents is not None:
            bindings.append(agent_binding(self.agents))
        if self.enterprises is not None:
            bindings.append(enterprise_binding(self.enterprises, self.cards))
        if self.network is not None:
            bindings.append(network_binding(self.network))
        if self.proofing is not None:
            bindings.append(proofing_binding(self.proofing))
        return bindings

    def compliance_snapshotter(self) -> PeriodicJob:
        """Records the day's real-name rate per operator every hour (for the charts over time)."""
        assert self.compliance is not None, "App.build always wires the compliance desk"
        return PeriodicJob("compliance-snapshot", self.compliance.snapshot, 3600.0, (Unavailable,))

    def audit_anchorer(self, interval: float = 60.0) -> PeriodicJob:
        """Anchors the audit trail's head into the transparency log at ``interval`` seconds."""
        assert self.audit is not None, "App.build always wires the audit trail"
        return PeriodicJob("audit-anchor", self.audit.anchor, interval, (Unavailable,))

    def delivery_expirer(self) -> PeriodicJob:
        """Hourly release of undelivered cards (start it when serving; stop it after)."""
        assert self.deliveries is not None, "App.build always wires the delivery desk"
        return PeriodicJob("delivery-expiry", self.deliveries.expire, 3600.0, (Unavailable,))

    def crl_refresher(self) -> PeriodicJob:
        """Re-signs aged CRLs every 10 minutes, fetched or not (start when serving; stop after)."""
        assert self.seller_checks is not None, "App.build always wires the seller checks"
        # Serving goes on with CRLs that are still valid while a refresh fails.
        tolerated = (RegistryError, PkiError, Unavailable, FailedPrecondition)
        return PeriodicJob("crl-refresh", self.seller_checks.refresh_crls, 600.0, tolerated)

    def registry_watch(self) -> RegistryWatch:
        """Polls the registry generation so VerifySeller answers from memory (start when serving;
        stop after); see ``services.features.seller_checks.STALENESS_BOUND``."""
        assert self.seller_checks is not None, "App.build always wires the seller checks"
        return self.seller_checks.watch

    def http_routes(self, reads: Database | None = None) -> list[BaseRoute]:
        """The HTTP routes of the process's features (health is added by the HTTP app).

        With ``reads`` (REALNAME_READ_DATABASE_URL, a standby), the public reads — registry
        page, log checkpoint and tiles, CRLs, CA certificates, OCSP — come from it; whatever
        writes (cosignatures, a CRL re-signed on demand) still goes to the primary.
        """
        routes: list[BaseRoute] = [*courier_page_routes()]
        read_log = self.log
        if self.log is not None:
            routes.extend(log_routes(self.log, reads))
            if reads is not None:
                read_log = dataclasses.replace(self.log, db=reads)
        if self.sellers is not None and self.seller_checks is not None:
            routes.extend(pki_routes(self.seller_checks.reading_from(reads)))
            routes.extend(public_routes(self.sellers.reading_from(reads), read_log))
        return routes
