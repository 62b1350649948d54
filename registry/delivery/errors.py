"""Exceptions raised by the courier delivery library: one base class, one subclass per cause.

A verdict (``OK``, ``BAD_SIGNATURE``, ...) is an answer, not an exception: these are raised only
for inputs no answer can be given about (a presented document that is not one, a broken bundle, a
corrupt queue file) and for token bytes that do not decode (which the verifier turns into a
``BAD_SIGNATURE`` verdict). Messages never quote a document number.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """Base class of every error raised by ``registry.delivery``."""


class InvalidDocumentError(DeliveryError):
    """Raised when a document type or number cannot be committed to or checked (bad input)."""


class InvalidShipmentError(DeliveryError):
    """Raised when shipment fields cannot be encoded into a token (a store-side input error)."""


class TokenDecodeError(DeliveryError):
    """Raised when bytes are not a well-formed shipment token; subclasses say why."""


class UnsupportedVersionError(TokenDecodeError):
    """Raised when a token (or its text form) names an encoding version this code does not know."""


class TruncatedTokenError(TokenDecodeError):
    """Raised when a token ends before its last field."""


class TrailingBytesError(TokenDecodeError):
    """Raised when bytes follow the token's signature."""


class OversizeFieldError(TokenDecodeError):
    """Raised when a field's length prefix exceeds that field's maximum."""


class MalformedFieldError(TokenDecodeError):
    """Raised when a field is not UTF-8 or breaks its syntax, or the signature is non-canonical."""


class WeakCommitmentError(TokenDecodeError):
    """Raised when a token's commitment parameters are under the floor or past a ceiling."""


class TextFormError(TokenDecodeError):
    """Raised when a token's text (QR) form has the wrong prefix or is not strict base45."""


class TokenSignatureError(DeliveryError):
    """Raised when a token's signature does not verify with the store certificate's key."""


class DeliveryBundleError(DeliveryError):
    """Raised when a delivery bundle is malformed or cannot be trusted (bad checkpoint, CRL)."""


class QueueError(DeliveryError):
    """Raised when the offline confirmation queue cannot be read or written."""


class QueueCorruptError(QueueError):
    """Raised when a queue line other than a torn last line does not parse."""
