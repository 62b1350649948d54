"""VerifySeller from memory: no database round trip in the common case, this process's writes in
force at once, answers from memory only while the last poll is within the staleness bound, and
CRL freshness still checked on every call (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from registry.authz import authorities
from registry.pki.verify import Reason
from services.domain.errors import Unavailable
from services.domain.pseudonym import Pseudonymizer
from services.features.seller_checks import STALENESS_BOUND, RegistryWatch, SellerChecks
from services.features.sellers import RegistryConfig
from services.proto.realname.v1 import registry_pb2 as rpb
from services.storage import sellers_repo as repo
from services.storage.database import Database
from tests.support.registry import RegistryHarness, authorize, registry_server, verify_shop


@pytest.fixture
def server(
    db: Database, pki_dir: Path, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> Iterator[RegistryHarness]:
    with registry_server(db, pki_dir, pseudonymizer, tmp_path / "data") as harness:
        yield harness


def checks_of(server: RegistryHarness) -> SellerChecks:
    assert server.app is not None and server.app.seller_checks is not None
    return server.app.seller_checks


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def count_reads_here(monkeypatch: pytest.MonkeyPatch, db: Database) -> list[int]:
    """Count this thread's transactions on ``db`` (the poller's, on its own thread, are not)."""
    here = threading.get_ident()
    calls = [0]

    def counted(real: Callable[..., Any]) -> Callable[..., Any]:
        def counting(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == here:
                calls[0] += 1
            return real(*args, **kwargs)

        return counting

    # Both ways in: the hot path's driver-level reads and the bundle's SQLAlchemy reads.
    monkeypatch.setattr(db, "run_tx", counted(db.run_tx))
    monkeypatch.setattr(db, "read", counted(db.read))
    return calls


def test_verify_seller_answers_from_memory_after_the_first_read(
    server: RegistryHarness, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = authorize(server, shop_id="hot")
    checks = checks_of(server)
    calls = count_reads_here(monkeypatch, db)
    first = checks.verify_shop("demo", "hot", None, "35", None)
    # The shop's certificates, and the bundle once (the issuance moved the generation).
    assert first.reason is Reason.AUTHORIZED and calls[0] == 2
    for _ in range(3):
        assert checks.verify_shop("demo", "hot", None, "35", None).serial_hex == auth.serial
        # The operator filter is applied to the cached entry (every operator's certificates).
        assert checks.verify_shop("demo", "hot", None, None, "cmcc").authorized
        assert checks.verify_shop("demo", "hot", None, None, "cucc").reason is Reason.UNKNOWN_STORE
        assert checks.verify_shop("demo", "hot", None, "11", None).authorized
    certificate = x509.load_der_x509_certificate(auth.certificate).public_bytes(
        serialization.Encoding.PEM
    )
    assert checks.verify_certificate(certificate, None, None).authorized
    # An unknown shop: one read, then answered from memory too.
    assert checks.verify_shop("demo", "nobody", None, None, None).reason is Reason.UNKNOWN_STORE
    assert checks.verify_shop("demo", "nobody", None, None, None).reason is Reason.UNKNOWN_STORE
    assert calls[0] == 3


def test_this_process_writes_are_in_force_at_once(server: RegistryHarness) -> None:
    checks = checks_of(server)
    # Polls far apart: only the desk's own notice can refresh the cache before the next check.
    checks.watch.interval = 3600.0
    checks.watch.poll()
    assert verify_shop(server, "fresh").reason == rpb.VERDICT_REASON_UNKNOWN_STORE  # cached
    auth = authorize(server, shop_id="fresh")
    assert verify_shop(server, "fresh").serial == auth.serial
    server.registry_service("operator-cmcc").RevokeAuthorization(
        rpb.RevokeAuthorizationRequest(serial=auth.serial)
    )
    assert not verify_shop(server, "fresh").authorized


def test_answers_from_memory_stop_when_the_poll_is_older_than_the_bound(db: Database) -> None:
    clock = Clock()
    watch = RegistryWatch(db, interval=3600.0, monotonic=clock)
    assert watch.fresh_generation() is None  # not started: always read the database
    watch.start()
    try:
        generation = watch.poll()
        assert watch.fresh_generation() == generation
        watch.remember(generation, "demo", "nobody", [])
        assert watch.shop(generation, "demo", "nobody") == []
        clock.now += STALENESS_BOUND + 0.001
        assert watch.fresh_generation() is None
        # Another process's change: the next poll drops every shop cached at the old generation.
        db.write(authorities.bump_generation)
        newer = watch.poll()
        assert newer > generation and watch.fresh_generation() == newer
        assert watch.shop(newer, "demo", "nobody") is None
        # A read racing a change (made at another generation than the polled one) is not kept.
        watch.remember(newer + 1, "demo", "nobody", [])
        assert watch.shop(newer, "demo", "nobody") is None
        assert watch.shop(newer + 1, "demo", "nobody") is None
        read, found = db.run_tx(lambda tx: repo.shop_certificates(tx, "demo", "nobody"))
        assert (read, found) == (newer, [])
    finally:
        watch.stop()
    assert watch.fresh_generation() is None


def test_issuance_moves_the_generation(server: RegistryHarness, db: Database) -> None:
    before = db.run_tx(repo.generation, readonly=True)
    authorize(server, shop_id="moves")
    assert db.run_tx(repo.generation, readonly=True) > before


def test_stale_crls_refuse_even_a_shop_answered_from_memory(
    server: RegistryHarness, db: Database
) -> None:
    """CRL freshness is checked on every call, cache or not (no CA key here to re-sign)."""
    authorize(server, shop_id="stale")
    now = [dt.datetime.now(dt.UTC)]
    checks = SellerChecks(db, RegistryConfig(), clock=lambda: now[0])
    checks.watch.start()
    try:
        checks.watch.poll()
        assert checks.verify_shop("demo", "stale", None, None, None).authorized
        assert checks.watch.fresh_generation() is not None
        now[0] += 2 * authorities.OPERATOR_CRL_LIFETIME  # past the operator CRL's nextUpdate
        with pytest.raises(Unavailable) as refused:
            checks.verify_shop("demo", "stale", None, None, None)
        assert refused.value.reason == "REVOCATION_DATA_STALE"
    finally:
        checks.watch.stop()
