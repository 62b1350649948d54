"""The shared, ordered delivery check: online-only reasons, precedence, and offline == online."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from registry.delivery.bundle import DeliveryBundle
from registry.delivery.checks import (
    CHECK_ORDER,
    PresentedCommitment,
    PresentedDocument,
    Reason,
    SellerJudgement,
    ShipmentState,
    check_delivery,
    judge_seller,
)
from registry.delivery.commitment import commit
from registry.delivery.errors import InvalidDocumentError
from registry.delivery.offline import OfflineVerifier, verify_offline
from registry.delivery.token import ShipmentToken, decode_token
from registry.pki import verify as pki
from registry.pki.keys import generate_private_key
from registry.subscribers import DocumentType
from tests.unit.registry.delivery.support import COURIER, ID_NUMBER, Delivery


class OnlineLikeDirectory:
    """What the service will have: certificates by serial, a live verifier, the log's index."""

    def __init__(self, delivery: Delivery, bundle: DeliveryBundle) -> None:
        self._verifier = pki.Verifier(bundle.trust)
        self._certificates = {
            ("cmcc", delivery.good.serial_number): delivery.good,
            ("cmcc", delivery.revoked.serial_number): delivery.revoked,
            ("cmcc", delivery.unlogged.serial_number): delivery.unlogged,
            ("vno2", delivery.outsider.serial_number): delivery.outsider,
        }
        self._logged = {
            c.serial_number for c in (delivery.good, delivery.revoked, delivery.outsider)
        }

    def find(self, operator: str, serial: int) -> x509.Certificate | None:
        return self._certificates.get((operator, serial))

    def judge(
        self, certificate: x509.Certificate, operator: str, at: dt.datetime
    ) -> SellerJudgement:
        verdict = self._verifier.verify(certificate, at=at)
        logged = certificate.serial_number in self._logged
        return judge_seller(
            verdict, token_operator=operator, log_problem=None if logged else "no log entry"
        )


@pytest.fixture(scope="module")
def bundle(delivery: Delivery) -> DeliveryBundle:
    return delivery.bundle()


@pytest.fixture(scope="module")
def online(delivery: Delivery, bundle: DeliveryBundle) -> OnlineLikeDirectory:
    return OnlineLikeDirectory(delivery, bundle)


def test_check_order_names_every_reason_but_stale_bundle() -> None:
    reasons = {reason for _, reason in CHECK_ORDER}
    assert reasons | {Reason.OK, Reason.STALE_BUNDLE} == set(Reason)
    assert [reason for _, reason in CHECK_ORDER][-4:] == [
        Reason.WRONG_COURIER,
        Reason.ALREADY_DELIVERED,
        Reason.LOCKED,
        Reason.RECIPIENT_MISMATCH,
    ]


def test_online_only_reasons_and_their_precedence(
    delivery: Delivery, online: OnlineLikeDirectory
) -> None:
    token = delivery.token()
    seen: list[ShipmentToken] = []

    def run(state: ShipmentState, number: str = ID_NUMBER, courier: str = COURIER) -> Reason:
        def lookup(decoded: ShipmentToken) -> ShipmentState:
            seen.append(decoded)
            return state

        return check_delivery(
            token,
            PresentedDocument(DocumentType.RESIDENT_ID_CARD, number),
            courier_company=courier,
            at=delivery.now,
            sellers=online,
            shipment_state=lookup,
        ).reason

    assert run(ShipmentState()) is Reason.OK
    assert [decoded.encoded for decoded in seen] == [token]
    assert run(ShipmentState(delivered=True)) is Reason.ALREADY_DELIVERED
    assert run(ShipmentState(locked=True)) is Reason.LOCKED
    # A replay after delivery says so even when the shipment had been locked before.
    assert run(ShipmentState(delivered=True, locked=True)) is Reason.ALREADY_DELIVERED
    # A locked shipment does not reveal whether a new document would match.
    assert run(ShipmentState(locked=True), number="110105194912310011") is Reason.LOCKED
    # The state is looked up only for a genuine token and the right courier.
    seen.clear()
    assert run(ShipmentState(delivered=True), courier="zto") is Reason.WRONG_COURIER
    assert seen == []


def test_presented_commitment(delivery: Delivery, online: OnlineLikeDirectory) -> None:
    token = delivery.token()
    shipment = decode_token(token).fields

    def run(presented: PresentedCommitment) -> Reason:
        return check_delivery(
            token, presented, courier_company=COURIER, at=delivery.now, sellers=online
        ).reason

    salt, kdf = shipment.salt, shipment.kdf
    assert run(PresentedCommitment(commit(1, ID_NUMBER, salt, kdf))) is Reason.OK
    assert run(PresentedCommitment(commit(1, "110105194912310011", salt, kdf))) is (
        Reason.RECIPIENT_MISMATCH
    )
    with pytest.raises(InvalidDocumentError):
        PresentedCommitment(b"\x00" * 8)


def test_presented_document_keeps_its_number_out_of_repr() -> None:
    presented = PresentedDocument(DocumentType.PASSPORT, "g93751046")
    assert "9375" not in repr(presented)
    assert presented.normalised == "G93751046"


def test_naive_time_is_refused(delivery: Delivery, online: OnlineLikeDirectory) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check_delivery(
            delivery.token(),
            PresentedDocument(DocumentType.RESIDENT_ID_CARD, ID_NUMBER),
            courier_company=COURIER,
            at=dt.datetime(2026, 1, 1),
            sellers=online,
        )


def test_judge_seller_maps_every_pki_reason(delivery: Delivery) -> None:
    moment = delivery.now
    expected = {
        pki.Reason.AUTHORIZED: None,
        pki.Reason.REVOKED: Reason.SELLER_REVOKED,
        pki.Reason.OPERATOR_REVOKED: Reason.SELLER_REVOKED,
        pki.Reason.EXPIRED: Reason.SELLER_NOT_AUTHORIZED,
        pki.Reason.NOT_YET_VALID: Reason.SELLER_NOT_AUTHORIZED,
        pki.Reason.OUT_OF_SCOPE: Reason.SELLER_NOT_AUTHORIZED,
        pki.Reason.UNKNOWN_STORE: Reason.SELLER_NOT_AUTHORIZED,
        pki.Reason.INVALID_SIGNATURE: Reason.SELLER_NOT_AUTHORIZED,
    }
    assert set(expected) == set(pki.Reason)
    for pki_reason, reason in expected.items():
        verdict = pki.Verdict(pki_reason, "detail", moment, operator="cmcc")
        judged = judge_seller(verdict, token_operator="cmcc", log_problem=None)
        assert judged.reason is reason
        # Revocation outranks a missing log entry; an unauthorized seller stays unauthorized.
        unlogged = judge_seller(verdict, token_operator="cmcc", log_problem="absent")
        assert unlogged.reason is (reason or Reason.SELLER_NOT_AUTHORIZED)
    authorized = pki.Verdict(pki.Reason.AUTHORIZED, "ok", moment, operator="cucc")
    assert judge_seller(authorized, token_operator="cmcc", log_problem=None).reason is (
        Reason.SELLER_NOT_AUTHORIZED
    )


STORES = ("good", "revoked", "unlogged", "outsider", "forged", "unknown")
NUMBERS = (ID_NUMBER, "110105 19491231 002x", "110105194912310011", "G93751046")


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    store=st.sampled_from(STORES),
    committed=st.sampled_from(NUMBERS[::2]),
    committed_type=st.sampled_from([DocumentType.RESIDENT_ID_CARD, DocumentType.PASSPORT]),
    same_document=st.booleans(),
    presented=st.sampled_from(NUMBERS),
    presented_type=st.sampled_from([DocumentType.RESIDENT_ID_CARD, DocumentType.PASSPORT]),
    courier=st.sampled_from([COURIER, "zto"]),
    issued_hours_ago=st.integers(0, 48),
    valid_hours=st.integers(1, 20 * 24),
    check_offset_minutes=st.integers(-60, 23 * 60),
)
@example(
    store="good",
    committed=ID_NUMBER,
    committed_type=DocumentType.RESIDENT_ID_CARD,
    same_document=True,
    presented=ID_NUMBER,
    presented_type=DocumentType.RESIDENT_ID_CARD,
    courier=COURIER,
    issued_hours_ago=2,
    valid_hours=48,
    check_offset_minutes=0,
).via("OK")
@example(
    store="good",
    committed=ID_NUMBER,
    committed_type=DocumentType.RESIDENT_ID_CARD,
    same_document=False,
    presented="G93751046",
    presented_type=DocumentType.PASSPORT,
    courier=COURIER,
    issued_hours_ago=2,
    valid_hours=48,
    check_offset_minutes=0,
).via("RECIPIENT_MISMATCH")
@example(
    store="good",
    committed=ID_NUMBER,
    committed_type=DocumentType.RESIDENT_ID_CARD,
    same_document=True,
    presented=ID_NUMBER,
    presented_type=DocumentType.RESIDENT_ID_CARD,
    courier=COURIER,
    issued_hours_ago=40,
    valid_hours=39,
    check_offset_minutes=0,
).via("TOKEN_EXPIRED")
def test_offline_verdict_equals_online_verdict_when_fresh(
    delivery: Delivery,
    bundle: DeliveryBundle,
    online: OnlineLikeDirectory,
    store: str,
    committed: str,
    committed_type: DocumentType,
    same_document: bool,
    presented: str,
    presented_type: DocumentType,
    courier: str,
    issued_hours_ago: int,
    valid_hours: int,
    check_offset_minutes: int,
) -> None:
    certificates = {
        "good": delivery.good,
        "revoked": delivery.revoked,
        "unlogged": delivery.unlogged,
        "outsider": delivery.outsider,
        "forged": delivery.good,
        "unknown": delivery.pki.issue("cmcc", shop_id="shop-7007"),
    }
    token = delivery.token(
        certificates[store],
        key=generate_private_key() if store == "forged" else None,
        number=committed,
        doc_type=committed_type,
        issued_at=delivery.now - dt.timedelta(hours=issued_hours_ago),
        valid_for=dt.timedelta(hours=valid_hours),
    )
    if same_document:
        presented, presented_type = committed.lower(), committed_type
    at = delivery.now + dt.timedelta(minutes=check_offset_minutes)
    at = max(at, bundle.issued_at)  # the offline verifier's clock floor; online time is real
    assert not bundle.is_stale(at)
    offline = verify_offline(
        token, presented_type, presented, bundle, courier_company=courier, at=at
    )
    online_verdict = check_delivery(
        token,
        PresentedDocument(presented_type, presented),
        courier_company=courier,
        at=at,
        sellers=online,
        shipment_state=lambda _: ShipmentState(),
    )
    event(offline.reason)
    assert offline.reason is online_verdict.reason, (offline.detail, online_verdict.detail)
    assert not offline.stale_bundle


def test_offline_verifier_is_a_seller_directory(delivery: Delivery, bundle: DeliveryBundle) -> None:
    verifier = OfflineVerifier(bundle)
    assert verifier.find("cmcc", delivery.good.serial_number) == delivery.good
    assert verifier.find("cucc", delivery.good.serial_number) is None
    verdict = check_delivery(
        delivery.token(),
        PresentedDocument(DocumentType.RESIDENT_ID_CARD, ID_NUMBER),
        courier_company=COURIER,
        at=delivery.now,
        sellers=verifier,
    )
    assert verdict.reason is Reason.OK
