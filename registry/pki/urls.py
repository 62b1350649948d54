"""Where certificates say their revocation status is published (CRL and OCSP URLs).

The HTTP service serves ``/crl/<operator>.crl``, ``/crl/root.crl`` and ``/ocsp/<operator>`` under
one base URL. Plain ``http`` is the norm for both (RFC 5280 4.2.1.13, RFC 6960 appendix A): the
objects are signed, and fetching them must not depend on a TLS certificate whose own revocation
would need checking.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from registry.pki.errors import IssuanceError
from registry.pki.operators import validate_operator_id

ROOT_CRL_NAME: Final = "root"
"""Name under ``/crl/`` of the regulator root's CRL (the list of revoked operator CAs)."""


def normalise_base_url(base_url: str) -> str:
    """Return ``base_url`` without a trailing slash, checking it is a plain http(s) origin/path."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise IssuanceError(f"base URL must be http(s)://host[:port][/path], got {base_url!r}")
    if parts.query or parts.fragment:
        raise IssuanceError("base URL must not carry a query or fragment")
    return base_url.rstrip("/")


def crl_url(base_url: str, operator: str) -> str:
    """Return the URL of an operator CA's CRL: ``<base>/crl/<operator>.crl``."""
    return f"{normalise_base_url(base_url)}/crl/{validate_operator_id(operator)}.crl"


def root_crl_url(base_url: str) -> str:
    """Return the URL of the regulator root's CRL: ``<base>/crl/root.crl``."""
    return f"{normalise_base_url(base_url)}/crl/{ROOT_CRL_NAME}.crl"


def ocsp_url(base_url: str, operator: str) -> str:
    """Return the URL of an operator's OCSP responder: ``<base>/ocsp/<operator>``."""
    return f"{normalise_base_url(base_url)}/ocsp/{validate_operator_id(operator)}"
