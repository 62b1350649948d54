"""Offline delivery verification: a courier checks a shipment token against its bundle alone.

:func:`verify_offline` answers with a :class:`~registry.delivery.checks.DeliveryVerdict`
(``OfflineVerdict``) whose reason is one of ``OK``, ``RECIPIENT_MISMATCH``, ``BAD_SIGNATURE``,
``SELLER_NOT_AUTHORIZED``, ``SELLER_REVOKED``, ``TOKEN_EXPIRED``, ``WRONG_COURIER`` or
``STALE_BUNDLE``. It never answers ``ALREADY_DELIVERED`` or ``LOCKED``: whether the shipment was
delivered already, or locked by mismatches elsewhere, is known only to the online service, which
the courier reaches when the queued confirmation syncs (:mod:`registry.delivery.queue`).

The checks and their order are :func:`registry.delivery.checks.check_delivery`'s, with the
bundle as the seller directory. Before them, freshness: the bundle is stale past
:attr:`~registry.delivery.bundle.DeliveryBundle.fresh_until`. Under the ``refuse`` policy that is
the verdict, ``STALE_BUNDLE``; under ``warn`` the checks run and the verdict carries
``stale_bundle=True``. With a stale bundle the CRLs can no longer answer for the present, so the
seller's revocation status is taken at the bundle's revocation horizon (the last moment its CRLs
speak for) while validity windows and the token's expiry are still checked at the present.

Time: ``at`` (default now) is raised to the bundle's ``issued_at`` if it is earlier, since the
bundle cannot be younger than the device clock claims; a clock set back could otherwise hide
revocations the bundle already knows.

Per bundle, once (:class:`OfflineVerifier`, cached by :func:`verify_offline` for the life of the
bundle object): the checkpoint's log signature and witness cosignatures, the operator CAs and
CRLs (by ``registry.pki.Verifier``), and every store certificate's inclusion proof. Per token:
one ECDSA verification for the token and the two of the certificate chain.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import weakref
from collections.abc import Iterable
from dataclasses import replace
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from registry.checkpoint import CheckpointError, SignedCheckpoint, open_checkpoint
from registry.delivery.bundle import DeliveryBundle, LoggedCertificate
from registry.delivery.checks import (
    DeliveryVerdict,
    PresentedDocument,
    Reason,
    SellerJudgement,
    check_delivery,
    judge_seller,
)
from registry.delivery.commitment import document_type
from registry.delivery.errors import DeliveryBundleError
from registry.merkle import MerkleError, leaf_hash, verify_inclusion
from registry.note import NoteError, parse_verifier_key
from registry.pki import verify as pki
from registry.pki.errors import PkiError, RevocationUnavailableError
from registry.subscribers import DocumentType

OfflineVerdict = DeliveryVerdict
"""The verdict type :func:`verify_offline` returns (the same type the online check returns)."""


class StalePolicy(enum.StrEnum):
    """What a stale bundle does to an offline verdict."""

    WARN = "warn"
    """Check anyway; flag the verdict ``stale_bundle``."""
    REFUSE = "refuse"
    """Answer ``STALE_BUNDLE`` without checking."""


_TIME: Final = "%Y-%m-%dT%H:%M:%SZ"


def _subject_key_id(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    except x509.ExtensionNotFound:
        return None


def _authority_key_id(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier
        ).value.key_identifier
    except x509.ExtensionNotFound:
        return None


class OfflineVerifier:
    """A bundle with its signatures and proofs verified once; the offline seller directory.

    Thread-safe and immutable once built. Raises :class:`DeliveryBundleError` when the bundle
    cannot be trusted at all: a checkpoint that does not verify with the log key (or lacks the
    witness cosignatures required), an operator CA or CRL that does not verify, or a pin that does
    not match. A single store's bad inclusion proof only makes that store unproven.
    """

    def __init__(
        self,
        bundle: DeliveryBundle,
        *,
        pinned_root_sha256: bytes | None = None,
        pinned_log_keys: Iterable[str] | None = None,
    ) -> None:
        """Verify ``bundle``; with pins, use them instead of the bundle's own anchors."""
        self._bundle = bundle
        if pinned_root_sha256 is not None:
            root_der = bundle.trust.root.public_bytes(serialization.Encoding.DER)
            if hashlib.sha256(root_der).digest() != pinned_root_sha256:
                raise DeliveryBundleError("bundle root is not the pinned regulator root")
        keys = tuple(pinned_log_keys) if pinned_log_keys is not None else bundle.log_keys
        self._checkpoint = _open_checkpoint(bundle, keys)
        try:
            self._pki = pki.Verifier(bundle.trust)
        except PkiError as error:
            raise DeliveryBundleError(f"trust part does not verify: {error}") from None
        self._horizon = bundle.revocation_horizon
        self._cas = {_subject_key_id(ca): ca for ca in bundle.trust.operator_cas}
        size, root = self._checkpoint.checkpoint.size, self._checkpoint.checkpoint.root_hash
        self._stores: dict[tuple[str, int], tuple[x509.Certificate, str | None]] = {
            (logged.operator, logged.serial): (
                logged.certificate,
                _inclusion_problem(logged, size, root),
            )
            for logged in bundle.stores
        }

    @property
    def bundle(self) -> DeliveryBundle:
        """The bundle this verifier checks against."""
        return self._bundle

    @property
    def checkpoint(self) -> SignedCheckpoint:
        """The bundle's verified checkpoint."""
        return self._checkpoint

    def find(self, operator: str, serial: int) -> x509.Certificate | None:
        """Return the bundle's store certificate for (operator, serial), if it has one."""
        known = self._stores.get((operator, serial))
        return known[0] if known is not None else None

    def judge(
        self, certificate: x509.Certificate, operator: str, at: dt.datetime
    ) -> SellerJudgement:
        """Judge the store at ``at``: chain and CRLs from the bundle, inclusion in its log."""
        known = self._stores.get((operator, certificate.serial_number))
        if known is None or known[0] != certificate:
            log_problem: str | None = "certificate is not among the bundle's logged stores"
        else:
            log_problem = known[1]
        # Past the CRLs' horizon (a stale bundle under "warn") they speak for their horizon only.
        moment = at if self._horizon is None or at <= self._horizon else self._horizon
        try:
            verdict = self._pki.verify(certificate, at=moment)
        except RevocationUnavailableError as error:
            return SellerJudgement(
                Reason.SELLER_NOT_AUTHORIZED, f"revocation status unavailable: {error}"
            )
        if moment < at and verdict.authorized:
            expired = self._expired_in_chain(certificate, at)
            if expired is not None:
                return SellerJudgement(Reason.SELLER_NOT_AUTHORIZED, expired, verdict)
        return judge_seller(verdict, token_operator=operator, log_problem=log_problem)

    def _expired_in_chain(self, certificate: x509.Certificate, at: dt.datetime) -> str | None:
        issuer = self._cas.get(_authority_key_id(certificate))
        chain = [("store certificate", certificate), ("regulator root", self._bundle.trust.root)]
        if issuer is not None:
            chain.insert(1, ("operator CA", issuer))
        for what, member in chain:
            if at > member.not_valid_after_utc:
                return f"EXPIRED: {what} expired at {member.not_valid_after_utc:{_TIME}}"
        return None

    def verify(
        self,
        token: bytes | str,
        presented_doc_type: DocumentType | int,
        presented_number: str,
        *,
        courier_company: str,
        at: dt.datetime | None = None,
        stale_policy: StalePolicy | Literal["warn", "refuse"] = StalePolicy.WARN,
    ) -> DeliveryVerdict:
        """Check a token (bytes or text form) and a presented document (:func:`verify_offline`)."""
        presented = PresentedDocument(document_type(presented_doc_type), presented_number)
        policy = StalePolicy(stale_policy)
        now = dt.datetime.now(dt.UTC) if at is None else at
        if now.tzinfo is None:
            raise ValueError("check time must be timezone-aware")
        moment = max(now.astimezone(dt.UTC), self._bundle.issued_at)
        stale = self._bundle.is_stale(moment)
        if stale and policy is StalePolicy.REFUSE:
            return DeliveryVerdict(
                Reason.STALE_BUNDLE,
                f"bundle was fresh until {self._bundle.fresh_until:{_TIME}}; refresh it",
                moment,
                stale_bundle=True,
            )
        verdict = check_delivery(
            token, presented, courier_company=courier_company, at=moment, sellers=self
        )
        return replace(verdict, stale_bundle=True) if stale else verdict


def _open_checkpoint(bundle: DeliveryBundle, keys: Iterable[str]) -> SignedCheckpoint:
    policy = bundle.witness_policy()
    problems: list[str] = []
    for key in keys:
        try:
            verifier = parse_verifier_key(key)
            return open_checkpoint(
                bundle.checkpoint,
                origin=bundle.log_origin,
                log_verifier=verifier,
                witness_policy=policy,
            )
        except (NoteError, CheckpointError) as error:
            problems.append(f"{key.split('+', 1)[0]}: {error}")
    raise DeliveryBundleError(f"bundle checkpoint does not verify ({'; '.join(problems)})")


def _inclusion_problem(logged: LoggedCertificate, size: int, root: bytes) -> str | None:
    """Return why the entry's inclusion proof fails against (size, root), or None if it holds."""
    try:
        verify_inclusion(leaf_hash(logged.entry), logged.leaf_index, size, logged.proof, root)
    except MerkleError as error:
        return f"inclusion proof of leaf {logged.leaf_index} in tree {size} fails: {error}"
    return None


_prepared: dict[int, tuple[weakref.ref[DeliveryBundle], OfflineVerifier]] = {}


def prepare(bundle: DeliveryBundle) -> OfflineVerifier:
    """Return the :class:`OfflineVerifier` of ``bundle``, built once per bundle object."""
    key = id(bundle)
    cached = _prepared.get(key)
    # The identity check guards against an id reused by a newer object.
    if cached is not None and cached[0]() is bundle:
        return cached[1]
    verifier = OfflineVerifier(bundle)
    _prepared[key] = (weakref.ref(bundle), verifier)
    # Dropped with the bundle; finalize (unlike a weakref callback) is safe at shutdown.
    weakref.finalize(bundle, _prepared.pop, key, None).atexit = False
    return verifier


def verify_offline(
    token_bytes: bytes | str,
    presented_doc_type: DocumentType | int,
    presented_number: str,
    bundle: DeliveryBundle | OfflineVerifier,
    *,
    courier_company: str,
    at: dt.datetime | None = None,
    stale_policy: StalePolicy | Literal["warn", "refuse"] = StalePolicy.WARN,
) -> OfflineVerdict:
    """Check a shipment token and the document a recipient presents, against a bundle only.

    ``token_bytes`` may also be the token's text (QR) form. ``at`` defaults to now. Raises
    ``InvalidDocumentError`` for a presented document that is not one, and
    ``DeliveryBundleError`` for a bundle that cannot be trusted; every other outcome is a verdict.
    """
    verifier = bundle if isinstance(bundle, OfflineVerifier) else prepare(bundle)
    return verifier.verify(
        token_bytes,
        presented_doc_type,
        presented_number,
        courier_company=courier_company,
        at=at,
        stale_policy=stale_policy,
    )
