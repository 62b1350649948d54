"""In-process verification of store authorization certificates against a trust bundle.

A marketplace or courier app holding only a :class:`~registry.pki.bundle.TrustBundle` asks
:meth:`Verifier.verify` whether a store certificate authorizes selling a card type in a province
at a time, and gets a :class:`Verdict` with a machine-readable :class:`Reason`.

How a verification runs:

1. Path validation to the regulator root with ``cryptography.x509.verification`` (client verifier,
   RFC 5280 + CA/B-style profile checks, validity windows, basicConstraints, keyUsage), with an
   end-entity extension policy that requires our extended key usage and refuses serverAuth,
   clientAuth and anyExtendedKeyUsage. The stock client verifier demands clientAuth, but its
   ``ExtensionPolicy`` lets the EKU rule be replaced by our validator, so the standard path
   builder is used as is rather than hand-written ``verify_directly_issued_by`` checks. The
   issuing operator CA is chosen by the store certificate's authorityKeyIdentifier, which is how
   key generations of a rotated operator CA are told apart, and only that CA is offered as the
   intermediate: a successful verification costs exactly two ECDSA verifications (store cert by
   operator CA, operator CA by root).
2. Revocation from the bundle's CRLs, which x509.verification does not do: the operator CA against
   the root CRL, then the store certificate against its operator's CRL. CRLs are verified once
   (signature by a bundle CA of the CRL issuer's name, selected by the CRL's AKI) and cached
   keyed by their bytes, as sets of revoked serials; a CRL whose ``nextUpdate`` has passed at the
   verification time makes verification raise :class:`RevocationUnavailableError` rather than
   guess. A revocation counts from its recorded date, except for key/CA compromise, which counts
   always.
3. The authorization extension: decoded, its operator compared with the issuing CA's
   OperatorAuthority, its scope compared with the card type and province asked about.

Only when path validation fails is the cause diagnosed, at the cost of another signature check:
the verdict then says INVALID_SIGNATURE, EXPIRED, NOT_YET_VALID or UNKNOWN_STORE.

Precedence, first match wins: UNKNOWN_STORE (issuing key not in the bundle) > INVALID_SIGNATURE
(store signature fails) > EXPIRED / NOT_YET_VALID (store cert, then operator CA, then root) >
UNKNOWN_STORE (signed by an operator CA but not a store authorization: foreign or missing EKU,
missing or malformed extension, extension naming another operator) > INVALID_SIGNATURE (any other
path-profile violation) > OPERATOR_REVOKED > REVOKED > OUT_OF_SCOPE > AUTHORIZED. A wrongly
typed certificate is UNKNOWN_STORE rather than INVALID_SIGNATURE because its signature is genuine:
the operator signed it, just not as a store authorization, so no authorization is known.

Times are compared at whole-second resolution, the resolution of certificate validity.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from registry.clock import as_utc
from registry.pki.authority import operator_authority_of
from registry.pki.authorization import StoreAuthorization, authorization_of
from registry.pki.bundle import TrustBundle
from registry.pki.errors import (
    BundleError,
    CertificateFormatError,
    InvalidAuthorizationError,
    InvalidCrlError,
    MalformedExtensionError,
    RevocationUnavailableError,
)
from registry.pki.identifiers import authority_key_id, subject_key_id
from registry.pki.keys import require_p256_public_key
from registry.pki.oids import STORE_AUTHORIZATION_EKU
from registry.pki.regions import PROVINCES
from registry.pki.revocation import COMPROMISE_REASONS
from registry.pki.scope import CardType


class Reason(enum.StrEnum):
    """Machine-readable outcome of a verification."""

    AUTHORIZED = "AUTHORIZED"
    """Valid chain, nothing revoked, and the scope covers what was asked."""
    REVOKED = "REVOKED"
    """The store certificate is on its operator's CRL."""
    EXPIRED = "EXPIRED"
    """The store certificate (or its operator CA) expired before the verification time."""
    NOT_YET_VALID = "NOT_YET_VALID"
    """The store certificate (or its operator CA) is not valid yet at the verification time."""
    OPERATOR_REVOKED = "OPERATOR_REVOKED"
    """The issuing operator CA is on the regulator root's CRL."""
    OUT_OF_SCOPE = "OUT_OF_SCOPE"
    """A valid authorization that does not cover the card type or province asked about."""
    UNKNOWN_STORE = "UNKNOWN_STORE"
    """No authorization known: issuer not in the bundle, or not a store authorization."""
    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    """A signature does not verify, or the path breaks the certificate profile."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of one verification; fields other than ``reason`` and ``detail`` may be empty.

    ``authorization`` is filled only from certificates whose signature was verified.
    """

    reason: Reason
    detail: str
    verified_at: dt.datetime
    serial_number: int | None = None
    operator: str | None = None
    authorization: StoreAuthorization | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None

    @property
    def authorized(self) -> bool:
        """Whether the verdict is :attr:`Reason.AUTHORIZED`."""
        return self.reason is Reason.AUTHORIZED


_FORBIDDEN_EKUS: Final = frozenset(
    {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    }
)


def _eku_problem(usages: x509.ExtendedKeyUsage) -> str | None:
    present = set(usages)
    if STORE_AUTHORIZATION_EKU not in present:
        return "extended key usage lacks the store-authorization purpose"
    if present & _FORBIDDEN_EKUS:
        return "extended key usage also allows TLS or any purpose"
    return None


def _check_store_eku(
    _policy: Policy, _cert: x509.Certificate, usages: x509.ExtendedKeyUsage
) -> None:
    problem = _eku_problem(usages)
    if problem is not None:
        raise ValueError(problem)


_EE_POLICY: Final = (
    ExtensionPolicy.webpki_defaults_ee()
    .require_present(x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, _check_store_eku)
    .require_not_present(x509.SubjectAlternativeName)
)
_CA_POLICY: Final = ExtensionPolicy.webpki_defaults_ca()


@dataclass(frozen=True, slots=True)
class _OperatorCa:
    certificate: x509.Certificate
    operator: str
    key_id: bytes
    subject_der: bytes
    serial_number: int


@dataclass(frozen=True, slots=True)
class _RevocationIndex:
    issuer_der: bytes
    crl_number: int
    next_update: dt.datetime
    entries: Mapping[int, tuple[dt.datetime, x509.ReasonFlags]]

    def lookup(
        self, serial_number: int, moment: dt.datetime
    ) -> tuple[dt.datetime, x509.ReasonFlags] | None:
        entry = self.entries.get(serial_number)
        if entry is None:
            return None
        revoked_at, reason = entry
        if revoked_at <= moment or reason in COMPROMISE_REASONS:
            return entry
        return None


def _name_der(name: x509.Name) -> bytes:
    return name.public_bytes()


def _point(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _crl_sign_allowed(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign
    except x509.ExtensionNotFound:
        return False


def _index_crl(crl: x509.CertificateRevocationList, issuer_der: bytes) -> _RevocationIndex:
    next_update = crl.next_update_utc
    if next_update is None:
        raise InvalidCrlError("CRL has no nextUpdate (RFC 5280 requires one)")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise InvalidCrlError("CRL has no CRL number") from None
    entries: dict[int, tuple[dt.datetime, x509.ReasonFlags]] = {}
    for revoked in crl:
        try:
            reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            reason = x509.ReasonFlags.unspecified
        entries[revoked.serial_number] = (revoked.revocation_date_utc, reason)
    return _RevocationIndex(
        issuer_der=issuer_der, crl_number=number, next_update=next_update, entries=entries
    )


class _Snapshot:
    """Immutable verification state derived from one bundle.

    Verified operator CAs and CRLs are cached keyed by their DER (and the verifying key), and a
    new snapshot takes over from the previous one only the entries its bundle still uses, so a
    long-running verifier refreshed daily does not accumulate old CRLs.
    """

    def __init__(self, bundle: TrustBundle, previous: _Snapshot | None) -> None:
        previous_cas = previous.ca_cache if previous is not None else {}
        previous_crls = previous.crl_cache if previous is not None else {}
        self.ca_cache: dict[tuple[bytes, bytes], _OperatorCa] = {}
        self.crl_cache: dict[tuple[bytes, bytes], _RevocationIndex] = {}
        self.root = bundle.root
        self.root_der = bundle.root.public_bytes(serialization.Encoding.DER)
        self.root_subject_der = _name_der(bundle.root.subject)
        self.store = Store([bundle.root])
        self.by_key_id: dict[bytes, _OperatorCa] = {}
        self.by_subject: dict[bytes, list[_OperatorCa]] = {}
        for certificate in bundle.operator_cas:
            ca = self._operator_ca(certificate, previous_cas)
            self.by_key_id[ca.key_id] = ca
            self.by_subject.setdefault(ca.subject_der, []).append(ca)
        self.crls: dict[bytes, _RevocationIndex] = {}
        for crl in bundle.crls:
            index = self._verified_crl(crl, previous_crls)
            current = self.crls.get(index.issuer_der)
            if current is None or index.crl_number > current.crl_number:
                self.crls[index.issuer_der] = index
        self.client: tuple[dt.datetime, ClientVerifier] | None = None

    def _operator_ca(
        self,
        certificate: x509.Certificate,
        previous: dict[tuple[bytes, bytes], _OperatorCa],
    ) -> _OperatorCa:
        key = (self.root_der, certificate.public_bytes(serialization.Encoding.DER))
        cached = previous.get(key)
        if cached is not None:
            self.ca_cache[key] = cached
            return cached
        try:
            certificate.verify_directly_issued_by(self.root)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise BundleError(
                f"operator CA {certificate.subject.rfc4514_string()!r} is not signed by the root"
            ) from exc
        key_id = subject_key_id(certificate)
        if key_id is None:
            raise BundleError("operator CA certificate has no subjectKeyIdentifier")
        try:
            operator = operator_authority_of(certificate).operator
        except MalformedExtensionError as exc:
            raise BundleError(f"operator CA certificate is unusable: {exc}") from exc
        ca = _OperatorCa(
            certificate=certificate,
            operator=operator,
            key_id=key_id,
            subject_der=_name_der(certificate.subject),
            serial_number=certificate.serial_number,
        )
        self.ca_cache[key] = ca
        return ca

    def _verified_crl(
        self,
        crl: x509.CertificateRevocationList,
        previous: dict[tuple[bytes, bytes], _RevocationIndex],
    ) -> _RevocationIndex:
        issuer_der = _name_der(crl.issuer)
        if issuer_der == self.root_subject_der:
            signers = [self.root]
        else:
            signers = [ca.certificate for ca in self.by_subject.get(issuer_der, [])]
        wanted = authority_key_id(crl)
        if wanted is not None:
            signers = [cert for cert in signers if subject_key_id(cert) in (wanted, None)]
        if not signers:
            raise InvalidCrlError(
                f"no CA in the bundle can have signed the CRL of {crl.issuer.rfc4514_string()!r}"
            )
        der = crl.public_bytes(serialization.Encoding.DER)
        for signer in signers:
            key = (der, _point(signer))
            cached = previous.get(key) or self.crl_cache.get(key)
            if cached is not None:
                self.crl_cache[key] = cached
                return cached
            if _crl_sign_allowed(signer) and crl.is_signature_valid(
                require_p256_public_key(signer.public_key())
            ):
                index = _index_crl(crl, issuer_der)
                self.crl_cache[key] = index
                return index
        raise InvalidCrlError(
            f"CRL of {crl.issuer.rfc4514_string()!r} has a signature no bundle CA made"
        )

    def client_verifier(self, moment: dt.datetime) -> ClientVerifier:
        # One verifier per second of verification time: rebuilt at most once a second in a
        # "now" loop, and replaced with a single assignment, so threads can share it.
        cached = self.client
        if cached is not None and cached[0] == moment:
            return cached[1]
        verifier = (
            PolicyBuilder()
            .store(self.store)
            .time(moment)
            .max_chain_depth(1)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
            .build_client_verifier()
        )
        self.client = (moment, verifier)
        return verifier

    def fresh_crl(
        self, issuer_der: bytes, operator: str | None, moment: dt.datetime
    ) -> _RevocationIndex:
        index = self.crls.get(issuer_der)
        if index is not None and moment <= index.next_update:
            return index
        what = "the regulator root" if operator is None else f"operator {operator}"
        if index is None:
            raise RevocationUnavailableError(f"the trust bundle has no CRL for {what}")
        raise RevocationUnavailableError(
            f"the CRL for {what} expired at {index.next_update:%Y-%m-%dT%H:%M:%SZ}; "
            "refresh the trust bundle"
        )


def _load_certificate(certificate: bytes | x509.Certificate) -> x509.Certificate:
    if isinstance(certificate, x509.Certificate):
        return certificate
    try:
        if certificate[:1] == b"0":
            return x509.load_der_x509_certificate(certificate)
        return x509.load_pem_x509_certificate(certificate)
    except ValueError as exc:
        raise CertificateFormatError(f"not an X.509 certificate (PEM or DER): {exc}") from exc


def _read_authorization(certificate: x509.Certificate) -> StoreAuthorization | str:
    """Return the certificate's authorization, or why it has no usable one."""
    try:
        return authorization_of(certificate)
    except MalformedExtensionError as exc:
        return str(exc)


class Verifier:
    """Verifies store certificates against a trust bundle; thread-safe, reusable, cached."""

    def __init__(self, bundle: TrustBundle) -> None:
        """Check ``bundle`` (operator CA and CRL signatures) and prepare to verify against it."""
        self._snapshot = _Snapshot(bundle, None)

    def update(self, bundle: TrustBundle) -> None:
        """Switch to a newer bundle (typically fresh CRLs); unchanged parts are not re-verified."""
        # One assignment swaps the whole state: concurrent verify() calls see old or new.
        self._snapshot = _Snapshot(bundle, self._snapshot)

    def verify(
        self,
        certificate: bytes | x509.Certificate,
        *,
        card_type: CardType | str | None = None,
        province: str | None = None,
        at: dt.datetime | None = None,
    ) -> Verdict:
        """Verify a store certificate (PEM, DER or parsed) for ``card_type`` in ``province``.

        ``None`` for ``card_type`` or ``province`` leaves that dimension unchecked; ``at``
        defaults to now. Raises :class:`RevocationUnavailableError` when the bundle's CRLs cannot
        answer for the time asked, and :class:`CertificateFormatError` for unparseable input.
        """
        snapshot = self._snapshot
        moment = as_utc(at).replace(microsecond=0)
        wanted_type = _card_type(card_type)
        if province is not None and province not in PROVINCES:
            raise InvalidAuthorizationError(f"not a GB/T 2260 province code: {province!r}")
        leaf = _load_certificate(certificate)
        try:
            aki = authority_key_id(leaf)
        except ValueError as exc:
            raise CertificateFormatError(f"certificate extensions are malformed: {exc}") from exc
        if aki is not None:
            ca = snapshot.by_key_id.get(aki)
            if ca is None:
                return Verdict(
                    Reason.UNKNOWN_STORE,
                    f"issuing key {aki.hex()} is not an operator CA in the trust bundle",
                    moment,
                    serial_number=leaf.serial_number,
                )
            candidates = [ca]
        else:
            candidates = snapshot.by_subject.get(_name_der(leaf.issuer), [])
            if not candidates:
                return Verdict(
                    Reason.UNKNOWN_STORE,
                    "issuer is not an operator CA in the trust bundle",
                    moment,
                    serial_number=leaf.serial_number,
                )
        client = snapshot.client_verifier(moment)
        failure: VerificationError | None = None
        for candidate in candidates:
            try:
                client.verify(leaf, [candidate.certificate])
            except VerificationError as exc:
                failure = exc
                continue
            return _judge(
                snapshot, leaf, candidate, moment, card_type=wanted_type, province=province
            )
        return _diagnose(leaf, candidates, moment, snapshot.root, failure)


def _card_type(card_type: CardType | str | None) -> CardType | None:
    if card_type is None or isinstance(card_type, CardType):
        return card_type
    try:
        return CardType(card_type)
    except ValueError:
        raise InvalidAuthorizationError(f"unknown card type {card_type!r}") from None


def _leaf_verdict(
    reason: Reason,
    detail: str,
    leaf: x509.Certificate,
    *,
    moment: dt.datetime,
    operator: str,
    authorization: StoreAuthorization | None = None,
    revocation: tuple[dt.datetime, x509.ReasonFlags] | None = None,
) -> Verdict:
    return Verdict(
        reason,
        detail,
        moment,
        serial_number=leaf.serial_number,
        operator=operator,
        authorization=authorization,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        revoked_at=revocation[0] if revocation is not None else None,
        revocation_reason=revocation[1] if revocation is not None else None,
    )


def _judge(
    snapshot: _Snapshot,
    leaf: x509.Certificate,
    ca: _OperatorCa,
    moment: dt.datetime,
    *,
    card_type: CardType | None,
    province: str | None,
) -> Verdict:
    """Decide the verdict for a certificate whose path validated."""
    root_crl = snapshot.fresh_crl(snapshot.root_subject_der, None, moment)
    read = _read_authorization(leaf)
    authorization = read if isinstance(read, StoreAuthorization) else None
    revocation = root_crl.lookup(ca.serial_number, moment)
    if revocation is not None:
        return _leaf_verdict(
            Reason.OPERATOR_REVOKED,
            f"operator CA of {ca.operator} was revoked by the regulator",
            leaf,
            moment=moment,
            operator=ca.operator,
            authorization=authorization,
            revocation=revocation,
        )
    # Only now the operator's CRL: once its CA is revoked nobody need keep re-signing it.
    operator_crl = snapshot.fresh_crl(ca.subject_der, ca.operator, moment)
    revocation = operator_crl.lookup(leaf.serial_number, moment)
    if revocation is not None:
        return _leaf_verdict(
            Reason.REVOKED,
            f"store authorization was revoked by {ca.operator}",
            leaf,
            moment=moment,
            operator=ca.operator,
            authorization=authorization,
            revocation=revocation,
        )
    if authorization is None:
        return _leaf_verdict(
            Reason.UNKNOWN_STORE,
            f"not a store authorization: {read}",
            leaf,
            moment=moment,
            operator=ca.operator,
        )
    if authorization.operator != ca.operator:
        return _leaf_verdict(
            Reason.UNKNOWN_STORE,
            f"authorization names operator {authorization.operator} but {ca.operator}'s CA "
            "issued it",
            leaf,
            moment=moment,
            operator=ca.operator,
        )
    if not authorization.scope.permits(card_type, province):
        asked = f"{card_type or 'any card type'} in {province or 'any province'}"
        return _leaf_verdict(
            Reason.OUT_OF_SCOPE,
            f"authorized for {authorization.scope.describe()}, not {asked}",
            leaf,
            moment=moment,
            operator=ca.operator,
            authorization=authorization,
        )
    return _leaf_verdict(
        Reason.AUTHORIZED,
        f"authorized by {ca.operator}",
        leaf,
        moment=moment,
        operator=ca.operator,
        authorization=authorization,
    )


def _diagnose(
    leaf: x509.Certificate,
    candidates: list[_OperatorCa],
    moment: dt.datetime,
    root: x509.Certificate,
    failure: VerificationError | None,
) -> Verdict:
    """Explain why path validation failed, checking the signature first."""
    issuer: _OperatorCa | None = None
    for candidate in candidates:
        try:
            leaf.verify_directly_issued_by(candidate.certificate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        issuer = candidate
        break
    if issuer is None:
        return Verdict(
            Reason.INVALID_SIGNATURE,
            "certificate signature does not verify with the operator CA it names",
            moment,
            serial_number=leaf.serial_number,
        )
    read = _read_authorization(leaf)
    authorization = read if isinstance(read, StoreAuthorization) else None
    for certificate, what in (
        (leaf, "store certificate"),
        (issuer.certificate, f"operator CA of {issuer.operator}"),
        (root, "regulator root"),
    ):
        if moment > certificate.not_valid_after_utc:
            return _leaf_verdict(
                Reason.EXPIRED,
                f"{what} expired at {certificate.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
                leaf,
                moment=moment,
                operator=issuer.operator,
                authorization=authorization,
            )
        if moment < certificate.not_valid_before_utc:
            return _leaf_verdict(
                Reason.NOT_YET_VALID,
                f"{what} is valid from {certificate.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}",
                leaf,
                moment=moment,
                operator=issuer.operator,
                authorization=authorization,
            )
    try:
        problem = _eku_problem(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        problem = "certificate has no extended key usage"
    if problem is not None:
        return _leaf_verdict(
            Reason.UNKNOWN_STORE,
            f"not a store authorization: {problem}",
            leaf,
            moment=moment,
            operator=issuer.operator,
        )
    return _leaf_verdict(
        Reason.INVALID_SIGNATURE,
        f"certificate path is invalid: {failure}",
        leaf,
        moment=moment,
        operator=issuer.operator,
    )
