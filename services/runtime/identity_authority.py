"""The identity authority: does this name match this document, and is the document valid?

``IdentityAuthority`` is the interface the activation guard calls. Two adapters ship:

* ``ReferenceAuthority`` answers from the local ``identity_records`` table (document pseudonym,
  name hash, status, expiry; never a clear name or number), loaded from an import file signed by
  a configured loader key (``realname proofing load``).
* ``HttpAuthority`` is the shape of a production adapter to the national authority's service:
  one HTTPS POST per question with a socket timeout (REALNAME_IDENTITY_AUTHORITY_URL,
  REALNAME_IDENTITY_AUTHORITY_TIMEOUT).

Whatever the adapter, ``GuardedAuthority`` wraps it with a hard deadline and a circuit breaker,
and fails closed: a slow, failing or open-circuit authority is UNAVAILABLE, never a pass.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from registry.subscribers import DocumentType
from services.domain import validation
from services.domain.attestation import AttestationFormatError, load_public_key, signature_valid
from services.domain.documents import Document
from services.domain.errors import Unavailable, Violations
from services.domain.holder_names import HolderNames, holder_name_problem
from services.domain.pseudonym import Pseudonymizer
from services.runtime.config import ConfigError
from services.storage import proofing_repo as repo
from services.storage.database import Database
from services.storage.rawsql import Tx

AUTHORITY_UNAVAILABLE = "IDENTITY_AUTHORITY_UNAVAILABLE"
IMPORT_FORMAT = "realname-identity-records/v1"
RECORD_STATUSES = ("VALID", "LOST", "STOLEN", "CANCELLED")
MAX_IMPORT_BYTES = 64 * 1024 * 1024


class Verdict(Enum):
    """The authority's answer about a (document, name) pair."""

    MATCH = "MATCH"
    MISMATCH = "MISMATCH"
    UNKNOWN = "UNKNOWN"
    EXPIRED = "EXPIRED"
    LOST = "LOST"
    STOLEN = "STOLEN"
    CANCELLED = "CANCELLED"


class AuthorityError(Exception):
    """Raised by an adapter that could not get an answer (timeout, transport, bad reply)."""


class IdentityAuthority(Protocol):
    """Answers whether a name matches a document number and whether the document is valid."""

    def verify(self, document: Document, name: str, today: dt.date) -> Verdict:
        """The verdict for the pair; raises AuthorityError when no answer could be had."""


class ReferenceAuthority:
    """Answers from the local table of identity records (pseudonyms and name hashes only)."""

    def __init__(self, db: Database, pseudonymizer: Pseudonymizer, names: HolderNames) -> None:
        self._db = db
        self._pseudo = pseudonymizer
        self._names = names

    def verify(self, document: Document, name: str, today: dt.date) -> Verdict:
        """Looks the document up by pseudonym and compares name hashes."""
        key = self._pseudo.document_key(document)

        def work(tx: Tx) -> repo.IdentityRecord | None:
            return repo.identity_record(tx, key)

        record = self._db.run_tx(work, readonly=True)
        if record is None:
            return Verdict.UNKNOWN
        if record.status != "VALID":
            return Verdict(record.status)
        if record.valid_until is not None and record.valid_until < today:
            return Verdict.EXPIRED
        if record.name_hash != self._names.name_hash(name):
            return Verdict.MISMATCH
        return Verdict.MATCH


def _check_url(url: str) -> None:
    """ConfigError unless the URL is https, or http to a loopback host (a local test authority).

    The request carries a name and a document number: in clear only where it cannot leave the
    machine.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme.lower() not in ("https", "http") or not host:
        raise ConfigError(
            f"REALNAME_IDENTITY_AUTHORITY_URL must be an https:// URL with a host, not {url!r}"
        )
    if parts.scheme.lower() == "http" and not _loopback(host):
        raise ConfigError(
            "REALNAME_IDENTITY_AUTHORITY_URL must use https: plain http would send names and "
            f"document numbers in clear (allowed only to loopback hosts), not to {host}"
        )


def _loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpAuthority:
    """A production adapter's shape: POST JSON to the authority's endpoint, read a verdict.

    Request: ``{"document_type": 1, "document_number": "...", "name": "..."}``; reply
    ``{"verdict": "MATCH" | "MISMATCH" | "UNKNOWN" | "EXPIRED" | "LOST" | "STOLEN" |
    "CANCELLED"}``. Anything else, a non-200 status or a timeout is an AuthorityError.
    """

    def __init__(self, url: str, timeout: float, ssl_context: ssl.SSLContext | None = None) -> None:
        _check_url(url)
        self._url = url
        self._timeout = timeout
        self._ssl = ssl_context

    def verify(self, document: Document, name: str, today: dt.date) -> Verdict:
        """One round trip to the authority."""
        body = json.dumps(
            {"document_type": document.type.value, "document_number": document.number, "name": name}
        ).encode()
        request = urllib.request.Request(  # noqa: S310 (scheme checked in __init__)
            self._url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self._timeout, context=self._ssl
            ) as reply:
                answer = json.loads(reply.read(4096))
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the reply's socket
            raise AuthorityError(f"the identity authority answered HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            # The exception text may echo the request; only its type is kept.
            raise AuthorityError(f"identity authority call failed: {type(exc).__name__}") from None
        try:
            return Verdict(answer["verdict"])
        except (KeyError, TypeError, ValueError):
            raise AuthorityError("the identity authority's reply has no valid verdict") from None


@dataclass(frozen=True)
class BreakerSettings:
    """Deadline per call, failures in a row that open the circuit, and how long it stays open."""

    timeout_seconds: float = 2.0
    failures_to_open: int = 5
    open_seconds: float = 30.0


class GuardedAuthority:
    """Deadline and circuit breaker around any adapter; fails closed with UNAVAILABLE."""

    def __init__(
        self,
        inner: IdentityAuthority,
        settings: BreakerSettings | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        max_in_flight: int = 16,
    ) -> None:
        self._inner = inner
        self._settings = settings or BreakerSettings()
        self._monotonic = monotonic
        # Calls stuck past their deadline keep a worker; when all are stuck, new calls time out
        # waiting in the queue, which counts as failures and opens the circuit.
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="identity-authority")
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def circuit_open(self) -> bool:
        """Whether calls are currently refused without trying the authority."""
        with self._lock:
            return self._failures >= self._settings.failures_to_open and (
                self._monotonic() < self._open_until or self._probing
            )

    def _admit(self) -> None:
        with self._lock:
            if self._failures < self._settings.failures_to_open:
                return
            if self._monotonic() < self._open_until or self._probing:
                raise Unavailable(
                    "the identity authority is unavailable (circuit open); retry later",
                    reason=AUTHORITY_UNAVAILABLE,
                    metadata={"circuit": "open"},
                )
            self._probing = True  # half-open: this call is the probe

    def _record(self, ok: bool) -> None:
        with self._lock:
            self._probing = False
            if ok:
                self._failures = 0
                return
            self._failures += 1
            if self._failures >= self._settings.failures_to_open:
                self._open_until = self._monotonic() + self._settings.open_seconds

    def verify(self, document: Document, name: str, today: dt.date) -> Verdict:
        """The inner adapter's verdict within the deadline, else UNAVAILABLE."""
        self._admit()
        future = self._pool.submit(self._inner.verify, document, name, today)
        try:
            verdict = future.result(timeout=self._settings.timeout_seconds)
        except FutureTimeout:
            future.cancel()
            self._record(ok=False)
            raise Unavailable(
                "the identity authority did not answer in time; nothing was written, retry",
                reason=AUTHORITY_UNAVAILABLE,
                metadata={"cause": "timeout"},
            ) from None
        except (AuthorityError, Unavailable) as exc:
            self._record(ok=False)
            raise Unavailable(
                "the identity authority could not be reached; nothing was written, retry",
                reason=AUTHORITY_UNAVAILABLE,
                metadata={"cause": type(exc).__name__},
            ) from None
        self._record(ok=True)
        return verdict

    def close(self) -> None:
        """Stops the worker threads (stuck calls are abandoned)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class ImportRefused(Exception):
    """Raised when an identity-record import file is unsigned, forged or malformed."""


def load_identity_records(
    db: Database,
    pseudonymizer: Pseudonymizer,
    names: HolderNames,
    *,
    data: bytes,
    signature: bytes,
    loader_key_pem: bytes,
    now: dt.datetime,
) -> int:
    """Verifies a signed import file and loads its records in one transaction; returns how many.

    The file is JSON: ``{"format": "realname-identity-records/v1", "source": "...", "records":
    [{"document_type": "RESIDENT_ID_CARD", "number": "...", "name": "...", "status": "VALID",
    "valid_until": "2036-01-01"}]}``; ``signature`` is the loader key's signature over the file's
    exact bytes (Ed25519, or ECDSA P-256 with SHA-256). Only pseudonyms and name hashes are
    stored; a bad record refuses the whole file, naming its index, never its contents.
    """
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportRefused("the import file is too large")
    try:
        key, _algorithm = load_public_key(loader_key_pem)
    except AttestationFormatError as exc:
        raise ImportRefused(f"the loader key is unusable: {exc}") from None
    if not signature_valid(key, data, signature):
        raise ImportRefused("the import file's signature does not verify with the loader key")
    try:
        doc = json.loads(data)
    except ValueError:
        raise ImportRefused("the import file is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != IMPORT_FORMAT:
        raise ImportRefused(f"the import file's format must be {IMPORT_FORMAT}")
    source = doc.get("source")
    records = doc.get("records")
    if not isinstance(source, str) or not 1 <= len(source) <= 64 or not isinstance(records, list):
        raise ImportRefused("the import file needs a source (1-64 characters) and records")
    today = (now + dt.timedelta(hours=8)).date()
    rows: list[tuple[bytes, bytes, str, dt.date | None]] = []
    for index, record in enumerate(records):
        problem = f"record {index}: "
        if not isinstance(record, dict):
            raise ImportRefused(problem + "not an object")
        v = Violations()
        doc_type = str(record.get("document_type", ""))
        known = doc_type in DocumentType.__members__
        type_value = DocumentType[doc_type].value if known else 0
        document = validation.check_document(v, type_value, str(record.get("number", "")), today)
        name = record.get("name")
        status = record.get("status")
        until = record.get("valid_until")
        if document is None or v.items:
            raise ImportRefused(problem + "bad document type or number")
        if not isinstance(name, str) or holder_name_problem(name) is not None:
            raise ImportRefused(problem + "bad name")
        if status not in RECORD_STATUSES:
            raise ImportRefused(problem + f"status must be one of {', '.join(RECORD_STATUSES)}")
        try:
            valid_until = None if until is None else dt.date.fromisoformat(str(until))
        except ValueError:
            raise ImportRefused(problem + "valid_until must be YYYY-MM-DD") from None
        rows.append(
            (pseudonymizer.document_key(document), names.name_hash(name), status, valid_until)
        )

    def work(tx: Tx) -> int:
        for id_key, name_hash, status, valid_until in rows:
            repo.put_identity_record(
                tx,
                id_key,
                name_hash,
                status=status,
                valid_until=valid_until,
                source=source,
                now=now,
            )
        return len(rows)

    return db.run_tx(work)
