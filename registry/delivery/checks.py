"""The delivery check, in one fixed order, shared by the offline verifier and the online service.

:func:`check_delivery` runs the checks below and returns the first failure as a
:class:`DeliveryVerdict`; its inputs that differ between offline and online are behind two
seams: a :class:`SellerDirectory` (offline: the courier's bundle; online: the database and the
service's current trust state) and an optional ``shipment_state`` callback (online only). Both
sides running this one function is what makes "the offline verdict equals the online verdict
whenever the bundle is fresh" hold by construction, as long as the two directories agree.

Precedence, first failure wins (:data:`CHECK_ORDER`):

1. the token decodes (strictly, :func:`~registry.delivery.token.decode_token`)
   — else ``BAD_SIGNATURE``: bytes that are not a token carry no valid signature;
2. a store certificate is known for the token's (operator, store serial)
   — else ``SELLER_NOT_AUTHORIZED``; it must come first because it holds the key for step 3;
3. the token's signature verifies with that certificate's key — else ``BAD_SIGNATURE``. Before
   the seller's status, so that a forgery naming a revoked store reads as a forgery;
4. the seller's authorization, judged by :func:`judge_seller` from a ``registry.pki`` verdict at
   the check time and the log inclusion of the certificate — ``SELLER_NOT_AUTHORIZED`` for a
   broken chain, a certificate outside its validity, not a store authorization, or from an
   unknown CA (the PKI verifier's own order puts these before revocation); ``SELLER_REVOKED``
   when the store certificate or its operator CA is revoked; then ``SELLER_NOT_AUTHORIZED`` when
   the issuing operator is not the token's operator, or the certificate is not in the log;
5. ``TOKEN_EXPIRED`` when the check time is at or past the token's expiry;
6. ``WRONG_COURIER`` when the checking courier company is not the token's;
7. ``ALREADY_DELIVERED`` (online only) when the shipment was confirmed before;
8. ``LOCKED`` (online only) when too many recipient mismatches locked the shipment;
9. ``RECIPIENT_MISMATCH`` when the presented document is not the committed one;
10. ``OK``.

Steps 5-9 read token fields, which are trustworthy only after steps 3-4. ``STALE_BUNDLE`` is the
offline verifier's own answer about its inputs, decided before all of these
(:mod:`registry.delivery.offline`); the online service never produces it. A presented document
that is not one (unknown type, empty number) is bad input and raises
:class:`~registry.delivery.errors.InvalidDocumentError` before any check.
"""

from __future__ import annotations

import datetime as dt
import enum
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from cryptography import x509

from registry.delivery.commitment import COMMITMENT_SIZE, commit, validate_document
from registry.delivery.errors import InvalidDocumentError, TokenDecodeError, TokenSignatureError
from registry.delivery.token import (
    ShipmentToken,
    decode_text,
    decode_token,
    verify_token_signature,
)
from registry.pki import verify as pki
from registry.subscribers import DocumentType, normalise_number


class Reason(enum.StrEnum):
    """Machine-readable outcome of a delivery check (the names of issue 5)."""

    OK = "OK"
    """Seller authorized and logged, token genuine and current, right courier and recipient."""
    RECIPIENT_MISMATCH = "RECIPIENT_MISMATCH"
    """The presented document is not the one the card was sold to."""
    BAD_SIGNATURE = "BAD_SIGNATURE"
    """The token does not decode, or its signature is not the named store's."""
    SELLER_NOT_AUTHORIZED = "SELLER_NOT_AUTHORIZED"
    """No valid, logged authorization of the named store by the named operator is known."""
    SELLER_REVOKED = "SELLER_REVOKED"
    """The store's authorization, or its operator's CA, has been revoked."""
    TOKEN_EXPIRED = "TOKEN_EXPIRED"  # noqa: S105 (a verdict name, not a password)
    """The token's expiry has passed."""
    ALREADY_DELIVERED = "ALREADY_DELIVERED"
    """The shipment was already confirmed delivered (online only)."""
    WRONG_COURIER = "WRONG_COURIER"
    """The token is for another courier company."""
    LOCKED = "LOCKED"
    """Too many failed recipient matches; the operator must intervene (online only)."""
    STALE_BUNDLE = "STALE_BUNDLE"
    """The offline bundle is past its freshness and the policy refuses (offline only)."""


CHECK_ORDER: Final[tuple[tuple[str, Reason], ...]] = (
    ("token decodes", Reason.BAD_SIGNATURE),
    ("store certificate known for (operator, serial)", Reason.SELLER_NOT_AUTHORIZED),
    ("token signature by that certificate's key", Reason.BAD_SIGNATURE),
    ("chain, validity, certificate type", Reason.SELLER_NOT_AUTHORIZED),
    ("operator CA or store certificate revoked", Reason.SELLER_REVOKED),
    ("issuing operator is the token's, certificate is logged", Reason.SELLER_NOT_AUTHORIZED),
    ("token not expired", Reason.TOKEN_EXPIRED),
    ("courier company is the token's", Reason.WRONG_COURIER),
    ("not delivered yet (online only)", Reason.ALREADY_DELIVERED),
    ("not locked (online only)", Reason.LOCKED),
    ("presented document matches the commitment", Reason.RECIPIENT_MISMATCH),
)
"""The checks of :func:`check_delivery` in order, each with the reason its failure gives."""


@dataclass(frozen=True, slots=True)
class PresentedDocument:
    """The document the recipient shows at the door; validated on construction."""

    doc_type: DocumentType
    number: str

    def __post_init__(self) -> None:
        """Refuse what is not a document (unknown type, empty or oversize number)."""
        object.__setattr__(self, "doc_type", validate_document(self.doc_type, self.number))

    def __repr__(self) -> str:
        # The number is personal data: keep it out of reprs, logs and tracebacks.
        return f"PresentedDocument(doc_type={self.doc_type.name}, number=<redacted>)"

    @property
    def normalised(self) -> str:
        """The normalised number (for a service that also checks its pseudonym)."""
        return normalise_number(self.number)


@dataclass(frozen=True, slots=True)
class PresentedCommitment:
    """A presented document already committed under the token's salt (a synced offline check)."""

    commitment: bytes

    def __post_init__(self) -> None:
        """Refuse a value that cannot be a commitment."""
        if len(self.commitment) != COMMITMENT_SIZE:
            raise InvalidDocumentError(f"presented commitment must be {COMMITMENT_SIZE} bytes")


Presented = PresentedDocument | PresentedCommitment
"""What a recipient check compares with the token's commitment."""


@dataclass(frozen=True, slots=True)
class SellerJudgement:
    """A seller check's outcome: ``reason`` is None when the seller is authorized and logged."""

    reason: Reason | None
    detail: str
    pki_verdict: pki.Verdict | None = None


@dataclass(frozen=True, slots=True)
class ShipmentState:
    """What only the online service knows about a shipment."""

    delivered: bool = False
    locked: bool = False


class SellerDirectory(Protocol):
    """Where the check finds and judges store certificates (bundle offline, database online)."""

    def find(self, operator: str, serial: int) -> x509.Certificate | None:
        """Return the store certificate with this serial under this operator, if known."""

    def judge(
        self, certificate: x509.Certificate, operator: str, at: dt.datetime
    ) -> SellerJudgement:
        """Judge the store's authorization at ``at`` for a token naming ``operator``."""


@dataclass(frozen=True, slots=True)
class DeliveryVerdict:
    """Outcome of a delivery check; ``token`` is set once the token decoded.

    ``stale_bundle`` is set by the offline verifier when it answered from a stale bundle under the
    "warn" policy; the reason is then the one a fresh bundle with the same content would give.
    ``presented_commitment`` is set once the recipient check ran: the presented document's
    commitment, computed once (a memory-hard hash) for whoever records the handover.
    """

    reason: Reason
    detail: str
    checked_at: dt.datetime
    token: ShipmentToken | None = None
    seller: pki.Verdict | None = None
    stale_bundle: bool = False
    presented_commitment: bytes | None = None

    @property
    def ok(self) -> bool:
        """Whether the reason is ``OK``."""
        return self.reason is Reason.OK


def judge_seller(
    verdict: pki.Verdict, *, token_operator: str, log_problem: str | None
) -> SellerJudgement:
    """Map a ``registry.pki`` verdict and the log inclusion result to a seller judgement.

    ``log_problem`` is None when the certificate's log entry is proven included, else why not.
    Both sides call this, so that they map PKI reasons the same way.
    """
    if verdict.reason in (pki.Reason.REVOKED, pki.Reason.OPERATOR_REVOKED):
        return SellerJudgement(Reason.SELLER_REVOKED, verdict.detail, verdict)
    if verdict.reason is not pki.Reason.AUTHORIZED:
        return SellerJudgement(
            Reason.SELLER_NOT_AUTHORIZED, f"{verdict.reason}: {verdict.detail}", verdict
        )
    if verdict.operator != token_operator:
        return SellerJudgement(
            Reason.SELLER_NOT_AUTHORIZED,
            f"the token names operator {token_operator} but {verdict.operator} authorized "
            "this store",
            verdict,
        )
    if log_problem is not None:
        return SellerJudgement(
            Reason.SELLER_NOT_AUTHORIZED,
            f"store certificate not proven in the transparency log: {log_problem}",
            verdict,
        )
    return SellerJudgement(None, verdict.detail, verdict)


def presented_commitment(token: ShipmentToken, presented: Presented) -> bytes:
    """Return the presented document's commitment under the token's salt and KDF parameters."""
    if isinstance(presented, PresentedCommitment):
        return presented.commitment
    fields = token.fields
    return commit(presented.doc_type, presented.number, fields.salt, fields.kdf)


def check_delivery(
    token: bytes | str,
    presented: Presented,
    *,
    courier_company: str,
    at: dt.datetime,
    sellers: SellerDirectory,
    shipment_state: Callable[[ShipmentToken], ShipmentState] | None = None,
) -> DeliveryVerdict:
    """Run the delivery checks in :data:`CHECK_ORDER` and return the first failure, or ``OK``.

    ``token`` is the token's bytes or its text (QR) form. ``at`` must be aware. Without
    ``shipment_state`` (offline) the ALREADY_DELIVERED and LOCKED checks are skipped.
    """
    if at.tzinfo is None:
        raise ValueError("check time must be timezone-aware")
    moment = at.astimezone(dt.UTC)
    try:
        decoded = decode_token(decode_text(token) if isinstance(token, str) else token)
    except TokenDecodeError as error:
        return DeliveryVerdict(Reason.BAD_SIGNATURE, f"token does not decode: {error}", moment)
    fields = decoded.fields

    def verdict(reason: Reason, detail: str, seller: pki.Verdict | None = None) -> DeliveryVerdict:
        return DeliveryVerdict(reason, detail, moment, decoded, seller)

    certificate = sellers.find(fields.operator, fields.store_serial)
    if certificate is None:
        return verdict(
            Reason.SELLER_NOT_AUTHORIZED,
            f"no store authorization {fields.store_serial:x} of {fields.operator} is known",
        )
    try:
        verify_token_signature(decoded, certificate)
    except TokenSignatureError as error:
        return verdict(Reason.BAD_SIGNATURE, str(error))
    judgement = sellers.judge(certificate, fields.operator, moment)
    if judgement.reason is not None:
        return verdict(judgement.reason, judgement.detail, judgement.pki_verdict)
    seller = judgement.pki_verdict
    if moment >= fields.expires_at:
        return verdict(
            Reason.TOKEN_EXPIRED,
            f"token expired at {fields.expires_at:%Y-%m-%dT%H:%M:%SZ}",
            seller,
        )
    if courier_company != fields.courier:
        return verdict(
            Reason.WRONG_COURIER,
            f"token is for courier {fields.courier}, not {courier_company}",
            seller,
        )
    if shipment_state is not None:
        state = shipment_state(decoded)
        if state.delivered:
            return verdict(Reason.ALREADY_DELIVERED, "shipment already delivered", seller)
        if state.locked:
            return verdict(
                Reason.LOCKED, "shipment locked after repeated recipient mismatches", seller
            )
    proof = presented_commitment(decoded, presented)
    if not hmac.compare_digest(proof, fields.commitment):
        reason, detail = Reason.RECIPIENT_MISMATCH, "presented document is not the recipient's"
    else:
        reason, detail = Reason.OK, "seller authorized and logged; recipient matches"
    return DeliveryVerdict(reason, detail, moment, decoded, seller, presented_commitment=proof)
