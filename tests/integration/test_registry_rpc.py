"""RegistryService over real mTLS, on SQLite and PostgreSQL: workflow, access, verdicts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from services.domain.pseudonym import Pseudonymizer
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import registry_pb2 as rpb
from services.storage.database import Database
from tests.support.registry import (
    RegistryHarness,
    application,
    authorize,
    registry_server,
    verify_shop,
)
from tests.support.rpc import rich_error


@pytest.fixture
def server(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> Iterator[RegistryHarness]:
    with registry_server(db, pki_dir, pseudonymizer, tmp_path / "data") as harness:
        yield harness


def test_application_to_verified_seller(server: RegistryHarness) -> None:
    auth = authorize(server, shop_id="shop-1")
    assert auth.status == rpb.AUTHORIZATION_STATUS_ACTIVE
    assert auth.operator == "cmcc" and auth.store.shop.shop_id == "shop-1"
    verdict = verify_shop(server, "shop-1", card_type=cpb.CARD_TYPE_PERSONAL, province="35")
    assert verdict.reason == rpb.VERDICT_REASON_AUTHORIZED and verdict.authorized
    assert verdict.serial == auth.serial and verdict.operator == "cmcc"
    assert verdict.legal_name.startswith("Fuzhou")


def _code_reason(exc: pytest.ExceptionInfo[grpc.RpcError]) -> tuple[grpc.StatusCode, str | None]:
    err = rich_error(exc.value)
    return err.code, err.reason


def test_applications_are_filed_by_the_marketplace_or_the_operator_desk(
    server: RegistryHarness,
) -> None:
    by_desk = server.registry_service("operator-cucc").SubmitApplication(
        application(operator="cucc", marketplace="taobao", shop_id="t-1")
    )
    assert by_desk.application.status == rpb.APPLICATION_STATUS_SUBMITTED
    assert by_desk.application.submitted_by == "operator-cucc"
    # The desk sees the contact; the marketplace that filed an application sees its status only.
    assert by_desk.application.qualifications.contact.name == "Lin Wei"
    filed = server.registry_service("marketplace-demo").SubmitApplication(application())
    seen = server.registry_service("marketplace-demo").GetApplication(
        rpb.GetApplicationRequest(application_id=filed.application.application_id)
    )
    assert seen.application.status == rpb.APPLICATION_STATUS_SUBMITTED
    assert seen.application.qualifications.contact.name == ""
    refusals = [
        ("marketplace-demo", application(marketplace="taobao"), "NOT_YOUR_MARKETPLACE"),
        ("operator-cmcc", application(operator="cucc"), "NOT_YOUR_AUTHORIZATION"),
        ("courier-demo", application(), "ROLE_NOT_ALLOWED"),
    ]
    for principal, request, reason in refusals:
        with pytest.raises(grpc.RpcError) as info:
            server.registry_service(principal).SubmitApplication(request)
        assert _code_reason(info) == (grpc.StatusCode.PERMISSION_DENIED, reason)


def test_a_csr_whose_signature_does_not_verify_is_refused(server: RegistryHarness) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = bytearray(
        x509.load_pem_x509_csr(application().csr).public_bytes(serialization.Encoding.DER)
    )
    der[-5] ^= 0x01  # inside the signature: the request still parses, the signature fails
    with pytest.raises(grpc.RpcError) as info:
        server.registry_service("marketplace-demo").SubmitApplication(application(csr=bytes(der)))
    err = rich_error(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CSR_SIGNATURE_INVALID")
    assert [f for f, _ in err.field_violations] == ["csr"]
    listed = server.registry_service("operator-cmcc").ListApplications(
        rpb.ListApplicationsRequest()
    )
    assert list(listed.applications) == []


def test_bad_fields_are_all_reported(server: RegistryHarness) -> None:
    request = application(shop_id="no spaces", credit_code="91350100M000100Y44", provinces=["99"])
    request.qualifications.ClearField("protection_assessment_level")
    with pytest.raises(grpc.RpcError) as info:
        server.registry_service("marketplace-demo").SubmitApplication(request)
    err = rich_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in err.field_violations} == {
        "store.shop_id",
        "store.credit_code",
        "scope",
        "qualifications.information_protection",
    }


def test_review_records_the_decision_and_a_denied_application_is_never_issued(
    server: RegistryHarness,
) -> None:
    filed = server.registry_service("marketplace-demo").SubmitApplication(application())
    app_id = filed.application.application_id
    desk = server.registry_service("operator-cmcc")
    with pytest.raises(grpc.RpcError) as info:
        desk.IssueAuthorization(rpb.IssueAuthorizationRequest(application_id=app_id))
    assert _code_reason(info) == (grpc.StatusCode.FAILED_PRECONDITION, "APPLICATION_NOT_APPROVED")
    with pytest.raises(grpc.RpcError) as info:
        server.registry_service("operator-cucc").ReviewApplication(
            rpb.ReviewApplicationRequest(
                application_id=app_id,
                decision=rpb.REVIEW_DECISION_APPROVE,
                reason="x",
                assessment="x",
            )
        )
    assert _code_reason(info) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOUR_AUTHORIZATION")
    denied = desk.ReviewApplication(
        rpb.ReviewApplicationRequest(
            application_id=app_id,
            decision=rpb.REVIEW_DECISION_DENY,
            reason="no information-protection assessment on file",
            assessment="graded protection report missing",
        )
    ).application
    assert denied.status == rpb.APPLICATION_STATUS_DENIED
    assert denied.review.decision == rpb.REVIEW_DECISION_DENY
    assert denied.review.assessment == "graded protection report missing"
    assert denied.review.reviewed_by == "operator-cmcc"
    with pytest.raises(grpc.RpcError) as info:
        desk.IssueAuthorization(rpb.IssueAuthorizationRequest(application_id=app_id))
    assert _code_reason(info) == (grpc.StatusCode.FAILED_PRECONDITION, "APPLICATION_NOT_APPROVED")


def test_one_operator_cannot_revoke_or_renew_anothers_store(server: RegistryHarness) -> None:
    auth = authorize(server, shop_id="shop-7")
    for call, request in (
        ("RevokeAuthorization", rpb.RevokeAuthorizationRequest(serial=auth.serial)),
        ("RenewAuthorization", rpb.RenewAuthorizationRequest(serial=auth.serial)),
    ):
        with pytest.raises(grpc.RpcError) as info:
            getattr(server.registry_service("operator-cucc"), call)(request)
        assert _code_reason(info) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOUR_AUTHORIZATION")
    with pytest.raises(grpc.RpcError) as info:
        server.registry_service("marketplace-demo").RevokeAuthorization(
            rpb.RevokeAuthorizationRequest(serial=auth.serial)
        )
    assert _code_reason(info) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
    assert verify_shop(server, "shop-7").reason == rpb.VERDICT_REASON_AUTHORIZED


def test_renewal_issues_a_new_serial_and_supersedes_the_old(server: RegistryHarness) -> None:
    first = authorize(server, shop_id="shop-r")
    desk = server.registry_service("operator-cmcc")
    renewed = desk.RenewAuthorization(
        rpb.RenewAuthorizationRequest(serial=first.serial, validity_days=30)
    )
    new, old = renewed.authorization, renewed.previous
    assert new.serial != first.serial and new.renewed_from == first.serial
    assert old.superseded_by == new.serial and old.status == rpb.AUTHORIZATION_STATUS_REVOKED
    assert old.revocation_reason == rpb.REVOCATION_REASON_SUPERSEDED
    assert (new.not_after.seconds - new.not_before.seconds) == 30 * 86400
    # Same key (the application's CSR), same store and scope.
    from cryptography import x509

    keys = {
        x509.load_der_x509_certificate(a.certificate).public_key().public_numbers()
        for a in (first, new)
    }
    assert len(keys) == 1
    verdict = verify_shop(server, "shop-r")
    assert (verdict.reason, verdict.serial) == (rpb.VERDICT_REASON_AUTHORIZED, new.serial)
    cert = rpb.VerifySellerRequest(certificate=first.certificate)
    old_verdict = server.registry_service("courier-demo").VerifySeller(cert).verdict
    assert old_verdict.reason == rpb.VERDICT_REASON_REVOKED
    with pytest.raises(grpc.RpcError) as info:
        desk.RenewAuthorization(rpb.RenewAuthorizationRequest(serial=first.serial))
    assert _code_reason(info) == (grpc.StatusCode.FAILED_PRECONDITION, "AUTHORIZATION_REVOKED")
    # A new key: the store sends a new CSR.
    from tests.support.registry import csr_for, store_key

    rekeyed = desk.RenewAuthorization(
        rpb.RenewAuthorizationRequest(serial=new.serial, csr=csr_for(store_key()))
    ).authorization
    rekeyed_key = x509.load_der_x509_certificate(rekeyed.certificate).public_key()
    assert rekeyed_key.public_numbers() not in keys


def test_issuing_twice_or_for_an_already_authorized_store_is_refused(
    server: RegistryHarness,
) -> None:
    auth = authorize(server, shop_id="shop-d")
    desk = server.registry_service("operator-cmcc")
    with pytest.raises(grpc.RpcError) as info:
        desk.IssueAuthorization(rpb.IssueAuthorizationRequest(application_id=auth.application_id))
    assert _code_reason(info) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "APPLICATION_ALREADY_ISSUED",
    )
    with pytest.raises(grpc.RpcError) as info:
        authorize(server, shop_id="shop-d")
    assert _code_reason(info) == (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_AUTHORIZED")
    # Another operator may authorize the same shop: the shop verifies if either authorizes it.
    other = authorize(server, operator="cucc", shop_id="shop-d")
    assert other.operator == "cucc"
    desk.RevokeAuthorization(rpb.RevokeAuthorizationRequest(serial=auth.serial))
    verdict = verify_shop(server, "shop-d")
    assert (verdict.reason, verdict.operator) == (rpb.VERDICT_REASON_AUTHORIZED, "cucc")
    only_cmcc = verify_shop(server, "shop-d", operator="cmcc")
    assert only_cmcc.reason == rpb.VERDICT_REASON_REVOKED


def test_revocation_reasons_and_listing(server: RegistryHarness) -> None:
    auth = authorize(server, shop_id="shop-l")
    desk = server.registry_service("operator-cmcc")
    with pytest.raises(grpc.RpcError) as info:
        desk.RevokeAuthorization(
            rpb.RevokeAuthorizationRequest(
                serial=auth.serial, reason=rpb.REVOCATION_REASON_CERTIFICATE_HOLD
            )
        )
    assert _code_reason(info) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_REVOCATION_REASON")
    revoked = desk.RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(
            serial=auth.serial.upper(), reason=rpb.REVOCATION_REASON_KEY_COMPROMISE
        )
    ).authorization
    assert revoked.status == rpb.AUTHORIZATION_STATUS_REVOKED
    assert revoked.revocation_reason == rpb.REVOCATION_REASON_KEY_COMPROMISE
    with pytest.raises(grpc.RpcError) as info:
        desk.RevokeAuthorization(rpb.RevokeAuthorizationRequest(serial=auth.serial))
    assert _code_reason(info) == (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_REVOKED")
    listed = server.registry_service("regulator").ListAuthorizations(
        rpb.ListAuthorizationsRequest(marketplace="demo", shop_id="shop-l")
    )
    assert [a.serial for a in listed.authorizations] == [auth.serial]
    got = server.registry_service("courier-demo").GetAuthorization(
        rpb.GetAuthorizationRequest(serial=auth.serial)
    )
    assert got.authorization.status == rpb.AUTHORIZATION_STATUS_REVOKED
    with pytest.raises(grpc.RpcError) as info:
        server.registry_service("citizen-portal").GetAuthorization(
            rpb.GetAuthorizationRequest(serial=auth.serial)
        )
    assert _code_reason(info) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")


def test_every_event_is_appended_to_the_log_in_its_transaction(
    server: RegistryHarness, db: Database
) -> None:
    from registry.log.entries import EntryKind, decode_entry
    from registry.log.storage import log_pending

    first = authorize(server, shop_id="shop-log")
    desk = server.registry_service("operator-cmcc")
    renewed = desk.RenewAuthorization(rpb.RenewAuthorizationRequest(serial=first.serial))
    desk.RevokeAuthorization(rpb.RevokeAuthorizationRequest(serial=renewed.authorization.serial))
    query = log_pending.select().order_by(log_pending.c.id)
    rows = db.read(lambda conn: conn.execute(query).all())
    kinds = [decode_entry(bytes(row.entry)).kind for row in rows]
    # dev-init's five operator CAs, issuance, renewal (+ superseded revocation), revocation.
    assert kinds == [EntryKind.OPERATOR_CA_ADDED] * 5 + [
        EntryKind.ISSUANCE,
        EntryKind.RENEWAL,
        EntryKind.REVOCATION,
        EntryKind.REVOCATION,
    ]
    issuance = decode_entry(bytes(rows[5].entry))
    assert issuance.certificate == first.certificate  # type: ignore[union-attr]


def test_out_of_range_ids_and_validity_are_refused_not_internal(server: RegistryHarness) -> None:
    # Found by tests/system/test_hostile_input.py: a uint64 id past SQLite's INTEGER and an
    # int32 validity past timedelta's range both used to end in INTERNAL.
    stub = server.registry_service("operator-cmcc")
    huge_id = 2**64 - 2
    for call, request, code in (
        (stub.GetApplication, rpb.GetApplicationRequest(application_id=huge_id), "NOT_FOUND"),
        (
            stub.IssueAuthorization,
            rpb.IssueAuthorizationRequest(application_id=huge_id),
            "NOT_FOUND",
        ),
        (
            stub.IssueAuthorization,
            rpb.IssueAuthorizationRequest(application_id=1, validity_days=2**31 - 1),
            "INVALID_ARGUMENT",
        ),
        (
            stub.RenewAuthorization,
            rpb.RenewAuthorizationRequest(serial="01", validity_days=2**32 - 1),
            "INVALID_ARGUMENT",
        ),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call(request)
        assert rich_error(info.value).code == grpc.StatusCode[code], request
    listed = stub.ListApplications(rpb.ListApplicationsRequest(after_application_id=huge_id))
    assert list(listed.applications) == []


def test_nul_in_lookups_is_invalid_argument_on_every_database(server: RegistryHarness) -> None:
    # Found by tests/system/test_hostile_input.py: PostgreSQL text cannot hold NUL, so these
    # lookups failed inside the query with INTERNAL.
    stub = server.registry_service("marketplace-demo")
    shop = rpb.Shop(marketplace="demo", shop_id="shop\x00")
    calls = (
        lambda: stub.ListAuthorizations(rpb.ListAuthorizationsRequest(shop_id="\x00")),
        lambda: stub.VerifySeller(rpb.VerifySellerRequest(shop=shop)),
        lambda: list(
            stub.VerifySellers(iter([rpb.VerifySellersRequest(marketplace="d", shop_ids=["\x00"])]))
        ),
    )
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert rich_error(info.value).code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_compromised_key_or_one_bound_to_a_live_authorization_is_not_certified_again(
    server: RegistryHarness,
) -> None:
    from tests.support.registry import csr_for, store_key

    market = server.registry_service("marketplace-demo")
    desk = server.registry_service("operator-cmcc")

    def applications(operator: str) -> int:
        listed = server.registry_service(f"operator-{operator}").ListApplications(
            rpb.ListApplicationsRequest()
        )
        return len(listed.applications)

    def refused_at_submit(request: rpb.SubmitApplicationRequest, reason: str) -> None:
        before = applications(request.operator)
        with pytest.raises(grpc.RpcError) as info:
            server.registry_service(f"operator-{request.operator}").SubmitApplication(request)
        err = rich_error(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
        assert [f for f, _ in err.field_violations] == ["csr"]
        assert applications(request.operator) == before

    key = store_key()
    first = authorize(server, shop_id="k-1", csr=csr_for(key))
    # The key is bound to a live authorization: not for another shop, nor another operator.
    refused_at_submit(application(shop_id="k-2", csr=csr_for(key)), "KEY_IN_USE")
    refused_at_submit(application(operator="cucc", shop_id="k-1", csr=csr_for(key)), "KEY_IN_USE")
    # A renewal of that authorization keeps its own key.
    renewed = desk.RenewAuthorization(rpb.RenewAuthorizationRequest(serial=first.serial))
    assert renewed.authorization.certificate != first.certificate
    # Checked again at issuance: an application filed before its key was certified elsewhere.
    shared = store_key()
    filed = market.SubmitApplication(application(shop_id="k-3", csr=csr_for(shared)))
    authorize(server, shop_id="k-4", csr=csr_for(shared))
    app_id = filed.application.application_id
    desk.ReviewApplication(
        rpb.ReviewApplicationRequest(
            application_id=app_id,
            decision=rpb.REVIEW_DECISION_APPROVE,
            reason="qualifications complete",
            assessment="report checked",
        )
    )
    with pytest.raises(grpc.RpcError) as info:
        desk.IssueAuthorization(rpb.IssueAuthorizationRequest(application_id=app_id))
    assert _code_reason(info) == (grpc.StatusCode.FAILED_PRECONDITION, "KEY_IN_USE")
    # Revoked for key compromise: never certified again, for any shop, operator or renewal.
    desk.RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(
            serial=renewed.authorization.serial, reason=rpb.REVOCATION_REASON_KEY_COMPROMISE
        )
    )
    refused_at_submit(application(shop_id="k-1", csr=csr_for(key)), "KEY_COMPROMISED")
    refused_at_submit(application(shop_id="k-5", csr=csr_for(key)), "KEY_COMPROMISED")
    refused_at_submit(
        application(operator="cucc", shop_id="k-5", csr=csr_for(key)), "KEY_COMPROMISED"
    )
    other = authorize(server, shop_id="k-6")
    with pytest.raises(grpc.RpcError) as info:
        desk.RenewAuthorization(
            rpb.RenewAuthorizationRequest(serial=other.serial, csr=csr_for(key))
        )
    assert _code_reason(info) == (grpc.StatusCode.FAILED_PRECONDITION, "KEY_COMPROMISED")
    # The store applies again with a new key.
    again = authorize(server, shop_id="k-1")
    assert again.status == rpb.AUTHORIZATION_STATUS_ACTIVE
    # A key whose authorization ended for another reason is no longer bound.
    ceased = store_key()
    gone = authorize(server, shop_id="k-7", csr=csr_for(ceased))
    desk.RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(
            serial=gone.serial, reason=rpb.REVOCATION_REASON_CESSATION_OF_OPERATION
        )
    )
    assert authorize(server, shop_id="k-8", csr=csr_for(ceased)).status == (
        rpb.AUTHORIZATION_STATUS_ACTIVE
    )


def test_an_application_to_an_operator_the_registry_does_not_know_is_refused(
    server: RegistryHarness, db: Database
) -> None:
    from sqlalchemy import func, select

    from registry.authz.tables import authz_applications

    with pytest.raises(grpc.RpcError) as info:
        server.registry_service("marketplace-demo").SubmitApplication(application(operator="zzz"))
    err = rich_error(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_OPERATOR")
    assert [f for f, _ in err.field_violations] == ["operator"]
    # Reported with the request's other problems, and nothing is stored.
    with pytest.raises(grpc.RpcError) as info:
        server.registry_service("marketplace-demo").SubmitApplication(
            application(operator="zzz", shop_id="no spaces")
        )
    err = rich_error(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in err.field_violations} == {"operator", "store.shop_id"}
    count = select(func.count()).select_from(authz_applications)
    assert db.read(lambda conn: conn.execute(count).scalar_one()) == 0
