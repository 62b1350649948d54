"""The registry library on SQLite and PostgreSQL: CA rotation, CRL numbering, sealed contacts,
and the migration matching the tables."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography import x509
from sqlalchemy import inspect, select

from registry.authz import authorities, workflow
from registry.authz.errors import StateError
from registry.authz.records import ApplicationRequest, Contact, Qualifications
from registry.authz.sealing import Sealer
from registry.authz.tables import authz_applications
from registry.pki.authority import create_root_ca
from registry.pki.keys import Passphrase
from registry.pki.verify import Reason, Verifier
from registry.schema import metadata
from services.storage.database import Database
from tests.support.registry import csr_for, store_key

PASSPHRASE = Passphrase("test-ca-passphrase")
SEALER = Sealer("k1", bytes(range(32)))
BASE = "http://127.0.0.1:8080"
T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=30)


def request(shop_id: str) -> ApplicationRequest:
    return ApplicationRequest(
        operator="cmcc",
        marketplace="demo",
        shop_id=shop_id,
        legal_name="Rotation Test Co.",
        credit_code="91350100M000100Y43",
        card_types=("personal",),
        provinces=(),
        nationwide=True,
        csr=csr_for(store_key()),
        qualifications=Qualifications(
            "L-1", "ISO/IEC 27001 CN-1", None, Contact("Zhang San", "13900001111")
        ),
    )


def issue(db: Database, keys: authorities.OperatorKeys, shop_id: str, when: dt.datetime) -> str:
    def work(conn):  # type: ignore[no-untyped-def]
        app = workflow.submit_application(
            conn, request(shop_id), submitted_by="operator-cmcc", sealer=SEALER, now=when
        )
        workflow.review_application(
            conn, app.id, operator="cmcc", approve=True, reason="ok", assessment="ok",
            reviewer="operator-cmcc", now=when,
        )  # fmt: skip
        return workflow.issue_authorization(
            conn, app.id, operator="cmcc", keys=keys, base_url=BASE, now=when
        ).serial_hex

    return str(db.write(work))


def test_rotation_keeps_old_certificates_valid_and_crls_numbered(db: Database) -> None:
    root = create_root_ca(now=T0 - dt.timedelta(days=1))
    keys = authorities.OperatorKeys(PASSPHRASE)
    db.write(lambda conn: authorities.install_root(conn, root, now=T0))
    db.write(
        lambda conn: authorities.add_operator_ca(
            conn, root, "cmcc", PASSPHRASE, base_url=BASE, now=T0
        )
    )
    old = issue(db, keys, "before", T0 + dt.timedelta(days=1))
    rotated = db.write(
        lambda conn: authorities.rotate_operator_ca(
            conn, root, "cmcc", PASSPHRASE, base_url=BASE, now=T0 + dt.timedelta(days=2)
        )
    )
    assert rotated.generation == 2
    new = issue(db, keys, "after", T0 + dt.timedelta(days=3))
    records = {
        s: db.read(lambda conn, s=s: workflow.get_authorization(conn, s)) for s in (old, new)
    }
    assert records[old].ca_id != records[new].ca_id == rotated.id
    numbers = [db.read(lambda conn: authorities.stored_crls(conn, "cmcc"))[0].crl_number]
    db.write(
        lambda conn: workflow.revoke_authorization(
            conn, old, operator="cmcc", reason_code=1, keys=keys
        )
    )
    numbers.append(db.read(lambda conn: authorities.stored_crls(conn, "cmcc"))[0].crl_number)
    assert numbers[1] == numbers[0] + 1
    # The root CRL was signed a month ago: re-sign what has aged, as the refresher does.
    refreshed = db.write(lambda conn: authorities.refresh_crls(conn, keys, root=root))
    assert refreshed == ["root"]
    verifier = Verifier(db.read(authorities.load_bundle).bundle)
    assert verifier.verify(records[new].certificate).reason is Reason.AUTHORIZED
    assert verifier.verify(records[old].certificate).reason is Reason.REVOKED
    # The CRL is signed by the current generation and lists the old generation's certificate.
    crl = x509.load_der_x509_crl(db.read(lambda conn: authorities.stored_crls(conn, "cmcc"))[0].der)
    assert crl.get_revoked_certificate_by_serial_number(int(old, 16)) is not None
    current = x509.load_der_x509_certificate(rotated.certificate)
    assert crl.is_signature_valid(current.public_key())  # type: ignore[arg-type]
    with pytest.raises(StateError):
        db.write(lambda conn: authorities.install_root(conn, create_root_ca()))


def test_contacts_are_sealed_at_rest(db: Database) -> None:
    root = create_root_ca()
    db.write(lambda conn: authorities.install_root(conn, root))
    # Applications are only taken for an operator the registry knows (one with a CA).
    db.write(
        lambda conn: authorities.add_operator_ca(conn, root, "cmcc", PASSPHRASE, base_url=BASE)
    )
    app = db.write(
        lambda conn: workflow.submit_application(
            conn, request("sealed"), submitted_by="marketplace-demo", sealer=SEALER
        )
    )
    raw = db.read(
        lambda conn: conn.execute(
            select(authz_applications.c.contact_sealed).where(authz_applications.c.id == app.id)
        ).scalar_one()
    )
    assert b"13900001111" not in bytes(raw) and b"Zhang" not in bytes(raw)
    opened = db.read(lambda conn: workflow.get_application(conn, app.id, sealer=SEALER))
    assert opened.qualifications.contact == Contact("Zhang San", "13900001111")
    assert "13900001111" not in repr(opened)


def test_the_migration_creates_exactly_the_registry_tables(db: Database) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn)
        diff = compare_metadata(context, metadata)
    ours = [d for d in diff if "authz_" in repr(d)]
    assert ours == []


def test_root_key_directory_round_trip(tmp_path: Path) -> None:
    from registry.authz.keyfiles import KeyDirectory

    keys = KeyDirectory(tmp_path / "registry")
    assert keys.passphrase() is None
    assert keys.ensure_dev_passphrase() and not keys.ensure_dev_passphrase()
    passphrase = keys.require_passphrase()
    root = create_root_ca()
    keys.save_root(root, passphrase)
    assert (keys.root_key.stat().st_mode & 0o777) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in keys.root_key.read_bytes()
    assert keys.load_root().certificate == root.certificate


def test_the_store_keys_migration_fills_in_the_key_of_every_stored_authorization(
    db: Database,
) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    from registry.authz.tables import authz_authorizations
    from registry.pki.identifiers import spki_sha256
    from registry.pki.keys import require_p256_public_key
    from services.storage.migrate import alembic_config

    root = create_root_ca(now=T0 - dt.timedelta(days=1))
    keys = authorities.OperatorKeys(PASSPHRASE)
    db.write(lambda conn: authorities.install_root(conn, root, now=T0))
    db.write(
        lambda conn: authorities.add_operator_ca(
            conn, root, "cmcc", PASSPHRASE, base_url=BASE, now=T0
        )
    )
    serials = {issue(db, keys, shop, T0 + dt.timedelta(days=1)) for shop in ("m-1", "m-2")}
    t = authz_authorizations.c

    def keys_by_serial() -> dict[str, bytes | None]:
        rows = db.read(lambda conn: conn.execute(select(t.serial_hex, t.spki_sha256)).all())
        return {serial: digest for serial, digest in rows}

    issued = keys_by_serial()
    assert set(issued) == serials
    for serial in serials:
        record = db.read(lambda conn, serial=serial: workflow.get_authorization(conn, serial))
        certificate = x509.load_der_x509_certificate(record.certificate)
        assert issued[serial] == spki_sha256(require_p256_public_key(certificate.public_key()))
    config = alembic_config(db.engine)
    scripts = ScriptDirectory.from_config(config)
    ours = next(r for r in scripts.walk_revisions() if r.path.endswith("_store_keys.py"))
    assert isinstance(ours.down_revision, str)
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, ours.down_revision)
        columns = {c["name"] for c in inspect(conn).get_columns("authz_authorizations")}
        assert "spki_sha256" not in columns
        command.upgrade(config, "head")
    assert keys_by_serial() == issued
