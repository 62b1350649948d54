"""Courier deliveries, online: the door check, the handover that activates a card, and expiry.

The verdict is :func:`registry.delivery.check_delivery`'s, the same function the offline
verifier runs, with two online seams: a seller directory over the database and the registry's
cached verifier (:class:`_DatabaseSellers`), and the shipment state read from the ``shipments``
row keyed by the token digest. The shipment must belong to a live card sold online by the
token's store: same ICCID, operator and store serial, and the masked MSISDN of the card. A
token whose seller and signature check out but that names no such card fails with
``NotFound`` (``SHIPMENT_NOT_FOUND``); one for a card no longer live with ``FailedPrecondition``
(``CARD_NOT_PENDING``). A card already ACTIVE answers ``ALREADY_DELIVERED`` to every token for it.

A store certificate counts as logged online once the transparency log accepted its issuance
entry (written in the issuing transaction; sequenced or waiting for the sequencer), since the
log is bound to include it; offline, only an inclusion proof in the bundle counts.

The presented document's commitment (a memory-hard hash, about 50 ms) is computed once, before
the checking transaction (not while a write transaction holds SQLite's lock), and only once the
token's signature is known to be its store's, so a forged token costs no hash.

Recipient mismatches are counted in the checking transaction; at ``lock_after`` the shipment
locks (``LOCKED``) until the card's operator calls :meth:`DeliveryDesk.unlock`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from registry.authz.records import serial_hex
from registry.clock import Clock, utc_now
from registry.delivery import (
    DEFAULT_MAX_AGE,
    DeliveryVerdict,
    PresentedCommitment,
    PresentedDocument,
    Reason,
    SellerJudgement,
    ShipmentState,
    ShipmentToken,
    check_delivery,
    decode_text,
    decode_token,
    judge_seller,
    presented_commitment,
    verify_token_signature,
)
from registry.delivery.errors import TokenDecodeError, TokenSignatureError
from registry.subscribers import mask_msisdn
from services.domain.cards import CardState
from services.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.features.seller_checks import SellerChecks
from services.storage import delivery_repo as repo
from services.storage import sellers_repo
from services.storage.database import Database
from services.storage.rawsql import Tx

log = logging.getLogger(__name__)

DEFAULT_LOCK_AFTER: Final = 3
"""Recipient mismatches after which a shipment locks."""

DEFAULT_DELIVERY_DAYS: Final = 15
"""Days a card may wait in PENDING_DELIVERY before it is released."""

CLOCK_SKEW: Final = dt.timedelta(minutes=5)
"""How far in the future a confirmation's delivered_at may be (device clocks drift)."""

_EXPIRY_BATCH: Final = 500

Presented = PresentedDocument | PresentedCommitment


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Delivery policy: the mismatch lock threshold and the delivery window."""

    lock_after: int = DEFAULT_LOCK_AFTER
    delivery_window: dt.timedelta = dt.timedelta(days=DEFAULT_DELIVERY_DAYS)
    # How far back a confirmation's delivered_at may lie: an offline check is only as good as
    # a bundle that is at most this old, and an older time could reach back before revocations.
    offline_window: dt.timedelta = DEFAULT_MAX_AGE


@dataclass(frozen=True, slots=True)
class Delivery:
    """A recorded handover."""

    token_digest: bytes
    order_id: str
    waybill: str
    courier: str
    courier_staff_id: str
    delivered_at: dt.datetime
    iccid: str
    msisdn_masked: str


class _DatabaseSellers:
    """The online seller directory: certificates from the registry, verdicts from its cache."""

    def __init__(self, tx: Tx, registry: SellerChecks) -> None:
        self._tx = tx
        self._registry = registry
        self._generation: dict[bytes, int] = {}

    def find(self, operator: str, serial: int) -> x509.Certificate | None:
        """Return the recorded store certificate with this serial issued by ``operator``."""
        stored = sellers_repo.certificate_by_serial(self._tx, serial_hex(serial))
        if stored is None or stored.operator != operator:
            return None
        self._generation[stored.certificate] = stored.generation
        return x509.load_der_x509_certificate(stored.certificate)

    def judge(
        self, certificate: x509.Certificate, operator: str, at: dt.datetime
    ) -> SellerJudgement:
        """Judge the store at ``at`` with the registry's verifier and the log's acceptance."""
        der = certificate.public_bytes(serialization.Encoding.DER)
        generation = self._generation.get(der, 0)
        verdict = self._registry.stored_verdict(generation, der, at)
        logged = repo.certificate_logged(self._tx, hashlib.sha256(der).digest())
        problem = None if logged else "no issuance entry for it in the log"
        return judge_seller(verdict, token_operator=operator, log_problem=problem)


def _decoded(token: bytes | str) -> ShipmentToken | None:
    try:
        return decode_token(decode_text(token) if isinstance(token, str) else token)
    except TokenDecodeError:
        return None


def _hours(span: dt.timedelta) -> str:
    return f"{span.total_seconds() / 3600:g} h"


def _delivery(row: repo.ShipmentRow) -> Delivery:
    assert row.delivered_at is not None and row.courier_staff_id is not None
    return Delivery(
        token_digest=row.token_digest,
        order_id=row.order_id,
        waybill=row.waybill,
        courier=row.courier,
        courier_staff_id=row.courier_staff_id,
        delivered_at=row.delivered_at,
        iccid=row.iccid,
        msisdn_masked=mask_msisdn(row.msisdn),
    )


class DeliveryDesk:
    """Checks shipment tokens for couriers, records handovers, and releases undelivered cards."""

    def __init__(
        self,
        db: Database,
        sellers: SellerChecks,
        clock: Clock = utc_now,
        config: DeliveryConfig | None = None,
    ) -> None:
        self._db = db
        self._sellers = sellers
        self._clock = clock
        self._config = config or DeliveryConfig()

    @property
    def config(self) -> DeliveryConfig:
        """The delivery policy in force."""
        return self._config

    def _state(self, tx: Tx, now: dt.datetime) -> Callable[[ShipmentToken], ShipmentState]:
        def state(token: ShipmentToken) -> ShipmentState:
            fields = token.fields
            row = repo.shipment(tx, token.digest)
            if row is not None:
                if row.card_state is CardState.DEACTIVATED and row.delivered_at is None:
                    raise FailedPrecondition(
                        "the shipment's card is no longer awaiting delivery",
                        reason="CARD_NOT_PENDING",
                    )
                delivered = row.delivered_at is not None or row.card_state is CardState.ACTIVE
                return ShipmentState(delivered=delivered, locked=row.locked)
            card = repo.live_card_for_shipment(
                tx, fields.operator, fields.iccid, serial_hex(fields.store_serial)
            )
            if card is None or mask_msisdn(card.msisdn) != fields.msisdn_masked:
                raise NotFound(
                    f"no card {fields.iccid[:6]}… sold online by store {fields.store_serial:x} "
                    f"of {fields.operator} awaits this shipment",
                    reason="SHIPMENT_NOT_FOUND",
                )
            if card.state is CardState.ACTIVE:
                return ShipmentState(delivered=True)
            repo.insert_shipment(
                tx,
                token_digest=token.digest,
                card_id=card.id,
                operator_id=fields.operator,
                courier=fields.courier,
                order_id=fields.order_id,
                waybill=fields.waybill,
                now=now,
            )
            return ShipmentState()

        return state

    def _check(
        self, tx: Tx, courier: str, token: bytes | str, presented: Presented, at: dt.datetime
    ) -> DeliveryVerdict:
        verdict = check_delivery(
            token,
            presented,
            courier_company=courier,
            at=at,
            sellers=_DatabaseSellers(tx, self._sellers),
            shipment_state=self._state(tx, self._clock()),
        )
        digest = verdict.token.digest if verdict.token is not None else b""
        mismatch = verdict.reason is Reason.RECIPIENT_MISMATCH
        if mismatch and repo.count_mismatch(tx, digest, self._config.lock_after):
            log.warning(
                "shipment locked after recipient mismatches",
                extra={"fields": {"token_digest": digest.hex()[:16]}},
            )
        return verdict

    def verify(
        self, courier: str, token: bytes | str, presented: PresentedDocument
    ) -> DeliveryVerdict:
        """Check a token and a presented document at the door for courier company ``courier``."""
        hashed = self._hashed(token, presented)
        return self._db.run_tx(lambda tx: self._check(tx, courier, token, hashed, self._clock()))

    def _hashed(self, token: bytes | str, presented: Presented) -> Presented:
        """The presented document as its commitment, when the token is its store's; else as is.

        Outside any write transaction: the hash takes tens of milliseconds. Only a token whose
        signature verifies with a recorded store certificate is worth hashing for; otherwise the
        check answers without a hash (BAD_SIGNATURE, SELLER_NOT_AUTHORIZED).
        """
        decoded = _decoded(token)
        if decoded is None or isinstance(presented, PresentedCommitment):
            return presented

        def signed(tx: Tx) -> bool:
            fields = decoded.fields
            certificate = _DatabaseSellers(tx, self._sellers).find(
                fields.operator, fields.store_serial
            )
            if certificate is None:
                return False
            try:
                verify_token_signature(decoded, certificate)
            except TokenSignatureError:
                return False
            return True

        if not self._db.run_tx(signed, readonly=True):
            return presented
        return PresentedCommitment(presented_commitment(decoded, presented))

    def confirm(
        self,
        courier: str,
        token: bytes | str,
        presented: Presented,
        *,
        courier_staff_id: str,
        delivered_at: dt.datetime | None = None,
    ) -> tuple[DeliveryVerdict, Delivery | None]:
        """Check, then record the handover and activate the card; a repeat returns the record.

        The check runs at ``delivered_at`` (an offline handover keeps its time), which must lie
        between the later of the token's issue and ``offline_window`` ago, and now (plus the
        clock skew); outside that, ``InvalidArgument`` and nothing is recorded.
        """
        now = self._clock()
        when = now if delivered_at is None else delivered_at.astimezone(dt.UTC)
        decoded = _decoded(token)
        if when > now + CLOCK_SKEW:
            raise InvalidArgument([FieldViolation("delivered_at", "must not be in the future")])
        if decoded is not None and when < decoded.fields.issued_at:
            raise InvalidArgument(
                [FieldViolation("delivered_at", "must not be before the token was issued")]
            )
        window = self._config.offline_window
        if when < now - window:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "delivered_at",
                        f"must be within {_hours(window)} of now (an offline bundle's max "
                        "age): sync offline handovers sooner",
                    )
                ]
            )
        hashed = self._hashed(token, presented)

        def work(tx: Tx) -> tuple[DeliveryVerdict, Delivery | None]:
            verdict = self._check(tx, courier, token, hashed, when)
            if verdict.reason is Reason.ALREADY_DELIVERED and verdict.token is not None:
                row = repo.shipment(tx, verdict.token.digest)
                if row is not None and row.delivered_at is not None:
                    repeat = replace(verdict, reason=Reason.OK, detail="delivery already recorded")
                    return repeat, _delivery(row)
            if not verdict.ok or verdict.token is None:
                return verdict, None
            checked, proof = verdict.token, verdict.presented_commitment
            assert proof is not None, "an OK verdict ran the recipient check"
            repo.mark_delivered(
                tx,
                token_digest=checked.digest,
                delivered_at=when,
                courier_staff_id=courier_staff_id,
                presented_commitment=proof,
                token=checked.encoded,
            )
            row = repo.shipment(tx, checked.digest)
            assert row is not None, "the check recorded the shipment"
            if not repo.activate_pending_card(tx, row.card_id):
                raise FailedPrecondition(
                    "the shipment's card is no longer awaiting delivery",
                    reason="CARD_NOT_PENDING",
                )
            return verdict, _delivery(row)

        return self._db.run_tx(work)

    def unlock(self, operator: str, token_digest: bytes) -> None:
        """Clear a shipment's mismatch lock; only the operator of its card may."""

        def work(tx: Tx) -> None:
            row = repo.shipment(tx, token_digest)
            if row is None:
                raise NotFound("no such shipment", reason="SHIPMENT_NOT_FOUND")
            if row.operator_id != operator:
                raise PermissionDenied(
                    "the shipment carries another operator's card", reason="NOT_OWN_SHIPMENT"
                )
            repo.unlock(tx, token_digest)

        self._db.run_tx(work)

    def expire(self, at: dt.datetime | None = None) -> int:
        """Release cards still PENDING_DELIVERY past the delivery window; return how many.

        Idempotent: a card is released once, in a transaction that also frees its slot.
        """
        now = self._clock() if at is None else at
        cutoff = now - self._config.delivery_window
        released = 0
        while True:

            def batch(tx: Tx) -> tuple[int, int]:
                found = repo.pending_cards_before(tx, cutoff, _EXPIRY_BATCH)
                return len(found), sum(repo.release_pending_card(tx, c, now) for c in found)

            seen, count = self._db.run_tx(batch)
            released += count
            if seen < _EXPIRY_BATCH:
                break
        if released:
            log.info("released undelivered cards", extra={"fields": {"count": released}})
        return released
