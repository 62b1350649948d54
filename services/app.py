"""The composition root: builds the domain services of a process and binds them to gRPC."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from starlette.routing import BaseRoute

from services.domain.principal import Role
from services.domain.pseudonym import Pseudonymizer
from services.domain.verification import CardRegistry, Clock, utc_now
from services.proto.realname.v1 import verification_pb2, verification_pb2_grpc
from services.rpc.server import ServiceBinding
from services.rpc.verification import VerificationServicer
from services.storage.database import Database

VERIFICATION_SERVICE = verification_pb2.DESCRIPTOR.services_by_name["VerificationService"].full_name


@dataclass
class App:
    """Everything a serving process holds: its database, pseudonymizer and domain services."""

    db: Database
    pseudonymizer: Pseudonymizer
    cards: CardRegistry

    @classmethod
    def build(cls, db: Database, pseudonymizer: Pseudonymizer, clock: Clock = utc_now) -> App:
        """Wires the domain services over one database."""
        return cls(db, pseudonymizer, CardRegistry(db, pseudonymizer, clock))

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
        return bindings

    def http_routes(self) -> list[BaseRoute]:
        """The HTTP routes of the process's features (health is added by the HTTP app)."""
        routes: list[BaseRoute] = []
        return routes
