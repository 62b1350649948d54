"""The `realname` command line: dev-init, db upgrade, serve."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import uvicorn

from registry.log.errors import LogError
from services.app import App
from services.cli import (
    agents,
    audit,
    ca,
    card,
    compliance,
    delivery,
    enforce,
    industry,
    legacy,
    log,
    proofing,
    reader,
    store,
)
from services.cli.agents import agent_policy
from services.cli.common import command_group
from services.cli.delivery import delivery_config
from services.cli.proofing import proofing_config
from services.domain.errors import Unavailable
from services.domain.holder_names import HolderNameKeyError
from services.domain.pseudonym import PepperError, Pseudonymizer
from services.features.transparency import TransparencyLog
from services.http.admin import AdminListener, admin_app
from services.http.app import create_app
from services.http.courier import courier_api_routes, courier_page_routes
from services.rpc.server import TlsFiles, create_server
from services.runtime import logs
from services.runtime.ca_material import ensure_dev_authorities, registry_config
from services.runtime.config import (
    DEFAULT_ADMIN_ADDRESS,
    DEFAULT_DOCUMENT_RATE,
    DEFAULT_GRPC_ADDRESS,
    DEFAULT_HTTP_ADDRESS,
    DEFAULT_PRINCIPAL_RATE,
    DEFAULT_THREADS,
    ConfigError,
    Settings,
    add_data_dir_argument,
    audit_anchor_seconds,
    database_timeouts,
    env_default,
    layers_off,
    rate_limit_argument,
    validate,
)
from services.runtime.devpki import ensure_dev_pki
from services.runtime.health import DatabaseHealth, database_probe
from services.runtime.key_files import create_holder_name_key_file, create_pepper_file, load_pepper
from services.runtime.metrics import LogSampler
from services.runtime.periodic import PeriodicJob
from services.runtime.workers import reuse_port_socket, run_workers
from services.storage import migrate
from services.storage.database import Database
from services.storage.reference import seed_demo_reference_data

logger = logging.getLogger("realname")

COMMAND_GROUPS = (
    log,
    ca,
    store,
    delivery,
    card,
    industry,
    audit,
    enforce,
    agents,
    legacy,
    proofing,
    reader,
    compliance,
)
"""The modules that add command groups, in the order `realname --help` lists them."""


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        data_dir=args.data_dir.resolve(),
        grpc_address=getattr(args, "grpc_address", DEFAULT_GRPC_ADDRESS),
        http_address=getattr(args, "http_address", DEFAULT_HTTP_ADDRESS),
        admin_address=getattr(args, "admin_address", DEFAULT_ADMIN_ADDRESS),
        database_url=env_default("REALNAME_DATABASE_URL"),
        read_database_url=env_default("REALNAME_READ_DATABASE_URL"),
        db_isolation=env_default("REALNAME_DB_ISOLATION", "default") or "default",
        insecure=getattr(args, "insecure_plaintext", False),
        max_workers=getattr(args, "threads", DEFAULT_THREADS),
        principal_rate=getattr(args, "rate_principal", DEFAULT_PRINCIPAL_RATE),
        document_rate=getattr(args, "rate_document", DEFAULT_DOCUMENT_RATE),
        workers=max(1, getattr(args, "workers", 1)),
    )


def cmd_dev_init(args: argparse.Namespace) -> int:
    """Creates the dev PKI, the pepper, a migrated database and demo reference data."""
    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    written = ensure_dev_pki(settings.pki_dir)
    made_pepper = create_pepper_file(settings.pepper_path)
    create_holder_name_key_file(settings.holder_name_key_path)
    db = Database(settings.database())
    try:
        migrate.upgrade(db.engine)
        with db.engine.begin() as conn:
            added = seed_demo_reference_data(conn)
        cas = ensure_dev_authorities(settings.data_dir, db)
    finally:
        db.dispose()
    print(
        f"dev-init: {settings.data_dir}: {len(written)} PKI files written, "
        f"pepper {'created' if made_pepper else 'kept'}, database migrated, "
        f"{added} reference rows added, regulator root "
        f"{'created' if cas.root_created else 'kept'}, "
        f"{len(cas.operators_added)} operator CAs added"
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Migrates the database to the newest schema."""
    # A migration may rewrite a large table: no statement or stall bound.
    db = Database(replace(_settings(args).database(), statement_timeout_ms=0, stall_timeout_ms=0))
    try:
        migrate.upgrade(db.engine)
        print(f"database at revision {migrate.current_revision(db.engine)}")
    finally:
        db.dispose()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serves gRPC and HTTP until SIGTERM or SIGINT, then shuts down gracefully."""
    settings = _settings(args)
    try:
        settings = replace(settings, layers_off=layers_off(env_default("REALNAME_LAYERS_OFF")))
        validate(settings)
        delivery_config()  # refuses bad REALNAME_DELIVERY_* before anything starts
        agent_policy()  # refuses bad REALNAME_AGENT_* likewise
        audit_anchor_seconds()  # and a bad REALNAME_AUDIT_ANCHOR_SECONDS
        database_timeouts()  # and bad REALNAME_DB_* timeouts
        pseudonymizer = load_pepper(settings.pepper_path)
    except (ConfigError, PepperError) as exc:
        print(f"realname serve: {exc}", file=sys.stderr)
        return 2
    db = Database(settings.database())
    current = migrate.is_current(db.engine)
    db.dispose()
    if not current:
        print(
            "realname serve: the database is not migrated to the current schema; "
            "run `realname db upgrade`",
            file=sys.stderr,
        )
        return 2
    if args.workers < 1:
        print("realname serve: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        addresses = (settings.grpc_address, settings.http_address, settings.admin_address)
        if any(a.endswith(":0") for a in addresses):
            print("realname serve: --workers needs fixed ports", file=sys.stderr)
            return 2

        def worker(_index: int) -> int:
            logs.configure(args.log_level)  # the parent's flusher thread did not survive fork
            return _serve_process(settings, args, pseudonymizer, reuse_port=True)

        return run_workers(args.workers, worker)
    return _serve_process(settings, args, pseudonymizer, reuse_port=False)


def _serve_process(
    settings: Settings, args: argparse.Namespace, pseudonymizer: Pseudonymizer, *, reuse_port: bool
) -> int:
    """One serving process: database pool, gRPC server, HTTP server, background jobs."""
    db = Database(replace(settings.database(), busy_timeout_ms=args.db_busy_timeout_ms))
    tls = None
    if not settings.insecure:
        tls = TlsFiles(
            Path(args.tls_cert or settings.pki_dir / "server.pem"),
            Path(args.tls_key or settings.pki_dir / "server.key"),
            Path(args.client_ca or settings.pki_dir / "ca.pem"),
        )
    try:
        log_origin = env_default("REALNAME_LOG_ORIGIN")
        transparency = TransparencyLog.open(db, settings.data_dir, origin=log_origin)
        proofing = proofing_config(settings, pseudonymizer)
    except (LogError, HolderNameKeyError, ValueError, ConfigError) as exc:
        print(f"realname serve: {exc}", file=sys.stderr)
        return 2
    app = App.build(
        db,
        pseudonymizer,
        log=transparency,
        registry=registry_config(settings.data_dir, pseudonymizer),
        delivery=delivery_config(),
        document_limiter=settings.rate_limiter("document"),
        proofing=proofing,
    )
    if "guards" in settings.layers_off:
        app.cards.drop_guards()
    crl_refresher = app.crl_refresher()
    crl_refresher.start()
    registry_watch = app.registry_watch()
    registry_watch.start()
    delivery_expirer = app.delivery_expirer()
    delivery_expirer.start()
    assert app.audit is not None
    app.audit.start()
    audit_anchorer = app.audit_anchorer(audit_anchor_seconds())
    audit_anchorer.start()
    compliance_snapshots = app.compliance_snapshotter()
    compliance_snapshots.start()
    sequencing = transparency.runner()
    sequencing.start()
    log_metrics = PeriodicJob("log-metrics", LogSampler(db).sample, 2.0, (Unavailable, LogError))
    log_metrics.start()
    database_health = DatabaseHealth(database_probe(settings.database().url))
    serving = threading.Event()
    serving.set()
    # The public HTTP reads may come from a standby; the cap and every write never do.
    read_config = settings.read_database()
    read_db = Database(read_config) if read_config is not None else None
    web = create_app(lambda: serving.is_set() and database_health.healthy, app.http_routes(read_db))
    host, port = settings.http_address.rsplit(":", 1)
    # log_config=None: uvicorn's dictConfig would close the handlers logs.configure installed.
    config = uvicorn.Config(
        web, host=host.strip("[]"), port=int(port), log_config=None, access_log=False
    )
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    http = uvicorn.Server(config)
    sockets = [reuse_port_socket(host.strip("[]"), int(port))] if reuse_port else None
    http_thread = threading.Thread(
        target=http.run, kwargs={"sockets": sockets}, name="http", daemon=True
    )
    http_thread.start()
    admin = None
    if tls is not None and settings.admin_address != "off":
        assert app.compliance is not None and app.enforcement is not None
        assert app.deliveries is not None
        courier = [
            *courier_api_routes(app.deliveries, app.delivery_bundle, app.audit),
            *courier_page_routes(),
        ]
        admin = AdminListener.create(
            admin_app(app.compliance, app.enforcement, courier),
            settings.admin_address,
            tls,
            reuse_port=reuse_port,
        )
        admin.start()
    # HTTP listens before gRPC health says SERVING, so "healthy" means both sides answer.
    deadline = time.monotonic() + 30
    while not http.started or (admin is not None and not admin.started):
        admin_failed = admin is not None and admin.failed
        if not http_thread.is_alive() or admin_failed or time.monotonic() > deadline:
            where = f"HTTP on {settings.http_address}"
            if admin is not None and not admin.started:
                where = f"the regulator's HTTPS listener on {settings.admin_address}"
            print(f"realname serve: {where} did not start", file=sys.stderr)
            http.should_exit = True
            if admin is not None:
                admin.stop()
            log_metrics.stop()
            sequencing.stop()
            delivery_expirer.stop()
            crl_refresher.stop()
            registry_watch.stop()
            audit_anchorer.stop()
            compliance_snapshots.stop()
            app.audit.stop()
            db.dispose()
            if read_db is not None:
                read_db.dispose()
            return 2
        time.sleep(0.01)
    running = create_server(
        app.bindings(),
        settings.grpc_address,
        tls=tls,
        max_workers=settings.max_workers,
        reuse_port=reuse_port,
        principal_limiter=settings.rate_limiter("principal"),
        audit_sink=None if "audit" in settings.layers_off else app.audit,
        rpc_metrics="metrics" not in settings.layers_off,
    )
    database_health.report_to(running.health, [b.name for b in app.bindings()])
    health_probe = database_health.job()
    health_probe.start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("shutting down", extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info(
        "serving",
        extra={
            "fields": {
                "grpc": f"{settings.grpc_address.rsplit(':', 1)[0]}:{running.port}",
                "http": settings.http_address,
                "admin": settings.admin_address if admin is not None else "off",
                "tls": tls is not None,
                "database": "sqlite" if db.is_sqlite else "postgresql",
                "pid": os.getpid(),
            }
        },
    )
    if settings.layers_off:
        # Measuring only: with "audit" off, accesses go unrecorded; with "guards" off, the
        # activation rules beyond the cap are not applied.
        logger.warning(
            "layers switched off", extra={"fields": {"layers": sorted(settings.layers_off)}}
        )
    stop.wait()
    serving.clear()
    health_probe.stop()
    running.stop(settings.grace_seconds)
    log_metrics.stop()
    sequencing.stop()
    crl_refresher.stop()
    registry_watch.stop()
    delivery_expirer.stop()
    audit_anchorer.stop()
    compliance_snapshots.stop()
    app.audit.stop()  # writes the records still queued
    http.should_exit = True
    if admin is not None:
        admin.stop()
    http_thread.join(timeout=5)
    db.dispose()
    if read_db is not None:
        read_db.dispose()
    logger.info("stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `realname` command."""
    parser = argparse.ArgumentParser(prog="realname", description=__doc__)
    parser.add_argument("--log-level", default=env_default("REALNAME_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("dev-init", help="make the dev PKI, pepper, database and demo data")
    add_data_dir_argument(p)
    p.set_defaults(func=cmd_dev_init)

    db_sub = command_group(sub, "db", "database administration")
    up = db_sub.add_parser("upgrade", help="migrate the database to the newest schema")
    add_data_dir_argument(up)
    up.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("serve", help="serve gRPC (mTLS) and HTTP")
    add_data_dir_argument(p)
    p.add_argument(
        "--grpc-address",
        default=env_default("REALNAME_GRPC_ADDRESS", DEFAULT_GRPC_ADDRESS),
        help="host:port for gRPC (env REALNAME_GRPC_ADDRESS)",
    )
    p.add_argument(
        "--http-address",
        default=env_default("REALNAME_HTTP_ADDRESS", DEFAULT_HTTP_ADDRESS),
        help="host:port for HTTP (env REALNAME_HTTP_ADDRESS)",
    )
    p.add_argument(
        "--admin-address",
        default=env_default("REALNAME_ADMIN_ADDRESS", DEFAULT_ADMIN_ADDRESS),
        help="host:port for the regulator's dashboard over HTTPS with a client certificate, "
        "or 'off' (env REALNAME_ADMIN_ADDRESS; off with --insecure-plaintext)",
    )
    p.add_argument("--tls-cert", default=env_default("REALNAME_TLS_CERT"))
    p.add_argument("--tls-key", default=env_default("REALNAME_TLS_KEY"))
    p.add_argument("--client-ca", default=env_default("REALNAME_CLIENT_CA"))
    p.add_argument(
        "--threads",
        type=int,
        default=int(env_default("REALNAME_THREADS", str(DEFAULT_THREADS)) or DEFAULT_THREADS),
        help="RPC worker threads per process, and database connections (env REALNAME_THREADS)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=int(env_default("REALNAME_WORKERS", "1") or "1"),
        help="serving processes sharing the ports with SO_REUSEPORT (env REALNAME_WORKERS)",
    )
    p.add_argument(
        "--rate-principal",
        type=rate_limit_argument,
        default=env_default("REALNAME_RATE_PRINCIPAL", str(DEFAULT_PRINCIPAL_RATE)),
        help="per-caller limit 'rate/burst' (per second) or 'off', for the whole service: "
        "each of N --workers enforces rate/N and burst/N (env REALNAME_RATE_PRINCIPAL)",
    )
    p.add_argument(
        "--rate-document",
        type=rate_limit_argument,
        default=env_default("REALNAME_RATE_DOCUMENT", str(DEFAULT_DOCUMENT_RATE)),
        help="per (operator, document) limit on CheckEligibility, ActivateCard and ListCards, "
        "'rate/burst' or 'off', split like --rate-principal (env REALNAME_RATE_DOCUMENT)",
    )
    p.add_argument(
        "--db-busy-timeout-ms",
        type=int,
        default=int(env_default("REALNAME_DB_BUSY_TIMEOUT_MS", "30000") or "30000"),
        help="SQLite: how long a write waits for another writer's lock before the call is "
        "answered UNAVAILABLE (DATABASE_BUSY) (env REALNAME_DB_BUSY_TIMEOUT_MS)",
    )
    p.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="serve gRPC without TLS (loopback addresses only; callers name themselves "
        "in the x-realname-principal header)",
    )
    p.set_defaults(func=cmd_serve)

    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `realname` console script."""
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    return int(args.func(args))
