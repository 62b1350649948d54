"""Offline verification: every verdict reason from real certificates, tokens, logs and bundles."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from registry.delivery.bundle import DeliveryBundle, LoggedCertificate
from registry.delivery.checks import DeliveryVerdict, Reason
from registry.delivery.commitment import Kdf, KdfParams
from registry.delivery.errors import DeliveryBundleError, InvalidDocumentError
from registry.delivery.offline import OfflineVerifier, StalePolicy, prepare, verify_offline
from registry.delivery.token import decode_token, encode_text
from registry.log.entries import Issuance, store_of_certificate
from registry.note import COSIGNATURE_V1_TYPE, generate_signer_key
from registry.pki import verify as pki
from registry.pki.keys import generate_private_key
from registry.pki.revocation import Revocation
from registry.subscribers import DocumentType
from tests.support.tokens import as_version_1, with_params
from tests.unit.registry.delivery.support import (
    COURIER,
    ID_NUMBER,
    Delivery,
    MemoryLog,
    log_signer,
    witness_signer,
)


@pytest.fixture(scope="module")
def bundle(delivery: Delivery) -> DeliveryBundle:
    return delivery.bundle()


def check(
    delivery: Delivery,
    bundle: DeliveryBundle | OfflineVerifier,
    token: bytes | str,
    *,
    number: str = ID_NUMBER,
    doc_type: int = DocumentType.RESIDENT_ID_CARD,
    courier: str = COURIER,
    at: dt.datetime | None = None,
    policy: str = "warn",
) -> DeliveryVerdict:
    return verify_offline(
        token,
        doc_type,
        number,
        bundle,
        courier_company=courier,
        at=at if at is not None else delivery.now,
        stale_policy=policy,  # type: ignore[arg-type]
    )


def copy_log(delivery: Delivery) -> MemoryLog:
    """A log with the same entries and key, which a test may extend without touching others."""
    log = MemoryLog()
    for entry in delivery.log.entries:
        log.append(entry)
    return log


# ---- OK and the recipient ---------------------------------------------------------------------


def test_valid_handover(delivery: Delivery, bundle: DeliveryBundle) -> None:
    token = delivery.token()
    verdict = check(delivery, bundle, token)
    assert verdict.reason is Reason.OK
    assert verdict.ok
    assert not verdict.stale_bundle
    assert verdict.token is not None
    assert verdict.token.encoded == token
    assert verdict.seller is not None
    assert verdict.seller.reason is pki.Reason.AUTHORIZED
    assert verdict.seller.operator == "cmcc"
    assert verdict.checked_at == delivery.now


def test_text_form_and_number_spellings_are_accepted(
    delivery: Delivery, bundle: DeliveryBundle
) -> None:
    text = encode_text(delivery.token())
    assert check(delivery, bundle, text, number="110105 19491231 002x").reason is Reason.OK
    assert check(delivery, bundle, text, number="110105-19491231-002X").reason is Reason.OK


def test_wrong_person(delivery: Delivery, bundle: DeliveryBundle) -> None:
    token = delivery.token()
    verdict = check(delivery, bundle, token, number="110105194912310011")
    assert verdict.reason is Reason.RECIPIENT_MISMATCH
    other_type = check(delivery, bundle, token, doc_type=DocumentType.HK_MACAO_PERMIT)
    assert other_type.reason is Reason.RECIPIENT_MISMATCH


def test_old_and_weak_tokens_of_a_genuine_store_are_refused(
    delivery: Delivery, bundle: DeliveryBundle
) -> None:
    # Each is signed by the good store's key and commits to the presented document, so every
    # other check would pass: only the guessable commitment refuses them.
    genuine = delivery.token()
    key = delivery.store_key
    old = as_version_1(genuine, key, doc_type=1, number=ID_NUMBER)
    verdict = check(delivery, bundle, old)
    assert verdict.reason is Reason.BAD_SIGNATURE
    assert "version 1 is no longer accepted" in verdict.detail
    weak_params = KdfParams(Kdf.ARGON2ID, memory_kib=64, iterations=1, parallelism=1)
    weak = with_params(genuine, key, weak_params, doc_type=1, number=ID_NUMBER)
    verdict = check(delivery, bundle, encode_text(weak))
    assert verdict.reason is Reason.BAD_SIGNATURE
    assert "under the floor" in verdict.detail
    assert check(delivery, bundle, genuine).reason is Reason.OK


def test_passport_recipient(delivery: Delivery, bundle: DeliveryBundle) -> None:
    token = delivery.token(number="G93751046", doc_type=DocumentType.PASSPORT)
    assert check(delivery, bundle, token, number="g9375 1046", doc_type=2).reason is Reason.OK
    assert check(delivery, bundle, token, number="G93751046", doc_type=1).reason is (
        Reason.RECIPIENT_MISMATCH
    )


@pytest.mark.parametrize(("doc_type", "number"), [(0, ID_NUMBER), (9, ID_NUMBER), (1, " -- ")])
def test_a_presented_document_that_is_not_one_is_bad_input(
    delivery: Delivery, bundle: DeliveryBundle, doc_type: int, number: str
) -> None:
    with pytest.raises(InvalidDocumentError):
        check(delivery, bundle, delivery.token(), doc_type=doc_type, number=number)


# ---- the token ------------------------------------------------------------------------------


def test_forged_token_signed_by_another_key(delivery: Delivery, bundle: DeliveryBundle) -> None:
    forged = delivery.token(key=generate_private_key())
    verdict = check(delivery, bundle, forged)
    assert verdict.reason is Reason.BAD_SIGNATURE
    assert verdict.token is not None  # it decoded; the signature is what fails


def test_forgery_naming_a_revoked_store_reads_as_a_forgery(
    delivery: Delivery, bundle: DeliveryBundle
) -> None:
    forged = delivery.token(delivery.revoked, key=generate_private_key())
    assert check(delivery, bundle, forged).reason is Reason.BAD_SIGNATURE


def test_swapped_commitment_is_a_bad_signature(delivery: Delivery, bundle: DeliveryBundle) -> None:
    genuine = delivery.token()
    accomplice = delivery.fields(number="110105194912310011")
    body = genuine[:-64]
    swapped = body[:-48] + accomplice.salt + accomplice.commitment + genuine[-64:]
    verdict = check(delivery, bundle, swapped, number="110105194912310011")
    assert verdict.reason is Reason.BAD_SIGNATURE


def test_every_single_bit_flip_is_refused(delivery: Delivery, bundle: DeliveryBundle) -> None:
    token = delivery.token()
    decoded = decode_token(token)
    operator_at = token.index(b"\x04cmcc")
    serial_end = operator_at + 5 + 1 + token[operator_at + 5]
    seen: set[Reason] = set()
    for position in range(len(token)):
        tampered = bytearray(token)
        tampered[position] ^= 0x01
        reason = check(delivery, bundle, bytes(tampered)).reason
        seen.add(reason)
        if operator_at <= position < serial_end:
            # The operator and serial pick the certificate that would check the signature: a
            # changed one names a store the bundle does not have (or fails to decode).
            assert reason in (Reason.SELLER_NOT_AUTHORIZED, Reason.BAD_SIGNATURE), position
        else:
            assert reason is Reason.BAD_SIGNATURE, position
    assert seen == {Reason.BAD_SIGNATURE, Reason.SELLER_NOT_AUTHORIZED}
    assert decoded.fields.operator == "cmcc"


def test_garbage_is_a_bad_signature(delivery: Delivery, bundle: DeliveryBundle) -> None:
    for garbage in (b"", b"\x01", b"\x03" + delivery.token()[1:], "RN1:not base45!", "HC1:ABC"):
        verdict = check(delivery, bundle, garbage)
        assert verdict.reason is Reason.BAD_SIGNATURE
        assert verdict.token is None
        assert "does not decode" in verdict.detail


def test_expired_token(delivery: Delivery, bundle: DeliveryBundle) -> None:
    stale = delivery.token(issued_at=delivery.now - dt.timedelta(days=20))
    assert check(delivery, bundle, stale).reason is Reason.TOKEN_EXPIRED
    issued = delivery.now - dt.timedelta(minutes=30)
    token = delivery.token(issued_at=issued, valid_for=dt.timedelta(hours=1))
    expiry = issued + dt.timedelta(hours=1)
    just_before = expiry - dt.timedelta(seconds=1)
    assert check(delivery, bundle, token, at=just_before).reason is Reason.OK
    assert check(delivery, bundle, token, at=expiry).reason is Reason.TOKEN_EXPIRED


def test_wrong_courier_company(delivery: Delivery, bundle: DeliveryBundle) -> None:
    token = delivery.token()
    verdict = check(delivery, bundle, token, courier="zto")
    assert verdict.reason is Reason.WRONG_COURIER
    assert "sf-express" in verdict.detail


# ---- the seller -------------------------------------------------------------------------------


def test_store_revoked(delivery: Delivery, bundle: DeliveryBundle) -> None:
    verdict = check(delivery, bundle, delivery.token(delivery.revoked))
    assert verdict.reason is Reason.SELLER_REVOKED
    assert verdict.seller is not None
    assert verdict.seller.reason is pki.Reason.REVOKED


def test_operator_ca_revoked(delivery: Delivery) -> None:
    cmcc = delivery.pki.operators["cmcc"].certificate
    revoked_ca = Revocation(
        cmcc.serial_number,
        delivery.now - dt.timedelta(days=1),
        x509.ReasonFlags.cessation_of_operation,
    )
    bundle = delivery.bundle(crls=delivery.crls(root_revocations=[revoked_ca]))
    verdict = check(delivery, bundle, delivery.token())
    assert verdict.reason is Reason.SELLER_REVOKED
    assert verdict.seller is not None
    assert verdict.seller.reason is pki.Reason.OPERATOR_REVOKED


def test_store_from_a_ca_not_in_the_bundle(delivery: Delivery, bundle: DeliveryBundle) -> None:
    # Logged, with a valid proof, but issued by an operator CA the regulator's bundle lacks.
    verdict = check(delivery, bundle, delivery.token(delivery.outsider))
    assert verdict.reason is Reason.SELLER_NOT_AUTHORIZED
    assert verdict.seller is not None
    assert verdict.seller.reason is pki.Reason.UNKNOWN_STORE


def test_store_not_in_the_bundle(delivery: Delivery) -> None:
    stores = [s for s in delivery.logged_stores() if s.serial != delivery.good.serial_number]
    verdict = check(delivery, delivery.bundle(stores=stores), delivery.token())
    assert verdict.reason is Reason.SELLER_NOT_AUTHORIZED
    assert "is known" in verdict.detail


def test_store_not_in_the_log(delivery: Delivery, bundle: DeliveryBundle) -> None:
    verdict = check(delivery, bundle, delivery.token(delivery.unlogged))
    assert verdict.reason is Reason.SELLER_NOT_AUTHORIZED
    assert "transparency log" in verdict.detail
    # The certificate itself is a valid authorization: only the log check fails.
    assert verdict.seller is not None
    assert verdict.seller.reason is pki.Reason.AUTHORIZED


@pytest.mark.parametrize("proof_kind", ["missing", "corrupt", "wrong index"])
def test_broken_inclusion_proof(delivery: Delivery, proof_kind: str) -> None:
    index = delivery.indices[delivery.good.serial_number]
    proof = list(delivery.log.tree.inclusion_proof(index))
    if proof_kind == "missing":
        logged = delivery.log.logged(index, proof=[])
    elif proof_kind == "corrupt":
        proof[1] = hashlib.sha256(proof[1]).digest()
        logged = delivery.log.logged(index, proof=proof)
    else:
        logged = LoggedCertificate(delivery.log.entries[index], index + 1, tuple(proof))
    stores = [s for s in delivery.logged_stores() if s.serial != delivery.good.serial_number]
    bundle = delivery.bundle(stores=[*stores, logged])
    verdict = check(delivery, bundle, delivery.token())
    assert verdict.reason is Reason.SELLER_NOT_AUTHORIZED
    assert "inclusion proof" in verdict.detail


def test_log_entry_naming_another_operator(delivery: Delivery) -> None:
    # The log says cucc issued it, the token says cucc, but cmcc's CA signed the certificate.
    der = delivery.good.public_bytes(serialization.Encoding.DER)
    store, serial = store_of_certificate(der, "cucc")
    log = copy_log(delivery)
    index = log.append(Issuance(delivery.issued_at, store, serial, der).encode())
    bundle = delivery.bundle(stores=[log.logged(index)], checkpoint=log.checkpoint())
    verdict = check(delivery, bundle, delivery.token(operator="cucc"))
    assert verdict.reason is Reason.SELLER_NOT_AUTHORIZED
    assert "names operator cucc but cmcc" in verdict.detail


def test_expired_store_certificate(delivery: Delivery) -> None:
    short = delivery.pki.issue(
        "cmcc",
        shop_id="shop-5005",
        now=delivery.now - dt.timedelta(days=10),
        validity=dt.timedelta(days=9),
    )
    log = copy_log(delivery)
    index = log.log_issuance(short, delivery.now - dt.timedelta(days=10))
    bundle = delivery.bundle(stores=[log.logged(index)], checkpoint=log.checkpoint())
    verdict = check(delivery, bundle, delivery.token(short))
    assert verdict.reason is Reason.SELLER_NOT_AUTHORIZED
    assert verdict.seller is not None
    assert verdict.seller.reason is pki.Reason.EXPIRED


# ---- freshness --------------------------------------------------------------------------------


def test_stale_bundle_warns_or_refuses(delivery: Delivery, bundle: DeliveryBundle) -> None:
    token = delivery.token()
    fresh_until = bundle.fresh_until
    assert fresh_until == bundle.issued_at + dt.timedelta(hours=24)
    last = check(delivery, bundle, token, at=fresh_until, policy="refuse")
    assert last.reason is Reason.OK
    assert not last.stale_bundle
    late = fresh_until + dt.timedelta(seconds=1)
    warned = check(delivery, bundle, token, at=late, policy="warn")
    assert warned.reason is Reason.OK
    assert warned.stale_bundle
    refused = check(delivery, bundle, token, at=late, policy=StalePolicy.REFUSE)
    assert refused.reason is Reason.STALE_BUNDLE
    assert refused.stale_bundle
    assert refused.token is None


def test_stale_bundle_still_knows_its_revocations(
    delivery: Delivery, bundle: DeliveryBundle
) -> None:
    late = bundle.fresh_until + dt.timedelta(days=5)
    revoked = check(delivery, bundle, delivery.token(delivery.revoked), at=late)
    assert revoked.reason is Reason.SELLER_REVOKED
    assert revoked.stale_bundle
    good = check(delivery, bundle, delivery.token(), at=late)
    assert good.reason is Reason.OK
    assert good.stale_bundle


def test_stale_bundle_checks_validity_at_the_present(delivery: Delivery) -> None:
    # Valid at the CRLs' horizon, expired by the time of the (late) check.
    ending = delivery.pki.issue(
        "cmcc",
        shop_id="shop-6006",
        now=delivery.now - dt.timedelta(days=1),
        validity=dt.timedelta(days=3),
    )
    log = copy_log(delivery)
    index = log.log_issuance(ending, delivery.now - dt.timedelta(days=1))
    bundle = delivery.bundle(stores=[log.logged(index)], checkpoint=log.checkpoint())
    token = delivery.token(ending, valid_for=dt.timedelta(days=3))
    token_ok = check(delivery, bundle, token, at=bundle.fresh_until + dt.timedelta(hours=1))
    assert token_ok.reason is Reason.OK
    late = check(delivery, bundle, token, at=delivery.now + dt.timedelta(days=2, hours=1))
    assert late.reason is Reason.SELLER_NOT_AUTHORIZED
    assert "store certificate expired" in late.detail


def test_crls_that_end_early_make_the_bundle_stale_early(delivery: Delivery) -> None:
    crls = delivery.crls(this_update=delivery.now - dt.timedelta(hours=20))
    bundle = delivery.bundle(crls=crls)
    assert bundle.fresh_until == delivery.now + dt.timedelta(hours=4)
    at = delivery.now + dt.timedelta(hours=5)
    assert check(delivery, bundle, delivery.token(), at=at, policy="refuse").reason is (
        Reason.STALE_BUNDLE
    )


def test_a_clock_set_back_cannot_hide_a_revocation(delivery: Delivery) -> None:
    revoked_at = delivery.now - dt.timedelta(hours=2)
    revocation = Revocation(
        delivery.revoked.serial_number, revoked_at, x509.ReasonFlags.privilege_withdrawn
    )
    bundle = delivery.bundle(crls=delivery.crls(store_revocations=[revocation]))
    token = delivery.token(delivery.revoked, issued_at=delivery.now - dt.timedelta(days=2))
    verdict = check(delivery, bundle, token, at=delivery.now - dt.timedelta(days=1))
    assert verdict.reason is Reason.SELLER_REVOKED
    assert verdict.checked_at == bundle.issued_at


# ---- the bundle's anchors -----------------------------------------------------------------


def test_checkpoint_signed_by_another_key_is_refused(delivery: Delivery) -> None:
    other = log_signer(seed=99)
    forged = MemoryLog(signer=other)
    for entry in delivery.log.entries:
        forged.append(entry)
    bundle = delivery.bundle(checkpoint=forged.checkpoint())
    with pytest.raises(DeliveryBundleError, match="checkpoint does not verify"):
        OfflineVerifier(bundle)
    with pytest.raises(DeliveryBundleError):
        check(delivery, bundle, delivery.token())


def test_witness_policy(delivery: Delivery) -> None:
    witness = witness_signer(1)
    other = witness_signer(2)
    keys = (witness.verifier().verifier_key, other.verifier().verifier_key)
    cosigned = delivery.log.checkpoint(witness)
    bundle = delivery.bundle(checkpoint=cosigned, witness_keys=keys, witness_threshold=1)
    verifier = OfflineVerifier(bundle)
    assert [w.name for w in verifier.checkpoint.witnesses] == ["witness.test/w1"]
    assert check(delivery, verifier, delivery.token()).reason is Reason.OK
    two = delivery.bundle(checkpoint=cosigned, witness_keys=keys, witness_threshold=2)
    with pytest.raises(DeliveryBundleError, match="policy requires 2"):
        OfflineVerifier(two)
    bare = delivery.bundle(witness_keys=keys, witness_threshold=1)
    with pytest.raises(DeliveryBundleError):
        OfflineVerifier(bare)


def test_a_second_log_key_is_accepted(delivery: Delivery) -> None:
    _, unrelated = generate_signer_key("realname.test/old-key")
    bundle = dataclasses.replace(delivery.bundle(), log_keys=(unrelated, delivery.log.verifier_key))
    assert check(delivery, bundle, delivery.token()).reason is Reason.OK


def test_pins(delivery: Delivery, bundle: DeliveryBundle) -> None:
    root_der = delivery.pki.root.certificate.public_bytes(serialization.Encoding.DER)
    pinned = OfflineVerifier(
        bundle,
        pinned_root_sha256=hashlib.sha256(root_der).digest(),
        pinned_log_keys=[delivery.log.verifier_key],
    )
    assert check(delivery, pinned, delivery.token()).reason is Reason.OK
    with pytest.raises(DeliveryBundleError, match="pinned regulator root"):
        OfflineVerifier(bundle, pinned_root_sha256=bytes(32))
    _, other_key = generate_signer_key("realname.test/delivery-log")
    with pytest.raises(DeliveryBundleError, match="checkpoint does not verify"):
        OfflineVerifier(bundle, pinned_log_keys=[other_key])


def test_witness_keys_must_be_cosignature_keys_or_plain(delivery: Delivery) -> None:
    _, cosigner_key = generate_signer_key("witness.test/w9", COSIGNATURE_V1_TYPE)
    with pytest.raises(DeliveryBundleError, match="witness policy"):
        delivery.bundle(witness_keys=(cosigner_key,), witness_threshold=2)


def test_bundle_round_trip_gives_the_same_verdicts(
    delivery: Delivery, bundle: DeliveryBundle, tmp_path: object
) -> None:
    loaded = DeliveryBundle.from_json(bundle.to_json())
    assert loaded == bundle
    for certificate, reason in (
        (delivery.good, Reason.OK),
        (delivery.revoked, Reason.SELLER_REVOKED),
        (delivery.unlogged, Reason.SELLER_NOT_AUTHORIZED),
        (delivery.outsider, Reason.SELLER_NOT_AUTHORIZED),
    ):
        assert check(delivery, loaded, delivery.token(certificate)).reason is reason


def test_prepared_verifier_is_cached_per_bundle(delivery: Delivery, bundle: DeliveryBundle) -> None:
    assert prepare(bundle) is prepare(bundle)
    copy = DeliveryBundle.from_json(bundle.to_json())
    assert prepare(copy) is not prepare(bundle)
