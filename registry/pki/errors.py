"""Exceptions raised by the seller-authorization PKI.

Every exception derives from :class:`PkiError`, so a caller (a gRPC servicer, a CLI) can map the
whole family to a status in one place. Messages name the field or object at fault and never carry
key material, passphrases or certificate bytes.
"""

from __future__ import annotations


class PkiError(Exception):
    """Base class of every error raised by ``registry.pki``."""


class InvalidCreditCodeError(PkiError):
    """Raised when a unified social credit code is malformed or fails its GB 32100-2015 check."""


class InvalidAuthorizationError(PkiError):
    """Raised when store-authorization fields (marketplace, shop, name, scope) are invalid."""


class InvalidOperatorError(PkiError):
    """Raised when an operator identifier is malformed or unknown where a known one is required."""


class MalformedExtensionError(PkiError):
    """Raised when a realname certificate extension is absent, not DER, or violates the profile."""


class CsrError(PkiError):
    """Raised when a PKCS#10 request cannot be parsed or is unusable for issuance."""


class CsrSignatureError(CsrError):
    """Raised when a CSR's self-signature does not verify (no proof of possession of the key)."""


class UnsupportedKeyError(PkiError):
    """Raised when a key is not ECDSA on NIST P-256, the only key type this PKI accepts."""


class IssuanceError(PkiError):
    """Raised when a certificate cannot be issued as asked (issuer unfit, validity out of range)."""


class OperatorMismatchError(IssuanceError):
    """Raised when an authorization names an operator other than the issuing CA's operator."""


class KeyFormatError(PkiError):
    """Raised when a stored private key is unreadable, unencrypted, or of the wrong type."""


class WrongPassphraseError(KeyFormatError):
    """Raised when an encrypted private key cannot be decrypted with the passphrase given."""


class MissingPassphraseError(KeyFormatError):
    """Raised when a passphrase is required (empty value, unset environment variable)."""


class CertificateFormatError(PkiError):
    """Raised when bytes given as a certificate are neither a PEM nor a DER X.509 certificate."""


class BundleError(PkiError):
    """Raised when a trust bundle is malformed or inconsistent (no root, a CA not under it)."""


class InvalidCrlError(PkiError):
    """Raised when a CRL in a trust bundle has no known issuer or a signature that fails."""


class RevocationUnavailableError(PkiError):
    """Raised when no fresh, verified CRL covers a certificate at the verification time."""


class OcspRequestError(PkiError):
    """Raised when bytes given as an OCSP request are not a single-certificate RFC 6960 request."""
