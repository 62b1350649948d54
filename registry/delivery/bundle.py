"""The courier's offline trust bundle: PKI, log checkpoint, and the logged store certificates.

A courier app downloads one of these at least daily (``realname bundle export`` writes it) and
checks shipment tokens against it with no network. It holds:

* the seller-authorization :class:`~registry.pki.bundle.TrustBundle`: regulator root, operator
  CAs, current CRLs;
* the transparency log's latest checkpoint as a signed note (with any witness cosignatures), the
  log's origin and verifier key(s), and optionally witness keys with a k-of-n threshold;
* the store certificates the courier may meet, each as its log entry (the issuance or renewal
  entry of :mod:`registry.log.entries`, which carries the certificate DER) with its RFC 6962
  inclusion proof (leaf index, proof hashes) against that one checkpoint;
* ``issued_at`` and ``max_age`` (default 24 h).

Where the certificates and proofs live: in the bundle, not the token. A store certificate is
700-900 bytes of DER and its entry and proof another 700 or so, which would not leave a token
under the 1,200-byte QR budget; and a proof carried by a token would be against whatever
checkpoint the store saw, which the courier could only trust with a consistency proof to its own
checkpoint, i.e. with the bundle anyway. In the bundle, every proof is against the checkpoint the
courier verified once, and the certificate is found by the (operator, serial) the token names.
The exporter chooses which stores to include (for instance those with shipments pending for this
courier company); a token from a store not in the bundle gets ``SELLER_NOT_AUTHORIZED``.

The bundle is not signed as a whole: each part verifies on its own (CRLs and operator CAs by the
root, the checkpoint by the log key, every certificate by its operator CA and its proof by the
checkpoint). The anchors, the root certificate and the log key, are taken from the bundle, so it
must come from a trusted channel (the service, over mTLS) or be checked against pins
(:class:`~registry.delivery.offline.OfflineVerifier` accepts a root fingerprint and log keys).

JSON, versioned::

    {
      "format": "realname-delivery-bundle",
      "version": 1,
      "issued_at": "2025-06-01T08:00:00Z",
      "max_age_seconds": 86400,
      "trust": { ...a realname-trust-bundle document... },
      "log": {
        "origin": "realname.example/log",
        "verifier_keys": ["realname.example/log+1a2b3c4d+AQ..."],
        "checkpoint": "realname.example/log\\n42\\n<base64 root>\\n\\n\\u2014 ...\\n",
        "witness_keys": ["witness.example+...+BA..."],
        "witness_threshold": 1
      },
      "stores": [
        {"entry": "<base64 log entry>", "leaf_index": 7, "proof": ["<base64 hash>", ...]}
      ]
    }

The bundle is fresh until :attr:`DeliveryBundle.fresh_until`: ``issued_at + max_age``, or earlier
if one of its CRLs reaches its ``nextUpdate`` first (revocation answers cannot be given past it,
so an exporter should re-sign CRLs to last at least ``max_age``). Loading checks structure only;
signatures and proofs are checked, once, by :class:`~registry.delivery.offline.OfflineVerifier`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeGuard, TypeVar

from cryptography import x509

from registry.delivery.errors import DeliveryBundleError
from registry.log.entries import Issuance, Renewal, decode_entry
from registry.log.errors import MalformedEntryError
from registry.merkle import HASH_SIZE, MAX_TREE_SIZE
from registry.note import (
    NoteError,
    Verifier,
    WitnessPolicy,
    parse_verifier_key,
)
from registry.pki.bundle import TrustBundle
from registry.pki.errors import PkiError

BUNDLE_FORMAT: Final = "realname-delivery-bundle"
"""Value of the ``format`` member of a serialised delivery bundle."""

BUNDLE_VERSION: Final = 1
"""Value of the ``version`` member this code writes and reads."""

DEFAULT_MAX_AGE: Final = dt.timedelta(hours=24)
"""How long a bundle is fresh after it was issued, unless it says otherwise."""

_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class LoggedCertificate:
    """A store certificate's log entry and its inclusion proof against the bundle's checkpoint.

    ``entry`` is the encoded issuance or renewal entry; ``certificate``, ``operator`` and
    ``serial`` are read out of it.
    """

    entry: bytes
    leaf_index: int
    proof: tuple[bytes, ...]
    certificate: x509.Certificate = field(init=False, compare=False)
    operator: str = field(init=False, compare=False)
    serial: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        """Decode the entry and its certificate; refuse a proof that cannot be one."""
        try:
            decoded = decode_entry(self.entry)
        except MalformedEntryError as error:
            raise DeliveryBundleError(f"store entry is not a log entry: {error}") from None
        if not isinstance(decoded, Issuance | Renewal):
            raise DeliveryBundleError(
                f"store entry is a {decoded.kind.name.lower()} entry, not an issuance or renewal"
            )
        try:
            certificate = x509.load_der_x509_certificate(decoded.certificate)
        except ValueError as error:
            raise DeliveryBundleError(f"logged certificate is not DER X.509: {error}") from None
        if certificate.serial_number != decoded.serial:
            raise DeliveryBundleError("log entry serial differs from its certificate's serial")
        if not 0 <= self.leaf_index < MAX_TREE_SIZE:
            raise DeliveryBundleError(f"leaf index {self.leaf_index} out of range")
        proof = tuple(self.proof)
        if any(len(node) != HASH_SIZE for node in proof):
            raise DeliveryBundleError(f"inclusion proof hashes must be {HASH_SIZE} bytes")
        object.__setattr__(self, "proof", proof)
        object.__setattr__(self, "certificate", certificate)
        object.__setattr__(self, "operator", decoded.store.operator)
        object.__setattr__(self, "serial", decoded.serial)


def _revocation_horizon(trust: TrustBundle) -> dt.datetime | None:
    newest: dict[bytes, tuple[int, dt.datetime | None]] = {}
    for crl in trust.crls:
        try:
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            number = -1
        issuer = crl.issuer.public_bytes()
        if issuer not in newest or number > newest[issuer][0]:
            newest[issuer] = (number, crl.next_update_utc)
    updates = [next_update for _, next_update in newest.values() if next_update is not None]
    return min(updates) if updates else None


def _parse_keys(keys: Iterable[str], what: str) -> tuple[Verifier, ...]:
    parsed: list[Verifier] = []
    for key in keys:
        try:
            parsed.append(parse_verifier_key(key))
        except NoteError as error:
            raise DeliveryBundleError(f"{what} {key!r} is malformed: {error}") from None
    return tuple(parsed)


def _utc_seconds(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise DeliveryBundleError("bundle times must be timezone-aware")
    return value.astimezone(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class DeliveryBundle:
    """Everything a courier needs offline, as one immutable value; see the module docstring."""

    trust: TrustBundle
    log_origin: str
    log_keys: tuple[str, ...]
    checkpoint: bytes
    issued_at: dt.datetime
    max_age: dt.timedelta = DEFAULT_MAX_AGE
    stores: tuple[LoggedCertificate, ...] = ()
    witness_keys: tuple[str, ...] = ()
    witness_threshold: int = 0
    # Derived from the CRLs once: reading CRL extensions costs ~100 us, too much per token.
    _horizon: dt.datetime | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Normalise collections and times; refuse a structurally impossible bundle."""
        object.__setattr__(self, "_horizon", _revocation_horizon(self.trust))
        object.__setattr__(self, "log_keys", tuple(self.log_keys))
        object.__setattr__(self, "stores", tuple(self.stores))
        object.__setattr__(self, "witness_keys", tuple(self.witness_keys))
        object.__setattr__(self, "issued_at", _utc_seconds(self.issued_at))
        if not self.log_keys:
            raise DeliveryBundleError("a delivery bundle needs at least one log verifier key")
        _parse_keys(self.log_keys, "log verifier key")
        if self.max_age <= dt.timedelta(0):
            raise DeliveryBundleError("max_age must be positive")
        if self.witness_keys or self.witness_threshold:
            self.witness_policy()
        seen: set[tuple[str, int]] = set()
        for logged in self.stores:
            key = (logged.operator, logged.serial)
            if key in seen:
                raise DeliveryBundleError(
                    f"store certificate {logged.operator}/{logged.serial:x} is listed twice"
                )
            seen.add(key)

    def log_verifiers(self) -> tuple[Verifier, ...]:
        """Return the parsed log verifier keys."""
        return _parse_keys(self.log_keys, "log verifier key")

    def witness_policy(self) -> WitnessPolicy | None:
        """Return the k-of-n witness policy, or ``None`` when no witnesses are required."""
        if not self.witness_keys and not self.witness_threshold:
            return None
        witnesses = _parse_keys(self.witness_keys, "witness key")
        try:
            return WitnessPolicy(witnesses, self.witness_threshold)
        except NoteError as error:
            raise DeliveryBundleError(f"witness policy is invalid: {error}") from None

    @property
    def expires_at(self) -> dt.datetime:
        """``issued_at + max_age``: when the bundle becomes stale by its own age."""
        return self.issued_at + self.max_age

    @property
    def revocation_horizon(self) -> dt.datetime | None:
        """The earliest ``nextUpdate`` among the newest CRL of each issuer (None: no CRLs)."""
        return self._horizon

    @property
    def fresh_until(self) -> dt.datetime:
        """The last moment the bundle is fresh: its expiry, or its CRLs' horizon if earlier."""
        horizon = self.revocation_horizon
        return self.expires_at if horizon is None else min(self.expires_at, horizon)

    def is_stale(self, at: dt.datetime) -> bool:
        """Return whether the bundle is stale at ``at``."""
        return at > self.fresh_until

    def to_json(self) -> bytes:
        """Serialise the bundle as UTF-8 JSON."""
        document = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "issued_at": self.issued_at.strftime(_TIME_FORMAT),
            "max_age_seconds": int(self.max_age.total_seconds()),
            "trust": json.loads(self.trust.to_json()),
            "log": {
                "origin": self.log_origin,
                "verifier_keys": list(self.log_keys),
                "checkpoint": self.checkpoint.decode("utf-8"),
                "witness_keys": list(self.witness_keys),
                "witness_threshold": self.witness_threshold,
            },
            "stores": [
                {
                    "entry": _b64(logged.entry),
                    "leaf_index": logged.leaf_index,
                    "proof": [_b64(node) for node in logged.proof],
                }
                for logged in self.stores
            ],
        }
        return json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes | str) -> DeliveryBundle:
        """Parse a bundle serialised by :meth:`to_json` (structure only, no signatures)."""
        try:
            document: Any = json.loads(data)
        except ValueError as error:
            raise DeliveryBundleError(f"delivery bundle is not JSON: {error}") from None
        if not isinstance(document, dict):
            raise DeliveryBundleError("delivery bundle must be a JSON object")
        if document.get("format") != BUNDLE_FORMAT:
            raise DeliveryBundleError(f"not a {BUNDLE_FORMAT} document")
        if document.get("version") != BUNDLE_VERSION:
            raise DeliveryBundleError(
                f"unsupported delivery bundle version {document.get('version')!r}"
            )
        log = _member(document, "log", dict)
        try:
            trust = TrustBundle.from_json(json.dumps(_member(document, "trust", dict)))
        except PkiError as error:
            raise DeliveryBundleError(f"trust part: {error}") from None
        stores = []
        for item in _member(document, "stores", list):
            if not isinstance(item, dict):
                raise DeliveryBundleError("each store must be a JSON object")
            proof = _member(item, "proof", list)
            if not _is_str_list(proof):
                raise DeliveryBundleError("store 'proof' must be a list of base64 strings")
            stores.append(
                LoggedCertificate(
                    entry=_unb64(_member(item, "entry", str), "store entry"),
                    leaf_index=_member(item, "leaf_index", int),
                    proof=tuple(_unb64(node, "proof hash") for node in proof),
                )
            )
        log_keys = _member(log, "verifier_keys", list)
        witness_keys = log.get("witness_keys", [])
        if not _is_str_list(log_keys) or not _is_str_list(witness_keys):
            raise DeliveryBundleError("log keys must be lists of strings")
        issued_text = _member(document, "issued_at", str)
        try:
            issued_at = dt.datetime.strptime(issued_text, _TIME_FORMAT).replace(tzinfo=dt.UTC)
        except ValueError:
            raise DeliveryBundleError(f"issued_at {issued_text!r} is not {_TIME_FORMAT}") from None
        max_age = _member(document, "max_age_seconds", int)
        threshold = log.get("witness_threshold", 0)
        if not isinstance(threshold, int) or isinstance(threshold, bool):
            raise DeliveryBundleError("'witness_threshold' must be an integer")
        return cls(
            trust=trust,
            log_origin=_member(log, "origin", str),
            log_keys=tuple(log_keys),
            checkpoint=_member(log, "checkpoint", str).encode("utf-8"),
            issued_at=issued_at,
            max_age=dt.timedelta(seconds=max_age),
            stores=tuple(stores),
            witness_keys=tuple(witness_keys),
            witness_threshold=threshold,
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the bundle to ``path`` atomically (a reader sees the old or the new bundle)."""
        target = Path(path)
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(self.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DeliveryBundle:
        """Read a bundle written by :meth:`save`."""
        return cls.from_json(Path(path).read_bytes())


def _member(document: dict[str, Any], name: str, kind: type[_T]) -> _T:
    value = document.get(name)
    # bool is an int in Python; JSON true is never a valid count or index here.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DeliveryBundleError(f"delivery bundle member {name!r} must be a {kind.__name__}")
    return value


def _is_str_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DeliveryBundleError(f"{what} is not base64") from None
    if _b64(data) != text:
        raise DeliveryBundleError(f"{what} is not canonical base64")
    return data
