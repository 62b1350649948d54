"""Each verdict reason through VerifySeller from a real certificate made for it, the sweep's
agreement with it, and changes made by another process (revocation, renewal, issuance to an
unknown shop, an operator CA revoked) in force within the staleness bound (SQLite, PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from registry.authz import authorities
from registry.pki.authority import CertificateAuthority, create_operator_ca
from registry.pki.authorization import StoreAuthorization
from registry.pki.keys import generate_private_key
from registry.pki.oids import STORE_AUTHORIZATION_EKU
from registry.pki.scope import Scope
from services.domain.pseudonym import Pseudonymizer
from services.features.seller_checks import STALENESS_BOUND
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import registry_pb2 as rpb
from services.runtime.ca_material import key_directory
from services.storage.database import Database, DatabaseConfig
from tests.support.registry import (
    CREDIT_CODES,
    RegistryHarness,
    authorize,
    bulk_insert,
    registry_server,
    verify_shop,
)
from tests.unit.registry.pki.factory import forge_certificate

DER = serialization.Encoding.DER
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def server(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> Iterator[RegistryHarness]:
    with registry_server(db, pki_dir, pseudonymizer, tmp_path / "data") as harness:
        yield harness


def operator_ca(
    server: RegistryHarness, db: Database, operator: str = "cmcc"
) -> CertificateAuthority:
    keys = authorities.OperatorKeys(key_directory(server.data_dir).require_passphrase())
    record = db.read(lambda conn: authorities.current_ca(conn, operator))
    assert record is not None
    return db.read(lambda conn: keys.authority(conn, record.id))


def fields(shop_id: str, operator: str = "cmcc") -> StoreAuthorization:
    return StoreAuthorization(
        operator=operator,
        marketplace="demo",
        shop_id=shop_id,
        legal_name="Made For A Verdict Co.",
        credit_code=CREDIT_CODES[0],
        scope=Scope.of(["personal"], ["35"]),
    )


def made(
    ca: CertificateAuthority,
    shop_id: str,
    *,
    start: dt.timedelta = dt.timedelta(days=-1),
    length: dt.timedelta = dt.timedelta(days=365),
    **knobs: object,
) -> x509.Certificate:
    return forge_certificate(
        issuer=ca,
        authorization=fields(shop_id, ca.operator or "cmcc"),
        subject_key=generate_private_key().public_key(),
        not_before=NOW + start,
        not_after=NOW + start + length,
        **knobs,  # type: ignore[arg-type]
    )


def by_certificate(
    server: RegistryHarness, certificate: x509.Certificate, **asked: object
) -> rpb.SellerVerdict:
    request = rpb.VerifySellerRequest(certificate=certificate.public_bytes(DER), **asked)  # type: ignore[arg-type]
    return server.registry_service("marketplace-demo").VerifySeller(request).verdict


def record(db: Database, ca_id: int, certificate: x509.Certificate) -> None:
    """Store a made certificate as the shop's current authorization (as issuance would)."""
    a = fields(
        certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value.split(":")[1]
    )  # type: ignore[union-attr]
    bulk_insert(
        db,
        "authz_authorizations",
        [
            {
                "serial_hex": format(certificate.serial_number, "x"),
                "operator": a.operator,
                "ca_id": ca_id,
                "application_id": None,
                "marketplace": a.marketplace,
                "shop_id": a.shop_id,
                "legal_name": a.legal_name,
                "credit_code": a.credit_code,
                "card_types": "personal",
                "provinces": "35",
                "not_before": certificate.not_valid_before_utc,
                "not_after": certificate.not_valid_after_utc,
                "issued_at": NOW,
                "certificate": certificate.public_bytes(DER),
                "status": "active",
                "is_current": True,
            }
        ],
    )


def test_each_reason_from_a_certificate_made_for_it(server: RegistryHarness, db: Database) -> None:
    ca = operator_ca(server, db)
    stranger = create_operator_ca(server.root(), "cmcc", now=NOW - dt.timedelta(days=30))
    authorized = made(ca, "ok")
    cases = {
        "AUTHORIZED": by_certificate(
            server, authorized, card_type=cpb.CARD_TYPE_PERSONAL, province="35"
        ),
        "EXPIRED": by_certificate(server, made(ca, "old", start=dt.timedelta(days=-400))),
        "NOT_YET_VALID": by_certificate(server, made(ca, "new", start=dt.timedelta(days=2))),
        "UNKNOWN_STORE": by_certificate(
            server, made(ca, "tls", ekus=[ExtendedKeyUsageOID.SERVER_AUTH, STORE_AUTHORIZATION_EKU])
        ),
        "INVALID_SIGNATURE": by_certificate(
            server, made(ca, "forged", signing_key=generate_private_key())
        ),
        "OUT_OF_SCOPE": by_certificate(server, authorized, card_type=cpb.CARD_TYPE_INDUSTRY),
    }
    # A CA the regulator never recorded (same name, other key): nobody this registry knows.
    cases["UNKNOWN_STORE (foreign CA)"] = by_certificate(server, made(stranger, "x"))
    for name, verdict in cases.items():
        expected = name.split(" ")[0]
        assert rpb.VerdictReason.Name(verdict.reason) == f"VERDICT_REASON_{expected}", (
            name,
            verdict.detail,
        )
    assert (
        cases["AUTHORIZED"].authorized
        and cases["AUTHORIZED"].legal_name == "Made For A Verdict Co."
    )
    province = by_certificate(server, authorized, province="11")
    assert province.reason == rpb.VERDICT_REASON_OUT_OF_SCOPE


def test_revoked_store_and_revoked_operator_ca(server: RegistryHarness, db: Database) -> None:
    store = authorize(server, shop_id="s-rev")
    vno = authorize(server, operator="vno1", shop_id="s-vno")
    server.registry_service("operator-cmcc").RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(
            serial=store.serial, reason=rpb.REVOCATION_REASON_KEY_COMPROMISE
        )
    )
    cert = x509.load_der_x509_certificate(store.certificate)
    verdict = by_certificate(server, cert)
    assert verdict.reason == rpb.VERDICT_REASON_REVOKED
    assert verdict.revocation_reason == rpb.REVOCATION_REASON_KEY_COMPROMISE
    assert verify_shop(server, "s-rev").reason == rpb.VERDICT_REASON_REVOKED
    root = server.root()
    db.write(lambda conn: authorities.revoke_operator_ca(conn, root, "vno1"))
    for verdict in (
        verify_shop(server, "s-vno"),
        by_certificate(server, x509.load_der_x509_certificate(vno.certificate)),
    ):
        assert verdict.reason == rpb.VERDICT_REASON_OPERATOR_REVOKED
    assert verify_shop(server, "nobody").reason == rpb.VERDICT_REASON_UNKNOWN_STORE


def test_the_sweep_gives_the_same_reasons_as_verify_seller(
    server: RegistryHarness, db: Database
) -> None:
    ca = operator_ca(server, db)
    ca_id = db.read(lambda conn: authorities.current_ca(conn, "cmcc")).id  # type: ignore[union-attr]
    record(db, ca_id, made(ca, "expired", start=dt.timedelta(days=-400)))
    record(db, ca_id, made(ca, "early", start=dt.timedelta(days=3)))
    ok = authorize(server, shop_id="fine")
    revoked = authorize(server, shop_id="revoked")
    authorize(server, operator="vno2", shop_id="vno-shop")
    server.registry_service("operator-cmcc").RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(serial=revoked.serial)
    )
    db.write(lambda conn: authorities.revoke_operator_ca(conn, server.root(), "vno2"))
    shops = ["fine", "revoked", "vno-shop", "expired", "early", "missing"]
    for card_type, province in (
        (cpb.CARD_TYPE_UNSPECIFIED, ""),
        (cpb.CARD_TYPE_INDUSTRY, "35"),
        (cpb.CARD_TYPE_PERSONAL, "44"),
    ):
        single = [
            verify_shop(server, shop, card_type=card_type, province=province).reason
            for shop in shops
        ]
        responses = list(
            server.registry_service("marketplace-demo").VerifySellers(
                iter(
                    [
                        rpb.VerifySellersRequest(
                            marketplace="demo",
                            shop_ids=shops,
                            card_type=card_type,
                            province=province,
                        )
                    ]
                )
            )
        )
        swept = [v.reason for v in responses[0].verdicts]
        assert swept == single
        assert [v.shop.shop_id for v in responses[0].verdicts] == shops
    assert single[0] == rpb.VERDICT_REASON_OUT_OF_SCOPE  # personal in 44: scope is 11 and 35
    stream = server.registry_service("marketplace-demo").VerifySellers(
        iter([rpb.VerifySellersRequest(marketplace="demo", shop_ids=shops)])
    )
    first = next(iter(stream)).verdicts
    assert [rpb.VerdictReason.Name(v.reason).removeprefix("VERDICT_REASON_") for v in first] == [
        "AUTHORIZED", "REVOKED", "OPERATOR_REVOKED", "EXPIRED", "NOT_YET_VALID", "UNKNOWN_STORE",
    ]  # fmt: skip
    assert first[0].serial == ok.serial and first[1].revoked_at.seconds > 0


def test_changes_in_another_process_are_in_force_within_the_staleness_bound(
    server: RegistryHarness,
    database_url: str,
    pki_dir: Path,
    pseudonymizer: Pseudonymizer,
) -> None:
    auth = authorize(server, shop_id="shared")
    renewed = authorize(server, shop_id="renewed")
    # A second server with its own engine, caches and verifier: what another process holds.
    other_db = Database(DatabaseConfig(database_url))
    try:
        with registry_server(other_db, pki_dir, pseudonymizer, server.data_dir) as other:
            assert other.app is not None and other.app.seller_checks is not None
            watch = other.app.seller_checks.watch
            cert = x509.load_der_x509_certificate(auth.certificate)
            assert verify_shop(other, "shared").reason == rpb.VERDICT_REASON_AUTHORIZED
            assert by_certificate(other, cert).reason == rpb.VERDICT_REASON_AUTHORIZED
            assert verify_shop(other, "renewed").serial == renewed.serial
            # An unknown shop's answer is cached too, and bounded by the same poll.
            assert verify_shop(other, "newcomer").reason == rpb.VERDICT_REASON_UNKNOWN_STORE
            assert watch.fresh_generation() is not None  # the other answers from memory
            # One change at a time, each alone in moving the generation, then the bound.
            issued = authorize(server, shop_id="newcomer")
            time.sleep(STALENESS_BOUND)  # every verification starting now sees the commit
            newcomer = verify_shop(other, "newcomer")
            assert newcomer.reason == rpb.VERDICT_REASON_AUTHORIZED
            assert newcomer.serial == issued.serial
            desk = server.registry_service("operator-cmcc")
            desk.RevokeAuthorization(rpb.RevokeAuthorizationRequest(serial=auth.serial))
            time.sleep(STALENESS_BOUND)
            assert verify_shop(other, "shared").reason == rpb.VERDICT_REASON_REVOKED
            assert by_certificate(other, cert).reason == rpb.VERDICT_REASON_REVOKED
            new = desk.RenewAuthorization(rpb.RenewAuthorizationRequest(serial=renewed.serial))
            time.sleep(STALENESS_BOUND)
            after_renewal = verify_shop(other, "renewed")
            assert after_renewal.reason == rpb.VERDICT_REASON_AUTHORIZED
            assert after_renewal.serial == new.authorization.serial
    finally:
        other_db.dispose()


def test_an_operator_ca_revoked_elsewhere_is_in_force_within_the_bound(
    server: RegistryHarness, db: Database
) -> None:
    """A CA change made outside the server (``realname ca revoke-operator``) reaches it by poll."""
    authorize(server, shop_id="under-ca")
    assert verify_shop(server, "under-ca").reason == rpb.VERDICT_REASON_AUTHORIZED
    root = server.root()
    db.write(lambda conn: authorities.revoke_operator_ca(conn, root, "cmcc"))
    time.sleep(STALENESS_BOUND)
    assert verify_shop(server, "under-ca").reason == rpb.VERDICT_REASON_OPERATOR_REVOKED
