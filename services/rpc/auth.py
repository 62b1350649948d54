"""Authentication: the caller's principal from its verified mTLS client certificate."""

from __future__ import annotations

import functools

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from services.domain.errors import Unauthenticated
from services.domain.principal import Principal, Role

# Plaintext mode (loopback only, explicit flag) has no certificate; the caller names itself here.
INSECURE_PRINCIPAL_HEADER = "x-realname-principal"


@functools.lru_cache(maxsize=4096)
def principal_from_pem(pem: bytes) -> Principal:
    """Reads role (OU) and organisation (O) from a client certificate that TLS already verified."""
    cert = x509.load_pem_x509_certificate(pem)
    subject = cert.subject
    ous = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    orgs = subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if len(ous) != 1 or len(orgs) != 1:
        raise Unauthenticated(
            "the client certificate must name exactly one role (OU) and organisation (O)",
            reason="CERTIFICATE_SUBJECT_INVALID",
        )
    try:
        role = Role(str(ous[0].value))
    except ValueError:
        raise Unauthenticated(
            "the client certificate names an unknown role", reason="UNKNOWN_ROLE"
        ) from None
    return Principal(role, str(orgs[0].value))


class Authenticator:
    """Finds the principal of a call, from mTLS or (insecure dev mode only) a header."""

    def __init__(self, *, insecure: bool = False) -> None:
        self.insecure = insecure

    def principal(self, context: grpc.ServicerContext) -> Principal:
        """Returns the caller's principal or raises Unauthenticated."""
        auth = context.auth_context()
        pems = auth.get("x509_pem_cert")
        if pems:
            return principal_from_pem(pems[0])
        if self.insecure:
            for key, value in context.invocation_metadata():
                if key == INSECURE_PRINCIPAL_HEADER:
                    try:
                        return Principal.parse(str(value))
                    except ValueError:
                        break
        raise Unauthenticated("no verified client certificate", reason="NO_CLIENT_CERTIFICATE")
