"""Trust bundle: everything a marketplace or courier needs to verify store certificates offline.

A bundle holds the regulator root (the trust anchor), every operator CA certificate (all key
generations, including revoked ones, so their certificates are recognised and reported as such),
and the current CRLs (the root's and one per operator). It is serialised as one JSON document,
chosen over a concatenated PEM file because the roles must be explicit: a PEM bundle handed to a
tool as ``-CAfile`` would make every operator CA a trust anchor, bypassing the root's CRL. ::

    {
      "format": "realname-trust-bundle",
      "version": 1,
      "root": "-----BEGIN CERTIFICATE-----...",
      "operator_cas": ["-----BEGIN CERTIFICATE-----...", ...],
      "crls": ["-----BEGIN X509 CRL-----...", ...]
    }

Loading checks the shape (root self-issued and a CA, operator CAs issued under the root's name
and CAs); signatures are checked by :class:`registry.pki.verify.Verifier`, which caches them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, TypeGuard

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from registry.pki.errors import BundleError

BUNDLE_FORMAT: Final = "realname-trust-bundle"
"""Value of the ``format`` member of a serialised bundle."""

BUNDLE_VERSION: Final = 1
"""Value of the ``version`` member this code writes and reads."""

_PEM = serialization.Encoding.PEM


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


@dataclass(frozen=True, slots=True)
class TrustBundle:
    """Root certificate, operator CA certificates and CRLs, as one immutable value."""

    root: x509.Certificate
    operator_cas: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...] = ()

    def __post_init__(self) -> None:
        if self.root.subject != self.root.issuer or not _is_ca(self.root):
            raise BundleError("bundle root must be a self-issued CA certificate")
        for certificate in self.operator_cas:
            if certificate.issuer != self.root.subject or not _is_ca(certificate):
                raise BundleError(
                    f"operator CA {certificate.subject.rfc4514_string()!r} is not a CA "
                    "issued under the bundle root"
                )
        object.__setattr__(self, "operator_cas", tuple(self.operator_cas))
        object.__setattr__(self, "crls", tuple(self.crls))

    def with_crls(self, crls: Iterable[x509.CertificateRevocationList]) -> TrustBundle:
        """Return the same bundle with its CRLs replaced (a CRL refresh)."""
        return replace(self, crls=tuple(crls))

    def with_operator_cas(self, operator_cas: Iterable[x509.Certificate]) -> TrustBundle:
        """Return the same bundle with its operator CA certificates replaced."""
        return replace(self, operator_cas=tuple(operator_cas))

    def to_json(self) -> bytes:
        """Serialise the bundle as UTF-8 JSON."""
        document = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "root": self.root.public_bytes(_PEM).decode("ascii"),
            "operator_cas": [ca.public_bytes(_PEM).decode("ascii") for ca in self.operator_cas],
            "crls": [crl.public_bytes(_PEM).decode("ascii") for crl in self.crls],
        }
        return json.dumps(document, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes | str) -> TrustBundle:
        """Parse a bundle serialised by :meth:`to_json`."""
        try:
            document: Any = json.loads(data)
        except ValueError as exc:
            raise BundleError(f"trust bundle is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise BundleError("trust bundle must be a JSON object")
        if document.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"not a {BUNDLE_FORMAT} document")
        if document.get("version") != BUNDLE_VERSION:
            raise BundleError(f"unsupported trust bundle version {document.get('version')!r}")
        root = document.get("root")
        operator_cas = document.get("operator_cas")
        crls = document.get("crls", [])
        if not isinstance(root, str):
            raise BundleError("trust bundle 'root' must be a PEM string")
        if not _is_str_list(operator_cas) or not _is_str_list(crls):
            raise BundleError("trust bundle 'operator_cas' and 'crls' must be lists of PEM strings")
        try:
            return cls(
                root=x509.load_pem_x509_certificate(root.encode("ascii")),
                operator_cas=tuple(
                    x509.load_pem_x509_certificate(pem.encode("ascii")) for pem in operator_cas
                ),
                crls=tuple(x509.load_pem_x509_crl(pem.encode("ascii")) for pem in crls),
            )
        except (ValueError, UnicodeEncodeError) as exc:
            raise BundleError(
                f"trust bundle holds an unreadable certificate or CRL: {exc}"
            ) from exc

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the bundle to ``path`` as JSON."""
        Path(path).write_bytes(self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrustBundle:
        """Read a bundle written by :meth:`save`."""
        return cls.from_json(Path(path).read_bytes())


def _is_str_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
