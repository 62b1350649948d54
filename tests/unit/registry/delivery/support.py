"""A delivery world for the tests: real PKI, a real in-memory log, real tokens and bundles.

Certificates come from the PKI test factory (real operator CAs, CSRs and CRLs); the log is a
``registry.merkle.MemoryTree`` of real ``registry.log.entries`` issuance entries whose checkpoint
is signed with a real Ed25519 note key (and, when asked, cosigned by a witness).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.checkpoint import Checkpoint, sign_checkpoint
from registry.delivery.bundle import DeliveryBundle, LoggedCertificate
from registry.delivery.commitment import DEFAULT_PARAMS, SALT_SIZE, commit
from registry.delivery.token import ShipmentFields, sign_shipment
from registry.log.entries import Issuance, StoreRef, store_of_certificate
from registry.merkle import MemoryTree
from registry.note import CosignatureSigner, Ed25519Signer
from registry.pki.authority import CertificateAuthority
from registry.pki.revocation import Revocation
from registry.subscribers import DocumentType, normalise_number
from tests.unit.registry.pki.factory import World, make_world

ORIGIN = "realname.test/delivery-log"
COURIER = "sf-express"
ID_NUMBER = "11010519491231002X"
ICCID = "89860012345678901238"  # 89..., 20 digits, valid Luhn


def log_signer(seed: int = 7) -> Ed25519Signer:
    """A deterministic log key named after the origin, as C2SP logs name theirs."""
    return Ed25519Signer(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


def witness_signer(seed: int = 1) -> CosignatureSigner:
    """A deterministic witness key with a fixed clock."""
    key = Ed25519PrivateKey.from_private_bytes(bytes([200 + seed]) * 32)
    return CosignatureSigner(f"witness.test/w{seed}", key, lambda: 1_790_000_000)


@dataclass
class MemoryLog:
    """An append-only log of real entry bytes with checkpoints and proofs."""

    signer: Ed25519Signer = field(default_factory=log_signer)
    tree: MemoryTree = field(default_factory=MemoryTree)
    entries: list[bytes] = field(default_factory=list)

    def append(self, entry: bytes) -> int:
        self.entries.append(entry)
        return self.tree.append(entry)

    def log_issuance(self, certificate: x509.Certificate, at: dt.datetime) -> int:
        der = certificate.public_bytes(serialization.Encoding.DER)
        store, serial = store_of_certificate(der, _operator_of(certificate))
        return self.append(Issuance(at, store, serial, der).encode())

    def checkpoint(self, *cosigners: CosignatureSigner) -> bytes:
        size = self.tree.size
        return sign_checkpoint(
            Checkpoint(ORIGIN, size, self.tree.root(size)), self.signer, *cosigners
        )

    def logged(self, index: int, proof: Sequence[bytes] | None = None) -> LoggedCertificate:
        hashes = self.tree.inclusion_proof(index) if proof is None else proof
        return LoggedCertificate(self.entries[index], index, tuple(hashes))

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier().verifier_key


def _operator_of(certificate: x509.Certificate) -> str:
    from registry.pki.authorization import authorization_of

    return authorization_of(certificate).operator


@dataclass
class Delivery:
    """One hierarchy, one log, a few stores in every state a test needs."""

    now: dt.datetime
    pki: World
    log: MemoryLog
    store_key: ec.EllipticCurvePrivateKey
    good: x509.Certificate
    revoked: x509.Certificate
    unlogged: x509.Certificate
    outsider: x509.Certificate
    indices: dict[int, int]

    @property
    def issued_at(self) -> dt.datetime:
        return self.now - dt.timedelta(hours=1)

    def crls(
        self,
        *,
        store_revocations: Iterable[Revocation] | None = None,
        root_revocations: Iterable[Revocation] = (),
        this_update: dt.datetime | None = None,
    ) -> list[x509.CertificateRevocationList]:
        """Root CRL and one CRL per bundled operator; the revoked store is on cmcc's."""
        revocations = (
            list(store_revocations)
            if store_revocations is not None
            else [
                Revocation(
                    self.revoked.serial_number,
                    self.now - dt.timedelta(days=2),
                    x509.ReasonFlags.privilege_withdrawn,
                )
            ]
        )
        moment = this_update if this_update is not None else self.issued_at
        crls = [self.pki.crl(self.pki.root, root_revocations, this_update=moment)]
        for name, ca in self.pki.operators.items():
            crls.append(self.pki.crl(ca, revocations if name == "cmcc" else (), this_update=moment))
        return crls

    def logged_stores(self) -> list[LoggedCertificate]:
        """Every logged store with a valid proof, plus the unlogged one with a proof that fails."""
        stores = [
            self.log.logged(self.indices[certificate.serial_number])
            for certificate in (self.good, self.revoked, self.outsider)
        ]
        # A real issuance entry for a certificate that is not in the log: any proof must fail.
        der = self.unlogged.public_bytes(serialization.Encoding.DER)
        store, serial = store_of_certificate(der, "cmcc")
        entry = Issuance(self.issued_at, store, serial, der).encode()
        stores.append(LoggedCertificate(entry, 0, tuple(self.log.tree.inclusion_proof(0))))
        return stores

    def bundle(
        self,
        *,
        crls: Sequence[x509.CertificateRevocationList] | None = None,
        operator_cas: Sequence[CertificateAuthority] | None = None,
        stores: Sequence[LoggedCertificate] | None = None,
        checkpoint: bytes | None = None,
        issued_at: dt.datetime | None = None,
        max_age: dt.timedelta = dt.timedelta(hours=24),
        witness_keys: Sequence[str] = (),
        witness_threshold: int = 0,
    ) -> DeliveryBundle:
        return DeliveryBundle(
            trust=self.pki.bundle(
                operator_cas=operator_cas, crls=crls if crls is not None else self.crls()
            ),
            log_origin=ORIGIN,
            log_keys=(self.log.verifier_key,),
            checkpoint=checkpoint if checkpoint is not None else self.log.checkpoint(),
            issued_at=issued_at if issued_at is not None else self.issued_at,
            max_age=max_age,
            stores=tuple(stores if stores is not None else self.logged_stores()),
            witness_keys=tuple(witness_keys),
            witness_threshold=witness_threshold,
        )

    def fields(
        self,
        certificate: x509.Certificate | None = None,
        *,
        number: str = ID_NUMBER,
        doc_type: DocumentType = DocumentType.RESIDENT_ID_CARD,
        courier: str = COURIER,
        operator: str | None = None,
        issued_at: dt.datetime | None = None,
        valid_for: dt.timedelta = dt.timedelta(days=15),
        order_id: str = "TB-20250601-000123",
    ) -> ShipmentFields:
        cert = certificate if certificate is not None else self.good
        issued = issued_at if issued_at is not None else self.now - dt.timedelta(hours=2)
        salt, commitment = committed(doc_type, number)
        return ShipmentFields(
            order_id=order_id,
            waybill="SF1234567890123",
            courier=courier,
            iccid=ICCID,
            msisdn_masked="138****1234",
            operator=operator if operator is not None else _operator_of(cert),
            store_serial=cert.serial_number,
            issued_at=issued,
            expires_at=issued + valid_for,
            salt=salt,
            commitment=commitment,
            kdf=DEFAULT_PARAMS,
        )

    def token(
        self,
        certificate: x509.Certificate | None = None,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        **overrides: object,
    ) -> bytes:
        fields = self.fields(certificate, **overrides)  # type: ignore[arg-type]
        return sign_shipment(fields, key if key is not None else self.store_key)


@functools.cache
def committed(doc_type: DocumentType, number: str) -> tuple[bytes, bytes]:
    """A salt and production commitment per document, hashed once a session (tens of ms each).

    The salt is derived from the number, so tokens for one document share it: harmless in tests,
    and it lets a property test sign hundreds of tokens without hundreds of Argon2id runs.
    ``new_shipment``'s fresh salts are tested in test_token.
    """
    salt = hashlib.sha256(normalise_number(number).encode()).digest()[:SALT_SIZE]
    return salt, commit(doc_type, number, salt, DEFAULT_PARAMS)


def make_delivery(now: dt.datetime) -> Delivery:
    """Issue the stores, log all but one, and return the world."""
    pki = make_world(now)
    good = pki.issue("cmcc")
    revoked = pki.issue("cmcc", shop_id="shop-2002")
    unlogged = pki.issue("cmcc", shop_id="shop-3003")
    outsider = pki.issue("vno2", ca=pki.outsider, shop_id="shop-4004")
    log = MemoryLog()
    indices: dict[int, int] = {}
    # Unrelated entries around ours, so that proofs have real depth.
    for number in range(5):
        filler = StoreRef("cucc", "jd", f"filler-{number}", "91350100M000100Y43")
        log.append(
            Issuance(now - dt.timedelta(days=30), filler, 1000 + number, b"\x30\x00").encode()
        )
    for certificate in (good, revoked, outsider):
        indices[certificate.serial_number] = log.log_issuance(
            certificate, now - dt.timedelta(days=1)
        )
    for number in range(6):
        filler = StoreRef("ctcc", "pdd", f"filler-{number}", "91350100M000100Y43")
        log.append(
            Issuance(now - dt.timedelta(hours=5), filler, 2000 + number, b"\x30\x00").encode()
        )
    return Delivery(
        now=now,
        pki=pki,
        log=log,
        store_key=pki.store_key,
        good=good,
        revoked=revoked,
        unlogged=unlogged,
        outsider=outsider,
        indices=indices,
    )
