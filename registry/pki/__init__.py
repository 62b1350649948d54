"""Seller-authorization PKI: regulator root, operator CAs, store certificates, CRL, OCSP, verify.

Pure library (no storage, no network); ``services/`` exposes it over gRPC and HTTP. The modules:

* :mod:`~registry.pki.oids` — the OID arc (a documentation placeholder until registered);
* :mod:`~registry.pki.uscc` — unified social credit codes (GB 32100-2015);
* :mod:`~registry.pki.regions`, :mod:`~registry.pki.scope` — provinces, card types, scopes;
* :mod:`~registry.pki.operators` — operator ids and kinds;
* :mod:`~registry.pki.keys` — P-256 keys and encrypted PKCS#8 at rest;
* :mod:`~registry.pki.authority` — root and operator CAs, rotation;
* :mod:`~registry.pki.authorization` — authorization fields and their extension;
* :mod:`~registry.pki.issuance` — store certificates from CSRs;
* :mod:`~registry.pki.revocation`, :mod:`~registry.pki.ocsp` — CRLs and OCSP;
* :mod:`~registry.pki.bundle`, :mod:`~registry.pki.verify` — trust bundle and verifier;
* :mod:`~registry.pki.errors` — the exception hierarchy.
"""

from registry.pki.authority import (
    CertificateAuthority,
    create_operator_ca,
    create_root_ca,
    rotate_operator_ca,
)
from registry.pki.authorization import StoreAuthorization, authorization_of
from registry.pki.bundle import TrustBundle
from registry.pki.errors import PkiError
from registry.pki.issuance import issue_store_certificate
from registry.pki.keys import Passphrase
from registry.pki.ocsp import CertificateStatus, OcspResponder, answer_ocsp
from registry.pki.revocation import Revocation, build_crl
from registry.pki.scope import CardType, Scope
from registry.pki.verify import Reason, Verdict, Verifier

__all__ = [
    "CardType",
    "CertificateAuthority",
    "CertificateStatus",
    "OcspResponder",
    "Passphrase",
    "PkiError",
    "Reason",
    "Revocation",
    "Scope",
    "StoreAuthorization",
    "TrustBundle",
    "Verdict",
    "Verifier",
    "answer_ocsp",
    "authorization_of",
    "build_crl",
    "create_operator_ca",
    "create_root_ca",
    "issue_store_certificate",
    "rotate_operator_ca",
]
