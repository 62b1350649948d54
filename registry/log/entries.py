"""Log entries: the authorization events the transparency log records, and their byte encoding.

Every entry is one of the kinds of :class:`EntryKind`. Its encoding is deterministic (one value,
one spelling) and versioned, so that anyone can re-derive the leaf hash
``SHA-256(0x00 || entry)`` from the fields, and refuses anything else on decoding. Big-endian
throughout; in the notation of RFC 8446 section 3::

    struct {
        uint8  version = 1;
        uint8  kind;                 /* EntryKind */
        uint64 time;                 /* milliseconds since 1970-01-01T00:00:00Z */
        select (kind) { ... } body;  /* below; nothing may follow it */
    } LogEntry;

    opaque Text<1..2^8-1>;           /* UTF-8, no control characters */
    opaque Serial<1..20>;            /* positive integer, minimal big-endian (no leading 0x00) */
    opaque Der<1..2^16-1>;           /* a DER certificate */

    struct { Text operator; Text marketplace; Text shop_id; Text credit_code; } Store;

    1 issuance:            Store store; Serial serial; Der certificate;
    2 renewal:             Store store; Serial serial; Serial previous_serial; Der certificate;
    3 revocation:          Store store; Serial serial; uint8 reason;        /* RFC 5280 code */
    4 operator-ca-added:   Text operator; Der certificate;
    5 operator-ca-rotated: Text operator; opaque previous_sha256[32]; Der certificate;
    6 operator-ca-revoked: Text operator; Der certificate; uint8 reason;
    7 audit-digest:        Text label; opaque digest[32];

``time`` is when the event took effect: issuance, renewal, revocation or CA change. The log holds
businesses and certificates only, never subscriber data. A whole entry is at most 65,535 bytes, the
most a C2SP entry bundle can carry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Final, cast

from cryptography import x509
from cryptography.x509.oid import NameOID

from registry.log.errors import EntryTooLargeError, MalformedEntryError
from registry.merkle import leaf_hash
from registry.tiles import MAX_ENTRY_SIZE

ENCODING_VERSION: Final = 1
"""The entry encoding version written and the only one accepted."""

MAX_SERIAL_BYTES: Final = 20
"""Longest certificate serial number, in bytes (RFC 5280 section 4.1.2.2)."""

RFC5280_REASON_CODES: Final = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 10})
"""RFC 5280 CRLReason codes (7 is unassigned)."""

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MILLISECOND: Final = dt.timedelta(milliseconds=1)
_MAX_TIME_MS: Final = (1 << 63) - 1
_DIGEST_SIZE: Final = 32
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")


class EntryKind(IntEnum):
    """What happened: the ``kind`` byte of an encoded entry."""

    ISSUANCE = 1
    RENEWAL = 2
    REVOCATION = 3
    OPERATOR_CA_ADDED = 4
    OPERATOR_CA_ROTATED = 5
    OPERATOR_CA_REVOKED = 6
    AUDIT_DIGEST = 7


@dataclass(frozen=True, slots=True)
class StoreRef:
    """The store an authorization is for: its operator, marketplace shop and credit code."""

    operator: str
    marketplace: str
    shop_id: str
    credit_code: str

    def __post_init__(self) -> None:
        """Refuse fields the encoding cannot carry."""
        for name in ("operator", "marketplace", "shop_id", "credit_code"):
            _check_text(getattr(self, name), name)

    @property
    def shop(self) -> str:
        """``marketplace/shop_id``, the form a store owner watches."""
        return f"{self.marketplace}/{self.shop_id}"


def _normal_time(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise MalformedEntryError("entry time must be timezone-aware")
    utc = value.astimezone(dt.UTC)
    # Milliseconds are what the encoding keeps; truncating here makes decode(encode(e)) == e.
    utc = utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)
    if utc < _EPOCH:
        raise MalformedEntryError("entry time before 1970")
    return utc


class _Entry:
    """Shared behaviour of the entry dataclasses."""

    __slots__ = ()

    KIND: ClassVar[EntryKind]

    @property
    def kind(self) -> EntryKind:
        """The entry's kind."""
        return self.KIND

    def encode(self) -> bytes:
        """Return the entry's canonical encoding."""
        return encode_entry(cast("Entry", self))

    def leaf_hash(self) -> bytes:
        """Return the RFC 6962 leaf hash of the encoded entry."""
        return leaf_hash(self.encode())


@dataclass(frozen=True, slots=True)
class Issuance(_Entry):
    """An operator issued a store authorization certificate."""

    KIND: ClassVar[EntryKind] = EntryKind.ISSUANCE

    time: dt.datetime
    store: StoreRef
    serial: int
    certificate: bytes

    def __post_init__(self) -> None:
        """Normalise the time and refuse fields the encoding cannot carry."""
        object.__setattr__(self, "time", _normal_time(self.time))
        _check_serial(self.serial, "serial")
        _check_der(self.certificate)


@dataclass(frozen=True, slots=True)
class Renewal(_Entry):
    """An operator renewed a store authorization: a new certificate replacing a previous one."""

    KIND: ClassVar[EntryKind] = EntryKind.RENEWAL

    time: dt.datetime
    store: StoreRef
    serial: int
    previous_serial: int
    certificate: bytes

    def __post_init__(self) -> None:
        """Normalise the time and refuse fields the encoding cannot carry."""
        object.__setattr__(self, "time", _normal_time(self.time))
        _check_serial(self.serial, "serial")
        _check_serial(self.previous_serial, "previous serial")
        _check_der(self.certificate)


@dataclass(frozen=True, slots=True)
class Revocation(_Entry):
    """An operator revoked a store authorization; ``time`` is the revocation time."""

    KIND: ClassVar[EntryKind] = EntryKind.REVOCATION

    time: dt.datetime
    store: StoreRef
    serial: int
    reason: int

    def __post_init__(self) -> None:
        """Normalise the time and refuse fields the encoding cannot carry."""
        object.__setattr__(self, "time", _normal_time(self.time))
        _check_serial(self.serial, "serial")
        _check_reason(self.reason)


@dataclass(frozen=True, slots=True)
class OperatorCaAdded(_Entry):
    """The regulator certified an operator's authorization CA."""

    KIND: ClassVar[EntryKind] = EntryKind.OPERATOR_CA_ADDED

    time: dt.datetime
    operator: str
    certificate: bytes

    def __post_init__(self) -> None:
        """Normalise the time and refuse fields the encoding cannot carry."""
        object.__setattr__(self, "time", _normal_time(self.time))
        _check_text(self.operator, "operator")
        _check_der(self.certificate)


@dataclass(frozen=True, slots=True)
class OperatorCaRotated(_Entry):
    """An operator's CA got a new key; ``previous_sha256`` fingerprints the CA it follows."""

    KIND: ClassVar[EntryKind] = EntryKind.OPERATOR_CA_ROTATED

    time: dt.datetime
    operator: str
    previous_sha256: bytes
    certificate: bytes

    def __post_init__(self) -> None:
        """Normalise the time and refuse fields the encoding cannot carry."""
        object.__setattr__(self, "time", _normal_time(self.time))
        _check_text(self.operator, "operator")
        if len(self.previous_sha256) != _DIGEST_SIZE:
            raise MalformedEntryError("previous CA fingerprint must be 32 bytes")
        _check_der(self.certificate)


@dataclass(frozen=True, slots=True)
class OperatorCaRevoked(_Entry):
    """The regulator revoked an operator's CA; ``time`` is the revocation time."""

    KIND: ClassVar[EntryKind] = EntryKind.OPERATOR_CA_REVOKED

    time: dt.datetime
    operator: str
    certificate: bytes
    reason: int

    def __post_init__(self) -> None:
        """Normalise the time and refuse fields the encoding cannot carry."""
        object.__setattr__(self, "time", _normal_time(self.time))
        _check_text(self.operator, "operator")
        _check_der(self.certificate)
        _check_reason(self.reason)


@dataclass(frozen=True, slots=True)
class AuditDigest(_Entry):
    """A SHA-256 digest of some published state (e.g. the public registry), under a label."""

    KIND: ClassVar[EntryKind] = EntryKind.AUDIT_DIGEST

    time: dt.datetime
    label: str
    digest: bytes

    def __post_init__(self) -> None:
        """Normalise the time and refuse fields the encoding cannot carry."""
        object.__setattr__(self, "time", _normal_time(self.time))
        _check_text(self.label, "label")
        if len(self.digest) != _DIGEST_SIZE:
            raise MalformedEntryError("audit digest must be 32 bytes")


Entry = (
    Issuance
    | Renewal
    | Revocation
    | OperatorCaAdded
    | OperatorCaRotated
    | OperatorCaRevoked
    | AuditDigest
)
"""Any log entry."""


def operator_of(entry: Entry) -> str | None:
    """Return the operator an entry concerns (None for audit digests)."""
    if isinstance(entry, Issuance | Renewal | Revocation):
        return entry.store.operator
    if isinstance(entry, AuditDigest):
        return None
    return entry.operator


def store_of(entry: Entry) -> StoreRef | None:
    """Return the store an entry concerns (None for operator-CA events and audit digests)."""
    if isinstance(entry, Issuance | Renewal | Revocation):
        return entry.store
    return None


def certificate_of(entry: Entry) -> bytes | None:
    """Return the certificate DER an entry logs, if it logs one."""
    if isinstance(entry, Revocation | AuditDigest):
        return None
    return entry.certificate


def certificate_sha256(entry: Entry) -> bytes | None:
    """Return the SHA-256 fingerprint of the certificate an entry logs, if it logs one."""
    der = certificate_of(entry)
    return hashlib.sha256(der).digest() if der is not None else None


def store_of_certificate(certificate: bytes, operator: str) -> tuple[StoreRef, int]:
    """Read the store and serial number out of a store authorization certificate.

    The subject layout is the registry's (``registry.pki.issuance.store_subject``): the common
    name is ``marketplace:shop_id`` and the serialNumber attribute the credit code. A monitor uses
    this to check that an entry's summary fields say what its certificate says.
    """
    try:
        parsed = x509.load_der_x509_certificate(certificate)
    except ValueError as error:
        raise MalformedEntryError("certificate is not DER X.509") from error
    common_names = parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    credit_codes = parsed.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if len(common_names) != 1 or len(credit_codes) != 1:
        raise MalformedEntryError("certificate subject lacks a single CN and serialNumber")
    marketplace, colon, shop_id = str(common_names[0].value).partition(":")
    if not colon:
        raise MalformedEntryError("certificate CN is not marketplace:shop_id")
    store = StoreRef(operator, marketplace, shop_id, str(credit_codes[0].value))
    return store, parsed.serial_number


def encode_entry(entry: Entry) -> bytes:
    """Return the canonical encoding of ``entry``."""
    millis = (entry.time - _EPOCH) // _MILLISECOND
    if millis > _MAX_TIME_MS:
        raise MalformedEntryError("entry time too far in the future")
    out = bytearray((ENCODING_VERSION, entry.KIND))
    out += millis.to_bytes(8, "big")
    if isinstance(entry, Issuance):
        _put_store(out, entry.store)
        _put_serial(out, entry.serial)
        _put_der(out, entry.certificate)
    elif isinstance(entry, Renewal):
        _put_store(out, entry.store)
        _put_serial(out, entry.serial)
        _put_serial(out, entry.previous_serial)
        _put_der(out, entry.certificate)
    elif isinstance(entry, Revocation):
        _put_store(out, entry.store)
        _put_serial(out, entry.serial)
        out.append(entry.reason)
    elif isinstance(entry, OperatorCaAdded):
        _put_text(out, entry.operator)
        _put_der(out, entry.certificate)
    elif isinstance(entry, OperatorCaRotated):
        _put_text(out, entry.operator)
        out += entry.previous_sha256
        _put_der(out, entry.certificate)
    elif isinstance(entry, OperatorCaRevoked):
        _put_text(out, entry.operator)
        _put_der(out, entry.certificate)
        out.append(entry.reason)
    else:
        _put_text(out, entry.label)
        out += entry.digest
    if len(out) > MAX_ENTRY_SIZE:
        raise EntryTooLargeError(f"entry is {len(out)} bytes, at most {MAX_ENTRY_SIZE} fit")
    return bytes(out)


def decode_entry(data: bytes) -> Entry:
    """Decode an entry, refusing any bytes ``encode_entry`` would not have produced."""
    if len(data) > MAX_ENTRY_SIZE:
        raise EntryTooLargeError(f"entry is {len(data)} bytes, at most {MAX_ENTRY_SIZE} fit")
    reader = _Reader(data)
    version = reader.u8()
    if version != ENCODING_VERSION:
        raise MalformedEntryError(f"unknown entry encoding version {version}")
    kind_code = reader.u8()
    try:
        kind = EntryKind(kind_code)
    except ValueError:
        raise MalformedEntryError(f"unknown entry kind {kind_code}") from None
    millis = reader.u64()
    if millis > _MAX_TIME_MS:
        raise MalformedEntryError("entry time out of range")
    time = _EPOCH + dt.timedelta(milliseconds=millis)
    entry: Entry
    if kind is EntryKind.ISSUANCE:
        entry = Issuance(time, reader.store(), reader.serial(), reader.der())
    elif kind is EntryKind.RENEWAL:
        entry = Renewal(time, reader.store(), reader.serial(), reader.serial(), reader.der())
    elif kind is EntryKind.REVOCATION:
        entry = Revocation(time, reader.store(), reader.serial(), reader.u8())
    elif kind is EntryKind.OPERATOR_CA_ADDED:
        entry = OperatorCaAdded(time, reader.text("operator"), reader.der())
    elif kind is EntryKind.OPERATOR_CA_ROTATED:
        entry = OperatorCaRotated(
            time, reader.text("operator"), reader.take(_DIGEST_SIZE), reader.der()
        )
    elif kind is EntryKind.OPERATOR_CA_REVOKED:
        entry = OperatorCaRevoked(time, reader.text("operator"), reader.der(), reader.u8())
    else:
        entry = AuditDigest(time, reader.text("label"), reader.take(_DIGEST_SIZE))
    reader.finish()
    return entry


def _check_text(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise MalformedEntryError(f"{what} must be a non-empty string")
    if _CONTROL_RE.search(value):
        raise MalformedEntryError(f"{what} contains control characters")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise MalformedEntryError(f"{what} is not valid Unicode") from error
    if len(encoded) > 0xFF:
        raise MalformedEntryError(f"{what} is longer than 255 bytes")


def _check_serial(value: int, what: str) -> None:
    if not 0 < value < 1 << (8 * MAX_SERIAL_BYTES):
        raise MalformedEntryError(f"{what} must be a positive integer of at most 20 bytes")


def _check_der(value: bytes) -> None:
    if not 0 < len(value) <= 0xFFFF:
        raise MalformedEntryError("certificate DER must be 1 to 65,535 bytes")


def _check_reason(value: int) -> None:
    if value not in RFC5280_REASON_CODES:
        raise MalformedEntryError(f"{value} is not an RFC 5280 CRLReason code")


def _put_text(out: bytearray, value: str) -> None:
    encoded = value.encode("utf-8")
    out.append(len(encoded))
    out += encoded


def _put_store(out: bytearray, store: StoreRef) -> None:
    for value in (store.operator, store.marketplace, store.shop_id, store.credit_code):
        _put_text(out, value)


def _put_serial(out: bytearray, value: int) -> None:
    encoded = value.to_bytes((value.bit_length() + 7) // 8, "big")
    out.append(len(encoded))
    out += encoded


def _put_der(out: bytearray, value: bytes) -> None:
    out += len(value).to_bytes(2, "big")
    out += value


class _Reader:
    """Consumes an encoded entry field by field; every shortfall is a malformed entry."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, count: int) -> bytes:
        end = self._pos + count
        if end > len(self._data):
            raise MalformedEntryError("entry truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def text(self, what: str) -> str:
        raw = self.take(self.u8())
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise MalformedEntryError(f"{what} is not UTF-8") from error
        _check_text(value, what)
        return value

    def store(self) -> StoreRef:
        return StoreRef(
            self.text("operator"),
            self.text("marketplace"),
            self.text("shop_id"),
            self.text("credit_code"),
        )

    def serial(self) -> int:
        length = self.u8()
        if not 1 <= length <= MAX_SERIAL_BYTES:
            raise MalformedEntryError(f"serial length {length} out of range 1..20")
        raw = self.take(length)
        if raw[0] == 0:
            raise MalformedEntryError("serial has a leading zero byte")
        return int.from_bytes(raw, "big")

    def der(self) -> bytes:
        length = int.from_bytes(self.take(2), "big")
        if length == 0:
            raise MalformedEntryError("empty certificate")
        return self.take(length)

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise MalformedEntryError(f"{len(self._data) - self._pos} bytes after the entry")
