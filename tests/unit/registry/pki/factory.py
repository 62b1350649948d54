"""A small PKI world for the tests: root, operator CAs, a store key, and ways to bend the profile.

Everything is made from real keys and real signatures; the "wrong" certificates (expired, foreign
EKU, forged signature) are built with cryptography's CertificateBuilder exactly as an attacker or a
misbehaving CA would, not by patching the code under test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID

from registry.pki.authority import CertificateAuthority, create_operator_ca, create_root_ca
from registry.pki.authorization import StoreAuthorization, authorization_extension
from registry.pki.bundle import TrustBundle
from registry.pki.issuance import issue_store_certificate, store_subject
from registry.pki.keys import generate_private_key
from registry.pki.oids import STORE_AUTHORIZATION_EKU, STORE_AUTHORIZATION_EXTENSION
from registry.pki.revocation import Revocation, build_crl
from registry.pki.scope import Scope

BASE_URL = "http://127.0.0.1:8080"
REAL_CODES = ("91350100M000100Y43", "91110000802100433B")


def spki(key: PublicKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo, to compare keys of any type."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def make_csr(
    key: ec.EllipticCurvePrivateKey, common_name: str = "store"
) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )


@dataclass
class World:
    now: dt.datetime
    root: CertificateAuthority
    operators: dict[str, CertificateAuthority]
    outsider: CertificateAuthority
    store_key: ec.EllipticCurvePrivateKey
    csr: x509.CertificateSigningRequest
    crl_numbers: dict[str, int] = field(default_factory=dict)

    @property
    def epoch(self) -> dt.datetime:
        """When the hierarchy was created (three years before now)."""
        return self.root.not_before

    def authorization(self, operator: str = "cmcc", **overrides: object) -> StoreAuthorization:
        fields: dict[str, object] = {
            "operator": operator,
            "marketplace": "taobao",
            "shop_id": "shop-1001",
            "legal_name": "福州市某某通信器材有限公司",
            "credit_code": REAL_CODES[0],
            "scope": Scope.of(["personal"], ["35", "11"]),
        }
        fields.update(overrides)
        return StoreAuthorization(**fields)  # type: ignore[arg-type]

    def issue(
        self,
        operator: str = "cmcc",
        *,
        ca: CertificateAuthority | None = None,
        now: dt.datetime | None = None,
        validity: dt.timedelta = dt.timedelta(days=365),
        **overrides: object,
    ) -> x509.Certificate:
        issuer = ca if ca is not None else self.operators[operator]
        return issue_store_certificate(
            issuer,
            self.csr,
            self.authorization(operator, **overrides),
            base_url=BASE_URL,
            now=now if now is not None else self.now - dt.timedelta(days=1),
            validity=validity,
        )

    def crl(
        self,
        ca: CertificateAuthority,
        revocations: Iterable[Revocation] = (),
        *,
        this_update: dt.datetime | None = None,
        next_update: dt.datetime | None = None,
    ) -> x509.CertificateRevocationList:
        key = ca.subject.rfc4514_string()
        self.crl_numbers[key] = self.crl_numbers.get(key, 0) + 1
        return build_crl(
            ca,
            revocations,
            crl_number=self.crl_numbers[key],
            this_update=this_update
            if this_update is not None
            else self.now - dt.timedelta(hours=1),
            next_update=next_update,
        )

    def bundle(
        self,
        *,
        operator_cas: Sequence[CertificateAuthority] | None = None,
        crls: Sequence[x509.CertificateRevocationList] | None = None,
    ) -> TrustBundle:
        cas = list(operator_cas) if operator_cas is not None else list(self.operators.values())
        if crls is None:
            crls = [self.crl(self.root)] + [self.crl(ca) for ca in cas]
        return TrustBundle(
            root=self.root.certificate,
            operator_cas=tuple(ca.certificate for ca in cas),
            crls=tuple(crls),
        )


def make_world(now: dt.datetime) -> World:
    epoch = now - dt.timedelta(days=3 * 365)
    root = create_root_ca(now=epoch)
    operators = {
        name: create_operator_ca(root, name, now=epoch, base_url=BASE_URL)
        for name in ("cmcc", "cucc", "ctcc", "vno1")
    }
    outsider = create_operator_ca(root, "vno2", now=epoch, base_url=BASE_URL)
    store_key = generate_private_key()
    return World(
        now=now,
        root=root,
        operators=operators,
        outsider=outsider,
        store_key=store_key,
        csr=make_csr(store_key),
    )


def forge_certificate(
    *,
    issuer: CertificateAuthority,
    authorization: StoreAuthorization | None,
    subject_key: ec.EllipticCurvePublicKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    signing_key: ec.EllipticCurvePrivateKey | None = None,
    ekus: Sequence[x509.ObjectIdentifier] | None = (STORE_AUTHORIZATION_EKU,),
    raw_extension: bytes | None = None,
) -> x509.Certificate:
    """Build a store-like certificate with profile knobs: EKUs, signer, extension presence."""
    subject = (
        store_subject(authorization)
        if authorization is not None
        else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not a store")])
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(subject_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier(
                key_identifier=issuer.key_id,
                authority_cert_issuer=None,
                authority_cert_serial_number=None,
            ),
            critical=False,
        )
    )
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    if raw_extension is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(STORE_AUTHORIZATION_EXTENSION, raw_extension),
            critical=False,
        )
    elif authorization is not None:
        builder = builder.add_extension(authorization_extension(authorization), critical=False)
    key = signing_key if signing_key is not None else issuer.private_key
    return builder.sign(key, hashes.SHA256())
