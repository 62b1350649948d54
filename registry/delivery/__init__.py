"""Courier delivery verification: shipment tokens, recipient commitments, offline checks, queue.

Pure library (no database, no network, no ``services/``); the service side builds
``DeliveryService``, ``realname bundle export``, ``realname courier verify`` and
``realname store sign-shipment`` on it. The modules:

* :mod:`~registry.delivery.commitment` — the salted, memory-hard recipient commitment;
* :mod:`~registry.delivery.token` — the signed, versioned binary token and its QR text form;
* :mod:`~registry.delivery.base45` — RFC 9285 base45;
* :mod:`~registry.delivery.bundle` — the courier's offline bundle (PKI, checkpoint, proofs);
* :mod:`~registry.delivery.checks` — the ordered checks shared by offline and online verdicts;
* :mod:`~registry.delivery.offline` — the offline verifier;
* :mod:`~registry.delivery.queue` — offline confirmations waiting to sync;
* :mod:`~registry.delivery.label` — the token's QR code and the parcel's printable label;
* :mod:`~registry.delivery.errors` — the exception hierarchy.
"""

from registry.delivery.bundle import DEFAULT_MAX_AGE, DeliveryBundle, LoggedCertificate
from registry.delivery.checks import (
    CHECK_ORDER,
    DeliveryVerdict,
    PresentedCommitment,
    PresentedDocument,
    Reason,
    SellerDirectory,
    SellerJudgement,
    ShipmentState,
    check_delivery,
    judge_seller,
    presented_commitment,
)
from registry.delivery.commitment import DEFAULT_PARAMS, FLOOR, KdfParams, commit, matches
from registry.delivery.errors import DeliveryError, TokenDecodeError
from registry.delivery.offline import (
    OfflineVerdict,
    OfflineVerifier,
    StalePolicy,
    verify_offline,
)
from registry.delivery.queue import Confirmation, ConfirmationQueue, new_confirmation
from registry.delivery.token import (
    ShipmentFields,
    ShipmentToken,
    decode_text,
    decode_token,
    encode_text,
    new_shipment,
    sign_shipment,
    verify_token_signature,
)
from registry.subscribers import DocumentType, normalise_number

__all__ = [
    "CHECK_ORDER",
    "DEFAULT_MAX_AGE",
    "DEFAULT_PARAMS",
    "FLOOR",
    "Confirmation",
    "ConfirmationQueue",
    "DeliveryBundle",
    "DeliveryError",
    "DeliveryVerdict",
    "DocumentType",
    "KdfParams",
    "LoggedCertificate",
    "OfflineVerdict",
    "OfflineVerifier",
    "PresentedCommitment",
    "PresentedDocument",
    "Reason",
    "SellerDirectory",
    "SellerJudgement",
    "ShipmentFields",
    "ShipmentState",
    "ShipmentToken",
    "StalePolicy",
    "TokenDecodeError",
    "check_delivery",
    "commit",
    "decode_text",
    "decode_token",
    "encode_text",
    "judge_seller",
    "matches",
    "new_confirmation",
    "new_shipment",
    "normalise_number",
    "presented_commitment",
    "sign_shipment",
    "verify_offline",
    "verify_token_signature",
]
