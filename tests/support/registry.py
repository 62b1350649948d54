"""Seller-registry test support: a registry with demo CAs, servers serving it, requests, seeding."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection, select

from registry.authz import authorities
from registry.authz.records import encode_card_types, encode_provinces, serial_hex
from registry.authz.tables import AUTH_ACTIVE, authz_cas
from registry.clock import Clock, utc_now
from registry.pki.authority import CertificateAuthority
from registry.pki.authorization import StoreAuthorization
from registry.pki.issuance import issue_store_certificate
from registry.pki.keys import decrypt_private_key, generate_private_key
from registry.pki.scope import Scope
from registry.schema import metadata
from services.app import App
from services.domain.pseudonym import Pseudonymizer
from services.features.transparency import TransparencyLog
from services.http.app import create_app
from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import registry_pb2 as rpb
from services.proto.realname.v1 import registry_pb2_grpc as rgrpc
from services.rpc.server import TlsFiles, create_server
from services.runtime.ca_material import ensure_dev_authorities, key_directory, registry_config
from services.storage.database import Database
from tests.support.http import http_server
from tests.support.server import GrpcHarness

CREDIT_CODES = ("91350100M000100Y43", "91110000802100433B")
BASE_URL = "http://127.0.0.1:8080"
CA_AGE = dt.timedelta(days=3 * 365)


@dataclass
class RegistryHarness(GrpcHarness):
    """A gRPC server (and optionally HTTP) serving the registry over a database with demo CAs."""

    app: App | None = None
    data_dir: Path = field(default_factory=Path)
    http_url: str = ""

    def registry_service(self, principal: str = "operator-cmcc") -> rgrpc.RegistryServiceStub:
        """A RegistryService stub as ``principal``."""
        return rgrpc.RegistryServiceStub(self.channel(principal))

    def root(self) -> CertificateAuthority:
        """The regulator root with its key (the data directory's root key file)."""
        return key_directory(self.data_dir).load_root()


@contextmanager
def registry_server(
    db: Database,
    pki_dir: Path,
    pseudonymizer: Pseudonymizer,
    data_dir: Path,
    *,
    http: bool = False,
    log: TransparencyLog | None = None,
    clock: Clock = utc_now,
) -> Iterator[RegistryHarness]:
    """Serve the registry over ``db`` after giving it dev-init's demo root and operator CAs.

    The CAs are backdated by :data:`CA_AGE`, so tests can issue certificates in the past. With
    ``log``, the transparency log is served too (VerifySeller can then return proofs); ``clock``
    is the served app's (a test that needs a store certified earlier turns it back).
    """
    ensure_dev_authorities(data_dir, db, now=dt.datetime.now(dt.UTC) - CA_AGE)
    app = App.build(
        db, pseudonymizer, clock, log=log, registry=registry_config(data_dir, pseudonymizer)
    )
    assert app.seller_checks is not None
    # What `realname serve`'s refresher does at start: the backdated CAs' CRLs are re-signed now.
    app.seller_checks.refresh_crls()
    # What `realname serve` runs: VerifySeller answers from memory, bounded by the poll.
    app.registry_watch().start()
    assert app.audit is not None
    app.audit.start()  # audited as `realname serve` is (the harness's close stops it)
    running = create_server(
        app.bindings(), "127.0.0.1:0", tls=TlsFiles.in_pki_dir(pki_dir), audit_sink=app.audit
    )
    harness = RegistryHarness(
        running, f"127.0.0.1:{running.port}", pki_dir, app.cards, app=app, data_dir=data_dir
    )
    with ExitStack() as stack:
        stack.callback(harness.close)
        if http:
            harness.http_url = stack.enter_context(
                http_server(create_app(lambda: True, app.http_routes()))
            )
        yield harness


def store_key() -> ec.EllipticCurvePrivateKey:
    """A fresh store key."""
    return generate_private_key()


def csr_for(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A PEM PKCS#10 request for ``key``."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "store")]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def application(
    *,
    operator: str = "cmcc",
    marketplace: str = "demo",
    shop_id: str = "shop-1",
    csr: bytes | None = None,
    card_types: Sequence[int] = (cpb.CARD_TYPE_PERSONAL,),
    provinces: Sequence[str] = ("11", "35"),
    nationwide: bool = False,
    credit_code: str = CREDIT_CODES[0],
) -> rpb.SubmitApplicationRequest:
    """A valid SubmitApplication request (a fresh store key unless ``csr`` is given)."""
    return rpb.SubmitApplicationRequest(
        operator=operator,
        store=rpb.Store(
            shop=rpb.Shop(marketplace=marketplace, shop_id=shop_id),
            legal_name="Fuzhou Demo Telecom Equipment Co., Ltd.",
            credit_code=credit_code,
        ),
        scope=rpb.Scope(card_types=card_types, provinces=provinces, nationwide=nationwide),
        csr=csr if csr is not None else csr_for(store_key()),
        qualifications=rpb.Qualifications(
            business_licence_number="350100100012345",
            protection_assessment_level=3,
            contact=rpb.Contact(name="Lin Wei", phone="0591-8888-0000", email="it@example.com"),
        ),
    )


def authorize(
    harness: RegistryHarness,
    *,
    operator: str = "cmcc",
    submitter: str = "marketplace-demo",
    **fields: object,
) -> rpb.Authorization:
    """Submit, approve and issue an authorization through the service; return it."""
    return authorize_with(
        harness.registry_service, operator=operator, submitter=submitter, **fields
    )


def authorize_with(
    stub_for: Callable[[str], rgrpc.RegistryServiceStub],
    *,
    operator: str = "cmcc",
    submitter: str = "marketplace-demo",
    **fields: object,
) -> rpb.Authorization:
    """Submit, approve and issue through the stubs ``stub_for(principal)`` gives (any server)."""
    submitted = stub_for(submitter).SubmitApplication(
        application(operator=operator, **fields)  # type: ignore[arg-type]
    )
    desk = stub_for(f"operator-{operator}")
    app_id = submitted.application.application_id
    desk.ReviewApplication(
        rpb.ReviewApplicationRequest(
            application_id=app_id,
            decision=rpb.REVIEW_DECISION_APPROVE,
            reason="qualifications complete",
            assessment="graded protection level 3 report checked",
        )
    )
    issued = desk.IssueAuthorization(rpb.IssueAuthorizationRequest(application_id=app_id))
    return issued.authorization


def verify_shop(
    harness: RegistryHarness,
    shop_id: str,
    *,
    marketplace: str = "demo",
    principal: str = "marketplace-demo",
    **fields: object,
) -> rpb.SellerVerdict:
    """VerifySeller by shop; returns the verdict."""
    request = rpb.VerifySellerRequest(
        shop=rpb.Shop(marketplace=marketplace, shop_id=shop_id),
        **fields,  # type: ignore[arg-type]
    )
    return harness.registry_service(principal).VerifySeller(request).verdict


def rpc_error(call: object) -> grpc.RpcError:
    """Helper for type checkers: the RpcError raised by a failed stub call."""
    assert isinstance(call, grpc.RpcError)
    return call


def _issue_rows(
    job: tuple[bytes, bytes, bytes, int, str, str, int, int, dt.datetime],
) -> list[dict[str, object]]:
    """Worker: issue certificates for shops ``start``..``start+count`` (runs in a pool process)."""
    certificate_der, key_pem, secret, ca_id, operator, marketplace, start, count, moment = job
    ca = CertificateAuthority(
        certificate=x509.load_der_x509_certificate(certificate_der),
        private_key=decrypt_private_key(key_pem, secret),
    )
    request = x509.load_pem_x509_csr(csr_for(store_key()))
    scope = Scope.of(["personal"], "all")
    rows: list[dict[str, object]] = []
    for number in range(start, start + count):
        authorization = StoreAuthorization(
            operator=operator,
            marketplace=marketplace,
            shop_id=f"shop-{number:06d}",
            legal_name="Bulk Seller Co., Ltd.",
            credit_code=CREDIT_CODES[1],
            scope=scope,
        )
        certificate = issue_store_certificate(
            ca, request, authorization, base_url=BASE_URL, now=moment
        )
        rows.append(
            {
                "serial_hex": serial_hex(certificate.serial_number),
                "operator": operator,
                "ca_id": ca_id,
                "application_id": None,
                "marketplace": marketplace,
                "shop_id": authorization.shop_id,
                "legal_name": authorization.legal_name,
                "credit_code": authorization.credit_code,
                "card_types": encode_card_types(scope),
                "provinces": encode_provinces(scope),
                "not_before": certificate.not_valid_before_utc,
                "not_after": certificate.not_valid_after_utc,
                "issued_at": moment,
                "certificate": certificate.public_bytes(serialization.Encoding.DER),
                "status": AUTH_ACTIVE,
                "is_current": True,
            }
        )
    return rows


def seed_authorizations(
    db: Database,
    *,
    operator: str,
    marketplace: str,
    count: int,
    key_dir: Path,
    workers: int = 2,
) -> list[str]:
    """Issue ``count`` certificates under ``operator``'s current CA and bulk-insert their rows.

    Fixture data for sweeps and benchmarks (shops ``shop-000000``...): real certificates issued
    in-process by ``issue_store_certificate`` in a pool of processes, one store key for all,
    rows as issuance writes them, no log entries. Returns the shop ids.
    """
    moment = dt.datetime.now(dt.UTC).replace(microsecond=0)
    secret = key_directory(key_dir).require_passphrase().reveal()

    def ca_row(conn: Connection) -> tuple[int, bytes, bytes]:
        record = authorities.current_ca(conn, operator)
        assert record is not None, f"{operator} has no CA"
        key = conn.execute(
            select(authz_cas.c.encrypted_key).where(authz_cas.c.id == record.id)
        ).scalar_one()
        return record.id, record.certificate, str(key).encode("ascii")

    ca_id, certificate_der, key_pem = db.read(ca_row)
    step = 2000
    jobs = [
        (certificate_der, key_pem, secret, ca_id, operator, marketplace, start,
         min(step, count - start), moment)
        for start in range(0, count, step)
    ]  # fmt: skip
    # Spawned, not forked: a child forked while one of this process's threads (gRPC, audit
    # writer, a server harness) held a lock inside a library can wait on it forever; one
    # CI run hung in `CertificateBuilder.sign` that way.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        for rows in pool.map(_issue_rows, jobs):
            bulk_insert(db, "authz_authorizations", rows)
    return [f"shop-{number:06d}" for number in range(count)]


def bulk_insert(db: Database, table: str, rows: Sequence[dict[str, object]]) -> None:
    """Insert rows with the driver's executemany in one transaction (SQLAlchemy Core's per-row
    processing would take longer than issuing the certificates)."""
    if not rows:
        return
    columns = list(rows[0])
    marks = ", ".join(["?" if db.is_sqlite else "%s"] * len(columns))
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"

    def value(item: object) -> object:
        if db.is_sqlite and isinstance(item, dt.datetime):
            # The text form SQLAlchemy's SQLite DateTime reads back.
            return item.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return item

    proxy = db.engine.raw_connection()
    try:
        driver: Any = proxy.driver_connection
        cursor = driver.cursor()
        if db.is_sqlite:
            cursor.execute("BEGIN IMMEDIATE")
        cursor.executemany(sql, [tuple(value(row[c]) for c in columns) for row in rows])
        cursor.close()
        if db.is_sqlite:
            driver.execute("COMMIT")
        else:
            driver.commit()
    finally:
        proxy.close()


REGISTRY_TABLES = (
    "authz_state",
    "authz_cas",
    "authz_crls",
    "authz_applications",
    "authz_authorizations",
)


def copy_registry(source: Database, target: Database) -> None:
    """Copy every registry table from ``source`` to a fresh migrated ``target`` (same CAs)."""
    for name in REGISTRY_TABLES:
        table = metadata.tables[name]
        with source.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(select(table))]
        if name == "authz_state":
            target.write(lambda conn, table=table: conn.execute(table.delete()))
        for start in range(0, len(rows), 20000):
            bulk_insert(target, name, rows[start : start + 20000])
