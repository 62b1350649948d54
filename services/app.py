"""The composition root: builds the domain services of a process and binds them to gRPC."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from starlette.routing import BaseRoute

from registry.authz.errors import RegistryError
from registry.pki import PkiError
from services.authority import contact_sealer
from services.domain.delivery import DeliveryConfig, DeliveryDesk
from services.domain.errors import FailedPrecondition, Unavailable
from services.domain.principal import Role
from services.domain.pseudonym import Pseudonymizer
from services.domain.registry import RegistryConfig, SellerRegistry
from services.domain.verification import CardRegistry, Clock, utc_now
from services.http.log_routes import log_routes
from services.http.public_routes import public_routes
from services.http.registry_routes import registry_routes
from services.periodic import PeriodicJob
from services.proto.realname.v1 import verification_pb2, verification_pb2_grpc
from services.rpc.delivery import delivery_binding
from services.rpc.log import log_binding
from services.rpc.registry import registry_binding
from services.rpc.server import ServiceBinding
from services.rpc.verification import VerificationServicer
from services.storage.database import Database
from services.transparency import TransparencyLog

VERIFICATION_SERVICE = verification_pb2.DESCRIPTOR.services_by_name["VerificationService"].full_name


@dataclass
class App:
    """Everything a serving process holds: its database, pseudonymizer and domain services."""

    db: Database
    pseudonymizer: Pseudonymizer
    cards: CardRegistry
    log: TransparencyLog | None = None
    sellers: SellerRegistry | None = None
    deliveries: DeliveryDesk | None = None

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
    ) -> App:
        """Wires the domain services over one database (and the transparency log, if given).

        ``registry`` configures the seller registry (CA keys, public URL); without it the registry
        verifies and serves CRLs already signed but cannot sign anything new.
        """
        config = registry or RegistryConfig(sealer=contact_sealer(pseudonymizer))
        sellers = SellerRegistry(db, config, clock)
        cards = CardRegistry(db, pseudonymizer, clock, sellers=sellers)
        deliveries = DeliveryDesk(db, sellers, clock, delivery)
        return cls(db, pseudonymizer, cards, log, sellers, deliveries)

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
            )
        ]
        if self.log is not None:
            bindings.append(log_binding(self.log))
        if self.sellers is not None:
            bindings.append(registry_binding(self.sellers, self.log))
        if self.deliveries is not None:
            bindings.append(delivery_binding(self.deliveries))
        return bindings

    def delivery_expirer(self) -> PeriodicJob:
        """Hourly release of undelivered cards (start it when serving; stop it after)."""
        assert self.deliveries is not None, "App.build always wires the delivery desk"
        return PeriodicJob("delivery-expiry", self.deliveries.expire, 3600.0, (Unavailable,))

    def crl_refresher(self) -> PeriodicJob:
        """Re-signs aged CRLs every 10 minutes, fetched or not (start when serving; stop after)."""
        assert self.sellers is not None, "App.build always wires the seller registry"
        # Serving goes on with CRLs that are still valid while a refresh fails.
        tolerated = (RegistryError, PkiError, Unavailable, FailedPrecondition)
        return PeriodicJob("crl-refresh", self.sellers.refresh_crls, 600.0, tolerated)

    def http_routes(self) -> list[BaseRoute]:
        """The HTTP routes of the process's features (health is added by the HTTP app)."""
        routes: list[BaseRoute] = []
        if self.log is not None:
            routes.extend(log_routes(self.log))
        if self.sellers is not None:
            routes.extend(registry_routes(self.sellers))
            routes.extend(public_routes(self.sellers, self.log))
        return routes
