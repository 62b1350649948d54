"""`realname log …`: the log's key, forced integration, the monitor, and a witness.

Exit codes of ``monitor`` and ``cosign``: 0 verified, 1 the log is inconsistent (bad signature,
fork, rollback, changed or missing entry), 2 bad arguments or local state, 3 the log could not be
read or refused the request.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from registry.log.client import TileClient
from registry.log.errors import FetchError, InconsistencyError, LogError
from registry.log.monitor import Event, Monitor, MonitorState, MonitorStateError, Watch
from registry.log.signing import DEFAULT_ORIGIN, ensure_log_signer, log_key_path, verifier_key
from registry.log.witness import WitnessState, WitnessStateError, cosign_latest
from registry.note import (
    COSIGNATURE_V1_TYPE,
    CosignatureSigner,
    CosignatureVerifier,
    Ed25519Verifier,
    MalformedKeyError,
    NoteError,
    WitnessPolicy,
    generate_signer_key,
    parse_signer_key,
    parse_verifier_key,
)
from services.cli.common import (
    EXIT_INCONSISTENT,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    SubParsers,
    UsageError,
    command_group,
)
from services.features.transparency import TransparencyLog
from services.runtime.config import Settings, add_data_dir_argument, env_default
from services.storage import migrate
from services.storage.database import Database


class HttpFetcher:
    """Reads a log's tlog-tiles API over HTTP(S) with httpx."""

    def __init__(self, client: httpx.Client, log_url: str) -> None:
        """Read resources under ``log_url`` (e.g. ``http://127.0.0.1:8080/log``)."""
        self._client = client
        self._base = log_url.rstrip("/")

    @property
    def base_url(self) -> str:
        """The log's URL prefix."""
        return self._base

    def fetch(self, path: str) -> bytes | None:
        """GET ``path`` under the prefix: the body, None on 404, FetchError otherwise."""
        url = f"{self._base}/{path}"
        try:
            response = self._client.get(url)
        except httpx.HTTPError as error:
            raise FetchError(f"GET {url}: {error}") from error
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise FetchError(f"GET {url}: HTTP {response.status_code} {response.text[:200]!r}")
        return response.content


def log_url(url: str) -> str:
    """The log's prefix from ``--url``: a bare server URL gets ``/log`` appended."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--url must be an http(s) URL, not {url!r}")
    path = parts.path.rstrip("/") or "/log"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _log_verifier(vkey: str) -> Ed25519Verifier:
    try:
        verifier = parse_verifier_key(vkey.strip())
    except MalformedKeyError as error:
        raise UsageError(f"--vkey: {error}") from error
    if not isinstance(verifier, Ed25519Verifier):
        raise UsageError("--vkey is a witness key; give the log's verifier key")
    return verifier


def _witness_policy(keys: list[str], threshold: int | None) -> WitnessPolicy | None:
    if not keys:
        if threshold is not None:
            raise UsageError("--witness-threshold needs at least one --witness")
        return None
    witnesses = []
    for key in keys:
        try:
            verifier = parse_verifier_key(key.strip())
        except MalformedKeyError as error:
            raise UsageError(f"--witness: {error}") from error
        if not isinstance(verifier, CosignatureVerifier):
            raise UsageError("--witness must be a cosignature (type 0x04) verifier key")
        witnesses.append(verifier)
    try:
        return WitnessPolicy(witnesses, threshold if threshold is not None else len(witnesses))
    except NoteError as error:
        raise UsageError(f"--witness-threshold: {error}") from error


def _origin(args: argparse.Namespace) -> str:
    return str(args.origin or env_default("REALNAME_LOG_ORIGIN") or DEFAULT_ORIGIN)


def cmd_key(args: argparse.Namespace) -> int:
    """Prints the log's verifier key, creating the log key on first use."""
    try:
        signer = ensure_log_signer(log_key_path(args.data_dir.resolve()), _origin(args))
    except LogError as error:
        print(f"realname log key: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(verifier_key(signer))
    return EXIT_OK


def cmd_integrate(args: argparse.Namespace) -> int:
    """Sequences every pending entry now and prints the new tree size and root."""
    settings = Settings(
        data_dir=args.data_dir.resolve(),
        database_url=env_default("REALNAME_DATABASE_URL"),
        db_isolation=env_default("REALNAME_DB_ISOLATION", "default") or "default",
    )
    db = Database(settings.database())
    try:
        if not migrate.is_current(db.engine):
            print("realname log integrate: run `realname db upgrade` first", file=sys.stderr)
            return EXIT_USAGE
        transparency = TransparencyLog.open(db, settings.data_dir, origin=_origin(args))
        result = transparency.sequencer.integrate_now()
    except LogError as error:
        print(f"realname log integrate: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        db.dispose()
    root = base64.b64encode(result.root).decode()
    print(f"{transparency.origin}: tree size {result.size} (+{result.added}), root {root}")
    return EXIT_OK


def cmd_monitor(args: argparse.Namespace) -> int:
    """Follows a log, verifying it and reporting watched events (see the module docstring)."""
    try:
        verifier = _log_verifier(args.vkey)
        policy = _witness_policy(args.witness, args.witness_threshold)
        base = log_url(args.url)
    except UsageError as error:
        print(f"realname log monitor: {error}", file=sys.stderr)
        return EXIT_USAGE
    origin = args.origin or verifier.name
    watch = Watch.parse(args.watch_store, args.watch_operator)
    stop = threading.Event()
    if not args.once:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda _signum, _frame: stop.set())
    memory: MonitorState | None = None
    recheck = bool(args.recheck_all)
    with httpx.Client(timeout=args.timeout) as http:
        monitor = Monitor(
            TileClient(HttpFetcher(http, base)),
            origin=origin,
            log_verifier=verifier,
            witness_policy=policy,
            watch=watch,
        )
        while True:
            code, memory = _monitor_once(monitor, args.state, memory, recheck)
            recheck = False
            if args.once or code in (EXIT_INCONSISTENT, EXIT_USAGE):
                return code
            if stop.wait(args.interval):
                return EXIT_OK


def _monitor_once(
    monitor: Monitor, state_path: Path | None, memory: MonitorState | None, recheck: bool
) -> tuple[int, MonitorState | None]:
    try:
        state = MonitorState.load(state_path) if state_path is not None else memory
        report, new_state = monitor.check(state, recheck_all=recheck, on_event=_print_event)
    except MonitorStateError as error:
        print(f"realname log monitor: {error}", file=sys.stderr)
        return EXIT_USAGE, memory
    except InconsistencyError as error:
        print(f"realname log monitor: INCONSISTENT LOG: {error}", file=sys.stderr)
        if error.evidence:
            print(error.evidence, file=sys.stderr)
        return EXIT_INCONSISTENT, memory
    except FetchError as error:
        print(f"realname log monitor: cannot read the log: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE, memory
    if state_path is not None:
        new_state.save(state_path)
    root = base64.b64encode(report.root).decode()
    print(
        f"verified {new_state.origin} at tree size {report.size} (was {report.previous_size}), "
        f"root {root}: {report.entries_checked} entries checked, "
        f"{len(report.events)} watched events",
        flush=True,
    )
    return EXIT_OK, new_state


def _print_event(event: Event) -> None:
    print(f"event {event.describe()}", flush=True)


def cmd_witness_key(args: argparse.Namespace) -> int:
    """Generates a witness (cosignature) key into a new file and prints its verifier key."""
    try:
        skey, vkey = generate_signer_key(args.name, COSIGNATURE_V1_TYPE)
    except MalformedKeyError as error:
        print(f"realname log witness-key: {error}", file=sys.stderr)
        return EXIT_USAGE
    path: Path = args.out
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"realname log witness-key: {path} exists; not overwriting it", file=sys.stderr)
        return EXIT_USAGE
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(skey + "\n")
    print(vkey)
    return EXIT_OK


def cmd_cosign(args: argparse.Namespace) -> int:
    """As a witness: cosign the log's checkpoint if it extends the last one, and submit it."""
    try:
        verifier = _log_verifier(args.vkey)
        base = log_url(args.url)
        cosigner = parse_signer_key(args.witness_key.read_text(encoding="ascii").strip())
        if not isinstance(cosigner, CosignatureSigner):
            raise UsageError("--witness-key is not a cosignature (type 0x04) signer key")
        state = WitnessState.load(args.state)
    except (UsageError, MalformedKeyError, OSError, WitnessStateError) as error:
        print(f"realname log cosign: {error}", file=sys.stderr)
        return EXIT_USAGE
    origin = args.origin or verifier.name
    with httpx.Client(timeout=args.timeout) as http:
        try:
            cosigned, new_state = cosign_latest(
                TileClient(HttpFetcher(http, base)),
                origin=origin,
                log_verifier=verifier,
                cosigner=cosigner,
                state=state,
            )
        except InconsistencyError as error:
            print(f"realname log cosign: REFUSED, INCONSISTENT LOG: {error}", file=sys.stderr)
            return EXIT_INCONSISTENT
        except (FetchError, WitnessStateError) as error:
            print(f"realname log cosign: {error}", file=sys.stderr)
            return EXIT_UNREACHABLE
        # Remember before releasing the cosignature, so the witness never vouches for a
        # checkpoint it would not later hold the log to.
        new_state.save(args.state)
        try:
            response = http.post(
                f"{base}/cosign",
                content=cosigned,
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
        except httpx.HTTPError as error:
            print(f"realname log cosign: POST {base}/cosign: {error}", file=sys.stderr)
            return EXIT_UNREACHABLE
    if response.status_code != 200:
        print(
            f"realname log cosign: the log refused the cosignature: HTTP "
            f"{response.status_code} {response.text.strip()}",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    print(f"cosigned {origin} at tree size {new_state.size} as {cosigner.name}")
    return EXIT_OK


def _origin_arg(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--origin", default=None, help=help_text)


def _follow_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", required=True, help="the log's URL, e.g. http://127.0.0.1:8080 (adds /log)"
    )
    parser.add_argument("--vkey", required=True, help="the log's verifier key")
    _origin_arg(parser, "the log's origin (default: the verifier key's name)")
    parser.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout, seconds")


def register(subparsers: SubParsers) -> None:
    """Adds `realname log …` to the realname command's subparsers."""
    sub = command_group(subparsers, "log", "the transparency log: key, monitor, witness")

    p = sub.add_parser("key", help="print the log's verifier key (creating the key)")
    add_data_dir_argument(p)
    _origin_arg(p, f"the log's origin (env REALNAME_LOG_ORIGIN, default {DEFAULT_ORIGIN})")
    p.set_defaults(func=cmd_key)

    p = sub.add_parser("integrate", help="sequence pending entries now")
    add_data_dir_argument(p)
    _origin_arg(p, f"the log's origin (env REALNAME_LOG_ORIGIN, default {DEFAULT_ORIGIN})")
    p.set_defaults(func=cmd_integrate)

    p = sub.add_parser("monitor", help="follow a log, verify it, report watched events")
    _follow_args(p)
    p.add_argument("--state", type=Path, help="file keeping the last verified checkpoint")
    p.add_argument(
        "--watch-store",
        action="append",
        default=[],
        metavar="MARKETPLACE/SHOP|CREDIT_CODE",
        help="report entries about this store (repeatable)",
    )
    p.add_argument(
        "--watch-operator",
        action="append",
        default=[],
        metavar="OPERATOR",
        help="report entries about this operator (repeatable)",
    )
    p.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY",
        help="a trusted witness's verifier key (repeatable)",
    )
    p.add_argument(
        "--witness-threshold",
        type=int,
        default=None,
        help="cosignatures required from the --witness keys (default: all of them)",
    )
    p.add_argument("--once", action="store_true", help="check once and exit")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between checks")
    p.add_argument("--recheck-all", action="store_true", help="re-verify every entry from index 0")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("witness-key", help="generate a witness cosignature key")
    p.add_argument("--name", required=True, help="the witness's key name, e.g. witness.example")
    p.add_argument("--out", type=Path, required=True, help="file for the (secret) signer key")
    p.set_defaults(func=cmd_witness_key)

    p = sub.add_parser("cosign", help="as a witness, cosign the log's checkpoint")
    _follow_args(p)
    p.add_argument("--witness-key", type=Path, required=True, help="the witness's signer key")
    p.add_argument(
        "--state", type=Path, required=True, help="file keeping the last checkpoint cosigned"
    )
    p.set_defaults(func=cmd_cosign)
