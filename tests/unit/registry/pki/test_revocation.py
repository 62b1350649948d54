from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from registry.pki.errors import IssuanceError
from registry.pki.keys import require_p256_public_key
from registry.pki.revocation import (
    REASON_CODES,
    Revocation,
    build_crl,
    reason_code,
    reason_from_code,
)
from tests.unit.registry.pki.factory import World


def test_operator_crl_fields(world: World) -> None:
    ca = world.operators["cmcc"]
    at = world.now - dt.timedelta(hours=2)
    crl = build_crl(
        ca,
        [
            Revocation(1234, at, x509.ReasonFlags.key_compromise),
            Revocation(99, at - dt.timedelta(days=1)),
        ],
        crl_number=7,
        this_update=world.now,
    )
    assert crl.is_signature_valid(require_p256_public_key(ca.certificate.public_key()))
    assert crl.issuer == ca.subject
    assert crl.last_update_utc == world.now
    assert crl.next_update_utc == world.now + dt.timedelta(days=1)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.key_id
    entry = crl.get_revoked_certificate_by_serial_number(1234)
    assert entry is not None
    assert entry.revocation_date_utc == at.replace(microsecond=0)
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    unspecified = crl.get_revoked_certificate_by_serial_number(99)
    assert unspecified is not None
    # RFC 5280 5.3.1: reasonCode unspecified SHOULD be absent.
    assert len(unspecified.extensions) == 0


def test_root_crl_lists_operator_cas(world: World) -> None:
    revoked = world.operators["vno1"].certificate
    crl = build_crl(
        world.root,
        [Revocation(revoked.serial_number, world.now, x509.ReasonFlags.privilege_withdrawn)],
        crl_number=1,
    )
    assert crl.is_signature_valid(require_p256_public_key(world.root.certificate.public_key()))
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial_number) is not None


def test_crl_refusals(world: World) -> None:
    ca = world.operators["cmcc"]
    with pytest.raises(IssuanceError, match="twice"):
        build_crl(ca, [Revocation(5, world.now), Revocation(5, world.now)], crl_number=1)
    with pytest.raises(IssuanceError, match="after thisUpdate"):
        build_crl(ca, [], crl_number=1, this_update=world.now, next_update=world.now)
    with pytest.raises(IssuanceError, match="non-negative"):
        build_crl(ca, [], crl_number=-1)
    with pytest.raises(IssuanceError, match="delta"):
        Revocation(5, world.now, x509.ReasonFlags.remove_from_crl)
    with pytest.raises(IssuanceError, match="positive"):
        Revocation(0, world.now)


def test_reason_codes() -> None:
    assert reason_from_code(1) is x509.ReasonFlags.key_compromise
    assert reason_from_code(9) is x509.ReasonFlags.privilege_withdrawn
    assert all(reason_code(reason) == code for code, reason in REASON_CODES.items())
    with pytest.raises(IssuanceError, match="7"):
        reason_from_code(7)
