"""Shipment token: what a store signs onto a parcel so a courier can check seller and recipient.

Binary encoding, version 2. Big-endian; in the notation of RFC 8446 section 3 (``<a..b>`` is a
one-byte length prefix followed by that many bytes)::

    struct {
        uint8  version = 2;
        opaque order_id<1..64>;       /* UTF-8, printable, no surrounding blanks */
        opaque waybill<1..40>;        /* printable ASCII, no spaces */
        opaque courier<1..32>;        /* courier company id, [a-z0-9][a-z0-9._-]* */
        opaque iccid<19..20>;         /* ASCII digits: 89..., Luhn (ITU-T E.118) */
        opaque msisdn_masked<11..11>; /* "138****1234" */
        opaque operator<2..16>;       /* operator id, as in the store certificate */
        opaque store_serial<1..20>;   /* store certificate serial, minimal big-endian, > 0 */
        uint64 issued_at;             /* Unix seconds */
        uint64 expires_at;            /* Unix seconds, > issued_at */
        uint8  kdf;                   /* recipient commitment KDF: 1 = Argon2id */
        uint32 kdf_memory_kib;        /* its memory, KiB */
        uint8  kdf_iterations;        /* its passes */
        uint8  kdf_parallelism;       /* its lanes */
        opaque salt[16];              /* recipient commitment salt */
        opaque commitment[32];        /* registry.delivery.commitment.commit(...) */
        opaque signature[64];         /* ECDSA P-256 / SHA-256, raw r || s, low-S */
    } ShipmentToken;

The signature is over ``"realname/delivery/shipment-token/v2" || 0x00 || body``, where ``body``
is every byte before the signature (version included): the label keeps a store key's signature
on a token from meaning anything in another protocol. Raw ``r || s`` rather than DER keeps the
signature a fixed 64 bytes (as JWS ES256 and COSE do); ``s`` is normalised to the lower half of
the group order when signing and a high ``s`` is refused when decoding, so a token has exactly
one valid encoding and cannot be re-spelled into a second valid token. Signing is deterministic
(RFC 6979): the same fields give the same token, and a store's weak RNG cannot leak its key.

The KDF parameters are in the token so that they can be raised without a new format; the
decoder refuses a token whose parameters are under the floor, or past what a verifier should
compute, with :class:`~registry.delivery.errors.WeakCommitmentError`
(:func:`registry.delivery.commitment.check_params`).

Version 1 (the same fields without the KDF ones, the commitment a single SHA-256 that a token
holder could reverse by guessing in under a second) is refused with a reason that says so:
tokens live at most :data:`DEFAULT_VALIDITY`, and a store re-signs a parcel's token for the same
card.

Sizes: a typical token is 241 bytes (365 characters of text form), the largest possible 346
(:data:`MAX_TOKEN_SIZE`), within the 1,200-byte budget with room for later fields; the
certificate chain is not in the token (the courier's bundle holds it).

Text form, for the QR code: :data:`TEXT_PREFIX` (which names the text form, not the binary
version: the version is the token's first byte) then base45 (RFC 9285), as EU Digital COVID
Certificates did. The base45 alphabet is the QR alphanumeric set, where two bytes take three
characters at 5.5 bits each (16.5 bits); base64 would force byte mode at 8 bits a character
(21.3 bits for two bytes), 29 % more data bits and a larger symbol. base64url would be the choice
for a URL or JSON, not for a QR code.

Decoding (:func:`decode_token`) is strict and raises a specific
:class:`~registry.delivery.errors.TokenDecodeError` subclass for an unknown version, a truncated
token, trailing bytes, an oversize field, malformed UTF-8 or field syntax, or a non-canonical
signature. It does not verify the signature: :func:`verify_token_signature` does, with the store
certificate found by (operator, store serial).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from registry.delivery.base45 import Base45Error, b45decode, b45encode
from registry.delivery.commitment import (
    COMMITMENT_SIZE,
    DEFAULT_PARAMS,
    SALT_SIZE,
    Kdf,
    KdfParams,
    check_params,
    commit,
    new_salt,
)
from registry.delivery.errors import (
    InvalidShipmentError,
    MalformedFieldError,
    OversizeFieldError,
    TextFormError,
    TokenSignatureError,
    TrailingBytesError,
    TruncatedTokenError,
    UnsupportedVersionError,
    WeakCommitmentError,
)
from registry.pki.errors import InvalidOperatorError, UnsupportedKeyError
from registry.pki.keys import require_p256_public_key
from registry.pki.operators import validate_operator_id
from registry.subscribers import DocumentType, mask_msisdn

TOKEN_VERSION: Final = 2
"""The encoding version written, and the only one accepted."""

OBSOLETE_VERSIONS: Final = frozenset({1})
"""Versions refused with a reason of their own: their recipient commitment can be guessed."""

SIGNING_LABEL: Final = b"realname/delivery/shipment-token/v2\x00"
"""Domain-separation prefix of the signed message."""

SIGNATURE_SIZE: Final = 64
"""Length of the raw ``r || s`` signature."""

TEXT_PREFIX: Final = "RN1:"
"""Prefix of the text (QR) form; all four characters are in the QR alphanumeric set."""

DEFAULT_VALIDITY: Final = dt.timedelta(days=15)
"""Token lifetime by default: as long as a card may wait in PENDING_DELIVERY."""

MAX_ORDER_ID: Final = 64
MAX_WAYBILL: Final = 40
MAX_COURIER: Final = 32
MAX_ICCID: Final = 20
MASKED_MSISDN_SIZE: Final = 11
MAX_OPERATOR: Final = 16
MAX_SERIAL: Final = 20
KDF_PARAMS_SIZE: Final = 1 + 4 + 1 + 1
"""Bytes of the KDF id, memory, iterations and parallelism."""

MAX_TOKEN_SIZE: Final = (
    1
    + (1 + MAX_ORDER_ID)
    + (1 + MAX_WAYBILL)
    + (1 + MAX_COURIER)
    + (1 + MAX_ICCID)
    + (1 + MASKED_MSISDN_SIZE)
    + (1 + MAX_OPERATOR)
    + (1 + MAX_SERIAL)
    + 8
    + 8
    + KDF_PARAMS_SIZE
    + SALT_SIZE
    + COMMITMENT_SIZE
    + SIGNATURE_SIZE
)
"""Largest token this version can encode, in bytes (346)."""

# NIST P-256 group order: r and s live in [1, n); s is canonical when it is at most n // 2.
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HALF_ORDER: Final = _P256_ORDER // 2
_ECDSA: Final = ec.ECDSA(hashes.SHA256())
_ECDSA_DETERMINISTIC: Final = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The last second a datetime can hold: a larger uint64 cannot be a real time.
_MAX_SECONDS: Final = int(
    (dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC) - _EPOCH).total_seconds()
)

_WAYBILL_RE: Final = re.compile(r"[\x21-\x7e]+")
_COURIER_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]*")
_ICCID_RE: Final = re.compile(r"89[0-9]{17,18}")
_MASKED_RE: Final = re.compile(r"1[3-9][0-9]\*{4}[0-9]{4}")
_MSISDN_RE: Final = re.compile(r"1[3-9][0-9]{9}")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, character in enumerate(reversed(digits)):
        value = ord(character) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _masked_msisdn(msisdn: str) -> str:
    if not (_MSISDN_RE.fullmatch(msisdn) or _MASKED_RE.fullmatch(msisdn)):
        raise InvalidShipmentError("MSISDN must be an 11-digit mainland number starting 13-19")
    return mask_msisdn(msisdn)


def _text_problem(value: str, limit: int) -> str | None:
    # isprintable() is False for controls, lone surrogates and separators other than the ASCII
    # space, so what passes it also encodes as UTF-8.
    if not value.isprintable() or value != value.strip():
        return "must be printable text without surrounding blanks"
    if not value or len(value.encode("utf-8")) > limit:
        return f"must be 1-{limit} bytes of UTF-8"
    return None


def _field_problems(fields: ShipmentFields) -> list[str]:
    """Return what is wrong with each field (empty when the fields can be encoded)."""
    problems: list[str] = []
    problem = _text_problem(fields.order_id, MAX_ORDER_ID)
    if problem is not None:
        problems.append(f"order id {problem}")
    if len(fields.waybill) > MAX_WAYBILL or not _WAYBILL_RE.fullmatch(fields.waybill):
        problems.append(f"waybill must be 1-{MAX_WAYBILL} printable ASCII characters, no spaces")
    if len(fields.courier) > MAX_COURIER or not _COURIER_RE.fullmatch(fields.courier):
        problems.append(f"courier must be 1-{MAX_COURIER} characters of a-z, 0-9, '.', '_', '-'")
    if not _ICCID_RE.fullmatch(fields.iccid) or not _luhn_valid(fields.iccid):
        problems.append("ICCID must be 19-20 digits starting 89 with a valid Luhn digit")
    if not _MASKED_RE.fullmatch(fields.msisdn_masked):
        problems.append("masked MSISDN must look like 138****1234")
    try:
        validate_operator_id(fields.operator)
    except InvalidOperatorError as error:
        problems.append(str(error))
    if not 0 < fields.store_serial < 1 << (8 * MAX_SERIAL):
        problems.append(f"store serial must be a positive integer of at most {MAX_SERIAL} bytes")
    if fields.expires_at <= fields.issued_at:
        problems.append("expiry must be after issuance")
    if len(fields.salt) != SALT_SIZE:
        problems.append(f"salt must be {SALT_SIZE} bytes")
    if len(fields.commitment) != COMMITMENT_SIZE:
        problems.append(f"commitment must be {COMMITMENT_SIZE} bytes")
    try:
        check_params(fields.kdf)
    except WeakCommitmentError as error:
        problems.append(str(error))
    return problems


def _whole_utc_seconds(value: dt.datetime, what: str) -> dt.datetime:
    if value.tzinfo is None:
        raise InvalidShipmentError(f"{what} must be timezone-aware")
    utc = value.astimezone(dt.UTC).replace(microsecond=0)
    if not 0 <= (utc - _EPOCH).total_seconds() <= _MAX_SECONDS:
        raise InvalidShipmentError(f"{what} must be after 1970")
    return utc


@dataclass(frozen=True, slots=True)
class ShipmentFields:
    """The signed content of a shipment token; construction refuses what cannot be encoded.

    Times are aware datetimes, kept in UTC at whole seconds (the encoding's resolution).
    """

    order_id: str
    waybill: str
    courier: str
    iccid: str
    msisdn_masked: str
    operator: str
    store_serial: int
    issued_at: dt.datetime
    expires_at: dt.datetime
    salt: bytes
    commitment: bytes
    kdf: KdfParams = DEFAULT_PARAMS

    def __post_init__(self) -> None:
        """Normalise the times and refuse fields the encoding cannot carry."""
        object.__setattr__(self, "issued_at", _whole_utc_seconds(self.issued_at, "issued_at"))
        object.__setattr__(self, "expires_at", _whole_utc_seconds(self.expires_at, "expires_at"))
        problems = _field_problems(self)
        if problems:
            raise InvalidShipmentError("; ".join(problems))


def new_shipment(
    *,
    order_id: str,
    waybill: str,
    courier: str,
    iccid: str,
    msisdn: str,
    operator: str,
    store_serial: int,
    document_type: DocumentType | int,
    document_number: str,
    issued_at: dt.datetime,
    valid_for: dt.timedelta = DEFAULT_VALIDITY,
    kdf: KdfParams = DEFAULT_PARAMS,
) -> ShipmentFields:
    """Return shipment fields committing to the recipient's document under a fresh salt.

    ``msisdn`` may be the full number (it is masked here) or already masked. ``kdf`` is the
    commitment's cost, :data:`~registry.delivery.commitment.DEFAULT_PARAMS` unless raised; one
    under the floor is refused before anything is hashed.
    """
    try:
        check_params(kdf)
    except WeakCommitmentError as error:
        raise InvalidShipmentError(str(error)) from None
    salt = new_salt()
    issued = _whole_utc_seconds(issued_at, "issued_at")
    return ShipmentFields(
        order_id=order_id,
        waybill=waybill,
        courier=courier,
        iccid=iccid,
        msisdn_masked=_masked_msisdn(msisdn),
        operator=operator,
        store_serial=store_serial,
        issued_at=issued,
        expires_at=issued + valid_for,
        salt=salt,
        commitment=commit(document_type, document_number, salt, kdf),
        kdf=kdf,
    )


def _put(out: bytearray, value: bytes) -> None:
    out.append(len(value))
    out += value


def _seconds(moment: dt.datetime) -> int:
    return int((moment - _EPOCH).total_seconds())


def encode_body(fields: ShipmentFields) -> bytes:
    """Return the token bytes before the signature (what the signature covers, after a label)."""
    out = bytearray((TOKEN_VERSION,))
    _put(out, fields.order_id.encode("utf-8"))
    _put(out, fields.waybill.encode("ascii"))
    _put(out, fields.courier.encode("ascii"))
    _put(out, fields.iccid.encode("ascii"))
    _put(out, fields.msisdn_masked.encode("ascii"))
    _put(out, fields.operator.encode("ascii"))
    serial = fields.store_serial
    _put(out, serial.to_bytes((serial.bit_length() + 7) // 8, "big"))
    out += _seconds(fields.issued_at).to_bytes(8, "big")
    out += _seconds(fields.expires_at).to_bytes(8, "big")
    kdf = fields.kdf
    out.append(kdf.kdf)
    out += kdf.memory_kib.to_bytes(4, "big")
    out.append(kdf.iterations)
    out.append(kdf.parallelism)
    out += fields.salt
    out += fields.commitment
    return bytes(out)


def signed_message(body: bytes) -> bytes:
    """Return the message a token's signature is over: the signing label, then ``body``."""
    return SIGNING_LABEL + body


@dataclass(frozen=True, slots=True)
class ShipmentToken:
    """A decoded, not yet verified token: its fields, signature and exact bytes."""

    fields: ShipmentFields
    signature: bytes
    encoded: bytes

    @property
    def body(self) -> bytes:
        """The bytes the signature covers (after the signing label)."""
        return self.encoded[:-SIGNATURE_SIZE]

    @property
    def digest(self) -> bytes:
        """SHA-256 of the body: the shipment's identity, the same for every valid spelling."""
        return hashlib.sha256(self.body).digest()

    @property
    def text(self) -> str:
        """The token's text (QR) form."""
        return encode_text(self.encoded)


def sign_shipment(
    fields: ShipmentFields,
    store_private_key: ec.EllipticCurvePrivateKey,
    *,
    certificate: x509.Certificate | None = None,
) -> bytes:
    """Return the token for ``fields`` signed with the store's authorization key.

    With ``certificate`` (the store's authorization), refuse a key that is not the certificate's,
    a serial that is not its serial, and a token that would outlive it: such a token could only
    ever be refused at the door.
    """
    require_p256_public_key(store_private_key.public_key())
    if certificate is not None:
        _check_against_certificate(fields, store_private_key, certificate)
    body = encode_body(fields)
    der = store_private_key.sign(signed_message(body), _ECDSA_DETERMINISTIC)
    r, s = decode_dss_signature(der)
    if s > _HALF_ORDER:
        s = _P256_ORDER - s
    return body + r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _check_against_certificate(
    fields: ShipmentFields, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate
) -> None:
    point = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    if key.public_key().public_bytes(*point) != certificate.public_key().public_bytes(*point):
        raise InvalidShipmentError("the signing key is not the store certificate's key")
    if certificate.serial_number != fields.store_serial:
        raise InvalidShipmentError("store serial is not the store certificate's serial")
    if fields.expires_at > certificate.not_valid_after_utc:
        raise InvalidShipmentError(
            "token would expire after the store authorization "
            f"({certificate.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}); renew it or shorten validity"
        )


class _Reader:
    """Consumes token bytes field by field; each shortfall or excess is a specific error."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, count: int, what: str) -> bytes:
        end = self._pos + count
        if end > len(self._data):
            raise TruncatedTokenError(f"token ends inside {what}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def field(self, what: str, low: int, high: int) -> bytes:
        length = self.take(1, what)[0]
        if length > high:
            raise OversizeFieldError(f"{what} is {length} bytes, at most {high}")
        if length < low:
            raise MalformedFieldError(f"{what} is {length} bytes, at least {low}")
        return self.take(length, what)

    def text(self, what: str, low: int, high: int) -> str:
        raw = self.field(what, low, high)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedFieldError(f"{what} is not valid UTF-8") from None

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def uint64(self, what: str) -> int:
        return self.uint(8, what)

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise TrailingBytesError(f"{len(self._data) - self._pos} bytes after the signature")


def _time(seconds: int, what: str) -> dt.datetime:
    if seconds > _MAX_SECONDS:
        raise MalformedFieldError(f"{what} is out of range")
    return _EPOCH + dt.timedelta(seconds=seconds)


def _kdf_params(reader: _Reader) -> KdfParams:
    """Read the commitment's KDF parameters; refuse an unknown KDF or a cost off the bounds."""
    kdf_id = reader.uint(1, "KDF")
    memory = reader.uint(4, "KDF memory")
    iterations = reader.uint(1, "KDF iterations")
    parallelism = reader.uint(1, "KDF parallelism")
    try:
        kdf = Kdf(kdf_id)
    except ValueError:
        raise WeakCommitmentError(f"unknown recipient commitment KDF {kdf_id}") from None
    params = KdfParams(kdf, memory, iterations, parallelism)
    check_params(params)
    return params


def decode_token(data: bytes) -> ShipmentToken:
    """Decode token bytes without verifying the signature; raise a ``TokenDecodeError`` if bad."""
    reader = _Reader(bytes(data))
    version = reader.take(1, "version")[0]
    if version in OBSOLETE_VERSIONS:
        raise UnsupportedVersionError(
            f"token version {version} is no longer accepted: its recipient commitment can be "
            f"reversed by guessing; the store must sign a new token (version {TOKEN_VERSION})"
        )
    if version != TOKEN_VERSION:
        raise UnsupportedVersionError(f"unknown token version {version}")
    order_id = reader.text("order id", 1, MAX_ORDER_ID)
    waybill = reader.text("waybill", 1, MAX_WAYBILL)
    courier = reader.text("courier", 1, MAX_COURIER)
    iccid = reader.text("ICCID", 19, MAX_ICCID)
    masked = reader.text("masked MSISDN", MASKED_MSISDN_SIZE, MASKED_MSISDN_SIZE)
    operator = reader.text("operator", 2, MAX_OPERATOR)
    serial_bytes = reader.field("store serial", 1, MAX_SERIAL)
    if serial_bytes[0] == 0:
        raise MalformedFieldError("store serial has a leading zero byte")
    issued_at = _time(reader.uint64("issued_at"), "issued_at")
    expires_at = _time(reader.uint64("expires_at"), "expires_at")
    kdf = _kdf_params(reader)
    salt = reader.take(SALT_SIZE, "salt")
    commitment = reader.take(COMMITMENT_SIZE, "commitment")
    signature = reader.take(SIGNATURE_SIZE, "signature")
    reader.finish()
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < _P256_ORDER and 0 < s <= _HALF_ORDER):
        raise MalformedFieldError("signature is not a canonical (low-S) P-256 signature")
    try:
        fields = ShipmentFields(
            order_id=order_id,
            waybill=waybill,
            courier=courier,
            iccid=iccid,
            msisdn_masked=masked,
            operator=operator,
            store_serial=int.from_bytes(serial_bytes, "big"),
            issued_at=issued_at,
            expires_at=expires_at,
            salt=salt,
            commitment=commitment,
            kdf=kdf,
        )
    except InvalidShipmentError as error:
        raise MalformedFieldError(str(error)) from None
    return ShipmentToken(fields=fields, signature=signature, encoded=bytes(data))


def verify_token_signature(
    token: ShipmentToken, store_certificate: x509.Certificate | ec.EllipticCurvePublicKey
) -> None:
    """Check the token's signature with the store certificate's key; raise if it fails."""
    key = (
        store_certificate.public_key()
        if isinstance(store_certificate, x509.Certificate)
        else store_certificate
    )
    try:
        public_key = require_p256_public_key(key)
    except UnsupportedKeyError as error:
        raise TokenSignatureError(f"store key cannot have signed a token: {error}") from None
    r = int.from_bytes(token.signature[:32], "big")
    s = int.from_bytes(token.signature[32:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), signed_message(token.body), _ECDSA)
    except InvalidSignature:
        raise TokenSignatureError("token signature does not verify with the store's key") from None


def encode_text(token: bytes) -> str:
    """Return the text (QR) form of token bytes: ``RN1:`` and base45."""
    return TEXT_PREFIX + b45encode(token)


def decode_text(text: str) -> bytes:
    """Return the token bytes of a text form; raise ``TextFormError`` if it is not one."""
    if not text.startswith(TEXT_PREFIX):
        raise TextFormError(f"token text must start with {TEXT_PREFIX!r}")
    try:
        return b45decode(text[len(TEXT_PREFIX) :])
    except Base45Error as error:
        raise TextFormError(f"token text is not base45: {error}") from None


def decode_token_text(text: str) -> ShipmentToken:
    """Decode the text form of a token (without verifying it)."""
    return decode_token(decode_text(text))
