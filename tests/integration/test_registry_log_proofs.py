"""VerifySeller with include_log_proof: the verdict carries an inclusion proof of the
authorization's issuance (or renewal) entry that verifies offline (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from registry.checkpoint import open_checkpoint
from registry.log.entries import Issuance, Renewal, decode_entry
from registry.merkle import leaf_hash, verify_inclusion
from services.domain.pseudonym import Pseudonymizer
from services.features.transparency import TransparencyLog
from services.proto.realname.v1 import registry_pb2 as rpb
from services.storage.database import Database
from tests.support.logdata import ORIGIN, log_signer
from tests.support.registry import RegistryHarness, authorize, registry_server, verify_shop

SIGNER = log_signer()


@pytest.fixture
def transparency(db: Database) -> TransparencyLog:
    return TransparencyLog.create(db, SIGNER)


@pytest.fixture
def server(
    db: Database,
    pki_dir: Path,
    pseudonymizer: Pseudonymizer,
    tmp_path: Path,
    transparency: TransparencyLog,
) -> Iterator[RegistryHarness]:
    with registry_server(
        db, pki_dir, pseudonymizer, tmp_path / "data", log=transparency
    ) as harness:
        yield harness


def check_offline(inclusion: rpb.LogInclusion, certificate: bytes) -> Issuance | Renewal:
    """What an offline verifier does with a verdict's proof; returns the decoded entry."""
    assert inclusion.status == rpb.LOG_INCLUSION_STATUS_INCLUDED
    opened = open_checkpoint(inclusion.checkpoint, origin=ORIGIN, log_verifier=SIGNER.verifier())
    assert opened.checkpoint.size == inclusion.tree_size
    leaf = leaf_hash(inclusion.entry)
    assert leaf == inclusion.leaf_hash
    verify_inclusion(
        leaf,
        inclusion.leaf_index,
        inclusion.tree_size,
        list(inclusion.hashes),
        opened.checkpoint.root_hash,
    )
    entry = decode_entry(inclusion.entry)
    assert isinstance(entry, Issuance | Renewal)
    assert entry.certificate == certificate
    return entry


def test_shop_verdict_carries_a_proof_that_verifies_offline(
    server: RegistryHarness, transparency: TransparencyLog
) -> None:
    authorize(server, shop_id="proof-1")
    issued = authorize(server, shop_id="proof-2")
    authorize(server, shop_id="proof-3")
    transparency.sequencer.integrate_now()

    verdict = verify_shop(server, "proof-2", include_log_proof=True)

    assert verdict.reason == rpb.VERDICT_REASON_AUTHORIZED
    entry = check_offline(verdict.log_inclusion, issued.certificate)
    assert isinstance(entry, Issuance)
    assert entry.serial == int(issued.serial, 16)
    assert (entry.store.marketplace, entry.store.shop_id) == ("demo", "proof-2")
    assert entry.store.operator == "cmcc"


def test_certificate_verdict_proves_the_presented_pem(
    server: RegistryHarness, transparency: TransparencyLog
) -> None:
    issued = authorize(server, shop_id="proof-pem")
    transparency.sequencer.integrate_now()
    pem = x509.load_der_x509_certificate(issued.certificate).public_bytes(
        serialization.Encoding.PEM
    )
    reply = server.registry_service("courier-demo").VerifySeller(
        rpb.VerifySellerRequest(certificate=pem, include_log_proof=True)
    )
    assert reply.verdict.authorized
    check_offline(reply.verdict.log_inclusion, issued.certificate)


def test_renewed_authorization_proves_its_renewal_entry(
    server: RegistryHarness, transparency: TransparencyLog
) -> None:
    issued = authorize(server, shop_id="proof-renew")
    renewed = (
        server.registry_service("operator-cmcc")
        .RenewAuthorization(rpb.RenewAuthorizationRequest(serial=issued.serial))
        .authorization
    )
    transparency.sequencer.integrate_now()

    verdict = verify_shop(server, "proof-renew", include_log_proof=True)

    assert verdict.serial == renewed.serial
    entry = check_offline(verdict.log_inclusion, renewed.certificate)
    assert isinstance(entry, Renewal)
    assert entry.previous_serial == int(issued.serial, 16)


def test_an_entry_not_yet_sequenced_is_reported_pending(
    server: RegistryHarness, transparency: TransparencyLog
) -> None:
    authorize(server, shop_id="proof-early")
    transparency.sequencer.integrate_now()
    late = authorize(server, shop_id="proof-late")

    pending = verify_shop(server, "proof-late", include_log_proof=True)

    assert pending.reason == rpb.VERDICT_REASON_AUTHORIZED
    assert pending.log_inclusion.status == rpb.LOG_INCLUSION_STATUS_PENDING
    assert not pending.log_inclusion.hashes and not pending.log_inclusion.checkpoint
    transparency.sequencer.integrate_now()
    later = verify_shop(server, "proof-late", include_log_proof=True)
    check_offline(later.log_inclusion, late.certificate)


def test_without_the_option_no_proof_and_unknown_store_is_not_logged(
    server: RegistryHarness, transparency: TransparencyLog
) -> None:
    authorize(server, shop_id="proof-plain")
    transparency.sequencer.integrate_now()
    assert not verify_shop(server, "proof-plain").HasField("log_inclusion")
    unknown = verify_shop(server, "no-such-shop", include_log_proof=True)
    assert unknown.reason == rpb.VERDICT_REASON_UNKNOWN_STORE
    assert unknown.log_inclusion.status == rpb.LOG_INCLUSION_STATUS_NOT_LOGGED


def test_a_server_without_a_log_says_unavailable(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> None:
    with registry_server(db, pki_dir, pseudonymizer, tmp_path / "data") as harness:
        authorize(harness, shop_id="proof-nolog")
        verdict = verify_shop(harness, "proof-nolog", include_log_proof=True)
    assert verdict.authorized
    assert verdict.log_inclusion.status == rpb.LOG_INCLUSION_STATUS_UNAVAILABLE
