"""Object identifiers of the realname seller-authorization PKI.

The arc is a PLACEHOLDER to be replaced by a registered one before production: it sits under IANA
Private Enterprise Number 32473, which RFC 5612 reserves for use in documentation and examples, so
it can never collide with a real enterprise's OIDs, and a certificate carrying it is obviously not
production material. Replacing it means changing :data:`REALNAME_ARC` only; every OID below is
derived from it.

::

    1.3.6.1.4.1.32473               IANA PEN reserved for documentation (RFC 5612)  -- placeholder
    1.3.6.1.4.1.32473.1             realname
    1.3.6.1.4.1.32473.1.1           seller authorization
    1.3.6.1.4.1.32473.1.1.1         id-realname-storeAuthorization  (certificate extension)
    1.3.6.1.4.1.32473.1.1.2         id-kp-realnameStoreAuthorization (extended key usage)
    1.3.6.1.4.1.32473.1.1.3         id-realname-operatorAuthority   (certificate extension)

The ASN.1 of the two extensions is in :mod:`registry.pki.authorization` and
:mod:`registry.pki.authority`.
"""

from __future__ import annotations

from typing import Final

from cryptography.x509 import ObjectIdentifier

PLACEHOLDER_PEN: Final = 32473
"""IANA PEN reserved for documentation (RFC 5612); replace with the project's registered PEN."""

REALNAME_ARC: Final = f"1.3.6.1.4.1.{PLACEHOLDER_PEN}.1"
"""Root of every realname OID (placeholder, see the module docstring)."""

SELLER_AUTHORIZATION_ARC: Final = f"{REALNAME_ARC}.1"
"""Arc of the seller-authorization PKI."""

STORE_AUTHORIZATION_EXTENSION: Final = ObjectIdentifier(f"{SELLER_AUTHORIZATION_ARC}.1")
"""Non-critical extension in a store certificate carrying the authorization fields."""

STORE_AUTHORIZATION_EKU: Final = ObjectIdentifier(f"{SELLER_AUTHORIZATION_ARC}.2")
"""Extended key usage that marks a certificate as a store authorization and nothing else."""

OPERATOR_AUTHORITY_EXTENSION: Final = ObjectIdentifier(f"{SELLER_AUTHORIZATION_ARC}.3")
"""Non-critical extension in an operator CA certificate binding the CA to an operator id."""
