from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from registry.pki.authority import create_operator_ca, create_root_ca, rotate_operator_ca
from registry.pki.bundle import TrustBundle
from registry.pki.errors import (
    BundleError,
    CertificateFormatError,
    InvalidAuthorizationError,
    InvalidCrlError,
    RevocationUnavailableError,
)
from registry.pki.keys import generate_private_key
from registry.pki.oids import STORE_AUTHORIZATION_EKU
from registry.pki.revocation import Revocation, build_crl
from registry.pki.scope import CardType, Scope
from registry.pki.verify import Reason, Verifier
from tests.unit.registry.pki.factory import World, forge_certificate

DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM


@pytest.fixture(scope="module")
def verifier(world: World) -> Verifier:
    return Verifier(world.bundle())


def _forge(world: World, operator: str = "cmcc", **kwargs: object) -> x509.Certificate:
    fields: dict[str, object] = {
        "issuer": world.operators[operator],
        "authorization": world.authorization(operator),
        "subject_key": world.store_key.public_key(),
        "not_before": world.now - dt.timedelta(days=1),
        "not_after": world.now + dt.timedelta(days=30),
    }
    fields.update(kwargs)
    return forge_certificate(**fields)  # type: ignore[arg-type]


def test_authorized(world: World, verifier: Verifier) -> None:
    certificate = world.issue()
    for form in (certificate, certificate.public_bytes(DER), certificate.public_bytes(PEM)):
        verdict = verifier.verify(form, card_type=CardType.PERSONAL, province="35")
        assert verdict.reason is Reason.AUTHORIZED, verdict.detail
        assert verdict.authorized
    assert verdict.operator == "cmcc"
    assert verdict.serial_number == certificate.serial_number
    assert verdict.authorization == world.authorization()
    assert verdict.not_after == certificate.not_valid_after_utc
    assert verdict.revoked_at is None
    assert verifier.verify(certificate).reason is Reason.AUTHORIZED
    assert verifier.verify(certificate, card_type="personal").reason is Reason.AUTHORIZED


def test_expired(world: World, verifier: Verifier) -> None:
    certificate = world.issue(now=world.now - dt.timedelta(days=400))
    verdict = verifier.verify(certificate, card_type=CardType.PERSONAL, province="35")
    assert verdict.reason is Reason.EXPIRED
    assert verdict.authorization == world.authorization()
    # The same certificate was an authorization while it was valid.
    past = world.now - dt.timedelta(days=100)
    assert verifier.verify(certificate, at=past).reason is Reason.AUTHORIZED


def test_not_yet_valid(world: World, verifier: Verifier) -> None:
    certificate = world.issue(now=world.now + dt.timedelta(days=10))
    verdict = verifier.verify(certificate)
    assert verdict.reason is Reason.NOT_YET_VALID
    assert verdict.authorization is not None


@pytest.mark.parametrize(
    "ekus",
    [
        [ExtendedKeyUsageOID.SERVER_AUTH],
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        [STORE_AUTHORIZATION_EKU, ExtendedKeyUsageOID.SERVER_AUTH],
        [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE],
        None,
    ],
    ids=["server", "client", "ours+server", "any", "absent"],
)
def test_wrong_eku_is_not_a_store_authorization(
    world: World, verifier: Verifier, ekus: list[x509.ObjectIdentifier] | None
) -> None:
    verdict = verifier.verify(_forge(world, ekus=ekus))
    assert verdict.reason is Reason.UNKNOWN_STORE
    assert "extended key usage" in verdict.detail
    assert verdict.authorization is None


def test_signed_by_another_key(world: World, verifier: Verifier) -> None:
    # Everything names cmcc's CA, including its key id, but another key signed it.
    forged = _forge(world, signing_key=generate_private_key())
    verdict = verifier.verify(forged)
    assert verdict.reason is Reason.INVALID_SIGNATURE
    assert verdict.authorization is None


def test_tampered_certificate(world: World, verifier: Verifier) -> None:
    der = world.issue(scope=Scope.of(["personal"], ["11"])).public_bytes(DER)
    # Widen the province list from Beijing (11) to Shanghai (31) without re-signing.
    tampered = der.replace(b"\x13\x0211", b"\x13\x0231")
    assert tampered != der
    assert verifier.verify(tampered).reason is Reason.INVALID_SIGNATURE


def test_out_of_scope_card_type_and_province(world: World, verifier: Verifier) -> None:
    certificate = world.issue(scope=Scope.of(["personal"], ["35", "11"]))
    by_type = verifier.verify(certificate, card_type=CardType.INDUSTRY, province="35")
    assert by_type.reason is Reason.OUT_OF_SCOPE
    assert "industry" in by_type.detail
    by_province = verifier.verify(certificate, card_type=CardType.PERSONAL, province="44")
    assert by_province.reason is Reason.OUT_OF_SCOPE
    assert by_province.authorization is not None


def test_nationwide_scope(world: World, verifier: Verifier) -> None:
    certificate = world.issue(scope=Scope.of(["industry"], "all"))
    for province in ("11", "65", "82"):
        assert verifier.verify(certificate, card_type="industry", province=province).authorized


def test_revoked_store(world: World) -> None:
    certificate = world.issue()
    revoked_at = world.now - dt.timedelta(hours=5)
    ca = world.operators["cmcc"]
    crls = [
        world.crl(world.root),
        world.crl(
            ca, [Revocation(certificate.serial_number, revoked_at, x509.ReasonFlags.superseded)]
        ),
        *(world.crl(other) for name, other in world.operators.items() if name != "cmcc"),
    ]
    checker = Verifier(world.bundle(crls=crls))
    verdict = checker.verify(certificate, card_type="personal", province="11")
    assert verdict.reason is Reason.REVOKED
    assert verdict.revoked_at == revoked_at
    assert verdict.revocation_reason is x509.ReasonFlags.superseded
    assert verdict.authorization == world.authorization()
    # Before the revocation the authorization stood; other certificates are untouched.
    assert checker.verify(certificate, at=revoked_at - dt.timedelta(minutes=1)).authorized
    assert checker.verify(world.issue()).authorized


def test_key_compromise_counts_from_before_its_date(world: World) -> None:
    certificate = world.issue()
    revoked_at = world.now - dt.timedelta(hours=5)
    ca = world.operators["cmcc"]
    crls = [
        world.crl(world.root),
        world.crl(
            ca, [Revocation(certificate.serial_number, revoked_at, x509.ReasonFlags.key_compromise)]
        ),
        *(world.crl(other) for name, other in world.operators.items() if name != "cmcc"),
    ]
    verdict = Verifier(world.bundle(crls=crls)).verify(
        certificate, at=revoked_at - dt.timedelta(hours=1)
    )
    assert verdict.reason is Reason.REVOKED


def test_revoked_operator(world: World) -> None:
    vno1 = world.operators["vno1"]
    store = world.issue("vno1")
    root_crl = world.crl(
        world.root,
        [
            Revocation(
                vno1.certificate.serial_number,
                world.now - dt.timedelta(hours=1),
                x509.ReasonFlags.privilege_withdrawn,
            )
        ],
    )
    crls = [root_crl, *(world.crl(ca) for ca in world.operators.values())]
    checker = Verifier(world.bundle(crls=crls))
    verdict = checker.verify(store, card_type="personal", province="35")
    assert verdict.reason is Reason.OPERATOR_REVOKED
    assert verdict.revocation_reason is x509.ReasonFlags.privilege_withdrawn
    assert verdict.operator == "vno1"
    assert checker.verify(world.issue("cmcc")).authorized


def test_unknown_store_issuer_not_in_bundle(world: World, verifier: Verifier) -> None:
    outsider = world.issue("vno2", ca=world.outsider)
    verdict = verifier.verify(outsider)
    assert verdict.reason is Reason.UNKNOWN_STORE
    assert verdict.authorization is None


def test_unknown_store_from_another_hierarchy(world: World, verifier: Verifier) -> None:
    other_root = create_root_ca(now=world.epoch)
    other_cmcc = create_operator_ca(other_root, "cmcc", now=world.epoch)
    foreign = world.issue("cmcc", ca=other_cmcc)
    assert verifier.verify(foreign).reason is Reason.UNKNOWN_STORE


def test_authorization_for_another_operator(world: World, verifier: Verifier) -> None:
    verdict = verifier.verify(_forge(world, authorization=world.authorization("cucc")))
    assert verdict.reason is Reason.UNKNOWN_STORE
    assert "cucc" in verdict.detail


def test_certificate_without_authorization(world: World, verifier: Verifier) -> None:
    verdict = verifier.verify(_forge(world, authorization=None))
    assert verdict.reason is Reason.UNKNOWN_STORE
    assert "no StoreAuthorization extension" in verdict.detail


def test_certificate_with_a_malformed_authorization(world: World, verifier: Verifier) -> None:
    # Signed by the real operator CA, but the extension bytes are not a StoreAuthorization.
    verdict = verifier.verify(_forge(world, raw_extension=b"\x30\x03\x02\x01\x01"))
    assert verdict.reason is Reason.UNKNOWN_STORE
    assert "not valid DER" in verdict.detail
    assert verdict.authorization is None


def test_stale_or_missing_crls_refuse_to_answer(world: World) -> None:
    certificate = world.issue()
    stale = world.bundle()
    with pytest.raises(RevocationUnavailableError, match="refresh"):
        Verifier(stale).verify(certificate, at=world.now + dt.timedelta(days=2))
    no_operator_crl = world.bundle(crls=[world.crl(world.root)])
    with pytest.raises(RevocationUnavailableError, match="operator cmcc"):
        Verifier(no_operator_crl).verify(certificate)
    no_root_crl = world.bundle(crls=[world.crl(world.operators["cmcc"])])
    with pytest.raises(RevocationUnavailableError, match="root"):
        Verifier(no_root_crl).verify(certificate)


def test_newest_crl_wins(world: World) -> None:
    certificate = world.issue()
    ca = world.operators["cmcc"]
    older = world.crl(ca)
    newer = world.crl(
        ca, [Revocation(certificate.serial_number, world.now - dt.timedelta(hours=1))]
    )
    crls = [world.crl(world.root), newer, older]
    assert Verifier(world.bundle(crls=crls)).verify(certificate).reason is Reason.REVOKED


def test_forged_crl_is_refused(world: World) -> None:
    ca = world.operators["cmcc"]
    rogue = create_operator_ca(world.root, "cmcc", now=world.epoch)
    # Same issuer name and claimed key id as cmcc's CRL, but signed by a key not in the bundle.
    forged = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(world.now)
        .next_update(world.now + dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(99), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(ca.key_id, None, None), critical=False)
        .sign(rogue.private_key, hashes.SHA256())
    )
    with pytest.raises(InvalidCrlError, match="signature"):
        Verifier(world.bundle(crls=[world.crl(world.root), forged]))
    orphan = build_crl(world.outsider, [], crl_number=1)
    with pytest.raises(InvalidCrlError, match="no CA"):
        Verifier(world.bundle(crls=[world.crl(world.root), orphan]))


def test_bundle_with_an_operator_ca_the_root_did_not_sign(world: World) -> None:
    # An impostor root with the real root's (default) name certifies a CA; the bundle must
    # refuse it.
    impostor = create_root_ca(now=world.epoch)
    assert impostor.subject == world.root.subject
    rogue_ca = create_operator_ca(impostor, "cmcc", now=world.epoch)
    bundle = TrustBundle(root=world.root.certificate, operator_cas=(rogue_ca.certificate,))
    with pytest.raises(BundleError, match="not signed by the root"):
        Verifier(bundle)


def test_rotation(world: World) -> None:
    old = world.operators["ctcc"]
    before = world.issue("ctcc")
    new = rotate_operator_ca(world.root, old, now=world.now - dt.timedelta(days=2))
    after = world.issue("ctcc", ca=new)
    new_aki = after.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert new_aki.key_identifier == new.key_id != old.key_id
    cas = [*world.operators.values(), new]
    # After rotation the operator's single CRL is signed by the new key and covers both.
    crls = [
        world.crl(world.root),
        *(world.crl(ca) for name, ca in world.operators.items() if name != "ctcc"),
        world.crl(new),
    ]
    checker = Verifier(world.bundle(operator_cas=cas, crls=crls))
    assert checker.verify(before, card_type="personal", province="11").authorized
    assert checker.verify(after, card_type="personal", province="11").authorized
    revoking = [
        *crls[:-1],
        world.crl(new, [Revocation(before.serial_number, world.now - dt.timedelta(hours=1))]),
    ]
    checker.update(world.bundle(operator_cas=cas, crls=revoking))
    assert checker.verify(before).reason is Reason.REVOKED
    assert checker.verify(after).authorized
    # A marketplace whose bundle predates the rotation does not know the new key yet.
    assert Verifier(world.bundle()).verify(after).reason is Reason.UNKNOWN_STORE


def test_update_reuses_verified_crls_and_drops_old_ones(world: World) -> None:
    bundle = world.bundle()
    checker = Verifier(bundle)
    cached = dict(checker._snapshot.crl_cache)
    assert len(cached) == len(bundle.crls)
    checker.update(bundle)
    assert all(checker._snapshot.crl_cache[key] is index for key, index in cached.items())
    # A refresh with one new CRL keeps the other verified ones and forgets the replaced one.
    fresh = world.crl(world.operators["cmcc"])
    refreshed = bundle.with_crls([*bundle.crls[:1], fresh, *bundle.crls[2:]])
    assert bundle.crls[1].issuer == fresh.issuer
    checker.update(refreshed)
    kept = checker._snapshot.crl_cache
    assert len(kept) == len(bundle.crls)
    assert sum(1 for key in kept if key in cached) == len(bundle.crls) - 1
    assert checker.verify(world.issue()).authorized


def test_bad_inputs(world: World, verifier: Verifier) -> None:
    with pytest.raises(CertificateFormatError):
        verifier.verify(b"\x30\x03\x02\x01\x01")
    with pytest.raises(CertificateFormatError):
        verifier.verify(b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n")
    with pytest.raises(InvalidAuthorizationError):
        verifier.verify(world.issue(), province="99")
    with pytest.raises(InvalidAuthorizationError):
        verifier.verify(world.issue(), card_type="prepaid")
