"""Hypothesis strategies for hostile protobuf requests, built from message descriptors alone.

Every field gets values that break naive code: huge strings, control characters, NUL, RTL and
zero-width marks, astral characters, non-ASCII digits, invalid UTF-8 in bytes, integer limits,
unknown enum numbers, many repeated entries. Some draws are plausible instead (valid resident
IDs, MSISDNs, ICCIDs, hex serials, a real CSR and certificate) so validation passes and the code
behind it is exercised too. Requests are wrapped in ``Hostile`` so that a falsifying example is
printed with identity numbers and MSISDNs masked and long values cut.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from services.domain.documents import resident_id_check_char
from services.domain.numbers import luhn_complete

MAX_DEPTH = 4
# Sizes of the "huge" strings: past every column width and format limit, below 4 MiB together.
HUGE_SIZES = (257, 4_097, 65_537, 1_000_003)
MANY_ENTRIES = (1_000, 20_000)
STREAM_BYTES = 4 * 1024 * 1024

# Characters that break naive text handling: NUL, C0/C1 controls, bidi overrides, zero-width,
# BOM, line/paragraph separators, the last code points of the BMP and of Unicode.
NASTY_CHARS = (
    "\x00", "\x01", "\x1b", "\x7f", "\x85", "\r", "\n", "\t", "\u200b", "\u200d", "\u200e",
    "\u200f", "\u202a", "\u202e", "\u2066", "\u2069", "\u2028", "\u2029", "\ufeff", "\ufffd",
    "\uffff", "\U0001f4f1", "\U0001d7cf", "\U000e0041", "\U0010ffff", "\u0301", "%", "'", '"',
    "\\", "/", "*", "_", "?", ";",
)  # fmt: skip
# Digit sets other than ASCII that str.isdigit() or int() accept: fullwidth, Arabic-Indic,
# Devanagari, mathematical bold, superscripts.
UNICODE_DIGITS = (
    *("".join(chr(zero + i) for i in range(10)) for zero in (0xFF10, 0x0660, 0x0966, 0x1D7CE)),
    "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079",
)
NASTY_STRINGS = (
    "", " ", "  ", "0", "-1", "null", "None", "NaN", "%s%n%x", "' OR '1'='1",
    "'; DROP TABLE cards;--", "../../etc/passwd", "${jndi:ldap://x}", "<script>alert(1)</script>",
    "\\x00", "\uff2e\uff35\uff2c\uff2c", "\u216b", "\u0130\u0131", "\u00df", "\ufb03",
    "\u202e0002X9491231501011", "-----BEGIN CERTIFICATE-----", "0x", "0X" + "f" * 70,
)  # fmt: skip
INVALID_UTF8 = (
    b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80",
    b"\xe2\x82", b"\xf0\x9f\x98",
)  # fmt: skip

PROVINCES = ("11", "31", "44", "65", "71", "81", "82", "00", "99")
REGIONS = ("110105", "310101", "440305", "650102", "000000", "999999")
PREFIXES = ("138", "186", "133", "1700", "1703", "162", "171", "120", "199")
ORGS = ("cmcc", "cucc", "ctcc", "vno1", "vno2", "demo", "regulator")

_DIGITS = re.compile(r"\d{11,}")


def _resident_id(region: str, birth: dt.date, seq: int) -> str:
    first17 = f"{region}{birth:%Y%m%d}{seq:03d}"
    return first17 + resident_id_check_char(first17)


RESIDENT_IDS = st.builds(
    _resident_id,
    st.sampled_from(REGIONS),
    st.dates(dt.date(1890, 1, 1), dt.date(2030, 12, 31)),
    st.integers(0, 999),
)
MSISDNS = st.builds(
    lambda p, n: p + str(n).zfill(11 - len(p))[: 11 - len(p)],
    st.sampled_from(PREFIXES),
    st.integers(0, 10**8 - 1),
)
ICCIDS = st.integers(0, 10**13 - 1).map(lambda n: luhn_complete(f"898600{n:013d}"))
HEX = st.text("0123456789abcdef", min_size=1, max_size=70)
IDS = st.text("abcXYZ0129._:-", min_size=1, max_size=70)
PLAUSIBLE_TEXT = st.one_of(
    RESIDENT_IDS,
    MSISDNS,
    ICCIDS,
    HEX,
    IDS,
    st.sampled_from(ORGS),
    st.sampled_from(PROVINCES),
    st.sampled_from(("E12345678", "H1234567801", "12345678", "USA123456789012", "shop-0042")),
)


def _unicode_digits(text: str, digits: str) -> str:
    return text.translate(str.maketrans("0123456789", digits))


def _huge(chunk: str, size: int) -> str:
    return (chunk * (size // max(1, len(chunk)) + 1))[:size]


HOSTILE_TEXT = st.one_of(
    PLAUSIBLE_TEXT,
    st.sampled_from(NASTY_STRINGS),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    st.text(st.sampled_from(NASTY_CHARS), min_size=1, max_size=10),
    st.tuples(PLAUSIBLE_TEXT, st.sampled_from(NASTY_CHARS), st.booleans()).map(
        lambda t: t[1] + t[0] if t[2] else t[0] + t[1]
    ),
    st.builds(_unicode_digits, PLAUSIBLE_TEXT, st.sampled_from(UNICODE_DIGITS)),
    st.builds(
        _huge,
        st.one_of(st.sampled_from(("A", "9", "\x00", "\u202e", "\U0001f4f1")), PLAUSIBLE_TEXT),
        st.sampled_from(HUGE_SIZES),
    ),
)


@cache
def _pki_samples() -> tuple[bytes, ...]:
    """A real CSR and a self-signed certificate, PEM and DER, to get past the parsers."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile-shop")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    return (
        csr.public_bytes(pem),
        csr.public_bytes(der),
        cert.public_bytes(pem),
        cert.public_bytes(der),
    )


def _flip(data: bytes, index: int) -> bytes:
    if not data:
        return b"\xff"
    i = index % len(data)
    return data[:i] + bytes([data[i] ^ 0x41]) + data[i + 1 :]


PKI_BYTES = st.builds(lambda: None).flatmap(lambda _: st.sampled_from(_pki_samples()))
HOSTILE_BYTES = st.one_of(
    st.binary(max_size=64),
    PKI_BYTES,
    st.builds(_flip, PKI_BYTES, st.integers(0, 2000)),
    st.sampled_from(INVALID_UTF8),
    st.tuples(PLAUSIBLE_TEXT, st.sampled_from(INVALID_UTF8)).map(lambda t: t[0].encode() + t[1]),
    st.sampled_from(
        (
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            b"-----BEGIN CERTIFICATE REQUEST-----\n",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x80\x00\x00",
            b"\x00" * 32,
        )
    ),
    st.builds(
        lambda b, n: (b * n)[:n], st.binary(min_size=1, max_size=4), st.sampled_from(HUGE_SIZES)
    ),
)

_INT_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_EDGES = (0, 1, -1, 2, 1000, 10**6, 2**31 - 1, 2**31, 2**32 - 1, 2**53 + 1, 2**63 - 1, -(2**31))


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted({e for e in (*_EDGES, low, high, low + 1, high - 1) if low <= e <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _enum(field_desc: FieldDescriptor) -> st.SearchStrategy[int]:
    known = [v.number for v in field_desc.enum_type.values]
    if field_desc.enum_type.is_closed:
        return st.sampled_from(known)
    unknown = st.sampled_from((-1, max(known) + 1, 99, 2**31 - 1, -(2**31)))
    return st.one_of(st.sampled_from(known), unknown, st.integers(-(2**31), 2**31 - 1))


def scalar(field_desc: FieldDescriptor) -> st.SearchStrategy[Any]:
    """Hostile values for one non-message field."""
    kind = field_desc.type
    if kind == FieldDescriptor.TYPE_STRING:
        return HOSTILE_TEXT
    if kind == FieldDescriptor.TYPE_BYTES:
        return HOSTILE_BYTES
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return _enum(field_desc)
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    low, high = _INT_RANGES[kind]
    return _ints(low, high)


def _is_map(field_desc: FieldDescriptor) -> bool:
    return field_desc.message_type is not None and field_desc.message_type.GetOptions().map_entry


def _size(value: Any) -> int:
    if isinstance(value, Message):
        return value.ByteSize()
    return len(value) if isinstance(value, str | bytes) else 8


def _copies(value: Any, count: int) -> list[Any]:
    # Many copies, but no more than about one message limit in total: the point is the count.
    return [value] * max(1, min(count, STREAM_BYTES // (_size(value) + 1)))


def _repeated(element: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    # Mostly short lists; sometimes one element repeated past any sane batch size.
    many = st.tuples(element, st.sampled_from(MANY_ENTRIES)).map(lambda t: _copies(*t))
    return st.one_of(st.lists(element, max_size=5), many)


def _value(field_desc: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field_desc.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(field_desc.message_type, depth + 1)
    return scalar(field_desc)


def _assign(message: Message, field_desc: FieldDescriptor, value: Any) -> None:
    name = field_desc.name
    if _is_map(field_desc):
        target = getattr(message, name)
        value_desc = field_desc.message_type.fields_by_name["value"]
        for key, item in value:
            if value_desc.type == FieldDescriptor.TYPE_MESSAGE:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field_desc.is_repeated:
        getattr(message, name).extend(value)
    elif field_desc.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(message, name).CopyFrom(value)
    else:
        setattr(message, name, value)


@st.composite
def _build(draw: st.DrawFn, descriptor: Descriptor, depth: int) -> Message:
    message = GetMessageClass(descriptor)()
    chosen: list[FieldDescriptor] = []
    for oneof in descriptor.oneofs:
        if len(oneof.fields) > 1 or not oneof.name.startswith("_"):
            pick = draw(st.sampled_from([None, *oneof.fields]))
            if pick is not None:
                chosen.append(pick)
    for field_desc in descriptor.fields:
        real_oneof = field_desc.containing_oneof is not None and (
            len(field_desc.containing_oneof.fields) > 1
            or not field_desc.containing_oneof.name.startswith("_")
        )
        if not real_oneof and draw(st.booleans()):
            chosen.append(field_desc)
    for field_desc in chosen:
        is_message = field_desc.type == FieldDescriptor.TYPE_MESSAGE
        if is_message and depth >= MAX_DEPTH and not _is_map(field_desc):
            continue
        if _is_map(field_desc):
            entry = field_desc.message_type
            key = scalar(entry.fields_by_name["key"])
            item = _value(entry.fields_by_name["value"], depth)
            value = draw(st.lists(st.tuples(key, item), max_size=4))
        elif field_desc.is_repeated:
            value = draw(_repeated(_value(field_desc, depth)))
        else:
            value = draw(_value(field_desc, depth))
        _assign(message, field_desc, value)
    return message


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Hostile instances of the message type ``descriptor`` (nested messages to MAX_DEPTH)."""
    if depth > MAX_DEPTH:
        return st.just(GetMessageClass(descriptor)())
    return _build(descriptor, depth)


_RESIDENT_ID = re.compile(r"(\d{4})\d{10}(\d{3}[0-9Xx])")
_MSISDN = re.compile(r"(1[3-9]\d)\d{4}(\d{4})")


def mask(text: str, limit: int = 80) -> str:
    """A printable, cut, masked form of a value: IDs as 1101**********123X, MSISDNs 138****0000."""
    shown = text if len(text) <= limit else f"{text[:limit]}…<{len(text)} chars>"
    shown = _RESIDENT_ID.sub(r"\1**********\2", shown)
    shown = _MSISDN.sub(r"\1****\2", shown)
    return repr(shown)


def describe(message: Message, indent: str = "") -> str:
    """A short, masked rendering of a message for failure reports."""
    lines = []
    for field_desc, value in message.ListFields():
        values = list(value.items()) if _is_map(field_desc) else value
        if field_desc.is_repeated:
            items = list(values)
            head = ", ".join(_short(field_desc, v, indent) for v in items[:3])
            more = f" …+{len(items) - 3}" if len(items) > 3 else ""
            lines.append(f"{indent}{field_desc.name}: [{head}{more}]")
        else:
            lines.append(f"{indent}{field_desc.name}: {_short(field_desc, value, indent)}")
    return "\n".join(lines) if lines else f"{indent}(empty)"


def _short(field_desc: FieldDescriptor, value: Any, indent: str) -> str:
    if isinstance(value, Message):
        return "{\n" + describe(value, indent + "  ") + "\n" + indent + "}"
    if isinstance(value, tuple):
        return f"{_short(field_desc, value[0], indent)}: {_short(field_desc, value[1], indent)}"
    if isinstance(value, bytes):
        return mask(value.decode("latin-1"))[:-1] + f" ({len(value)} bytes)'"
    if isinstance(value, str):
        return mask(value)
    return repr(value)


class Hostile:
    """One hostile call: its request messages, timeout and metadata (repr masks numbers).

    Not a dataclass: Hypothesis prints dataclasses field by field, in clear.
    """

    def __init__(
        self,
        requests: tuple[Message, ...],
        timeout: float,
        metadata: tuple[tuple[str, str | bytes], ...] = (),
    ) -> None:
        self.requests = requests
        self.timeout = timeout
        self.metadata = metadata

    def __repr__(self) -> str:
        shown = "\n---\n".join(describe(r, "  ") for r in self.requests[:3])
        more = f"\n(+{len(self.requests) - 3} more requests)" if len(self.requests) > 3 else ""
        meta = ", ".join(f"{k}=<{len(v)}>" for k, v in self.metadata)
        return f"Hostile(timeout={self.timeout}, metadata=[{meta}], requests=\n{shown}{more})"

    def sent_text(self) -> set[str]:
        """Digit runs of 11+ characters in the request strings (identity numbers, MSISDNs)."""
        found: set[str] = set()
        for request in self.requests:
            _collect(request, found.update)
        return found


def _collect(message: Message, add: Callable[[list[str]], None]) -> None:
    for field_desc, value in message.ListFields():
        items = value if field_desc.is_repeated else [value]
        for item in items:
            if isinstance(item, Message):
                _collect(item, add)
            elif isinstance(item, str) and len(item) < 4096:
                add(_DIGITS.findall(item))


TIMEOUTS = st.sampled_from((10.0, 10.0, 10.0, 10.0, 0.001))
METADATA = st.one_of(
    st.just(()),
    st.tuples(
        st.tuples(
            st.sampled_from(("x-hostile", "x-realname-principal", "authorization")),
            st.one_of(
                st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
                st.sampled_from((15_000, 16_000, 17_000, 40_000)).map(lambda n: "a" * n),
            ),
        )
    ),
    st.tuples(st.tuples(st.just("x-hostile-bin"), st.binary(max_size=64))),
)


def hostile_calls(descriptor: Descriptor, *, streaming: bool) -> st.SearchStrategy[Hostile]:
    """Hostile calls of a method whose request type is ``descriptor``."""
    one = messages(descriptor)
    requests = (
        st.one_of(
            st.lists(one, min_size=0, max_size=4),
            st.tuples(one, st.sampled_from((50, 300))).map(lambda t: _copies(*t)),
        )
        if streaming
        else one.map(lambda m: [m])
    )
    return _calls(requests, TIMEOUTS, METADATA)


@st.composite
def _calls(
    draw: st.DrawFn,
    requests: st.SearchStrategy[list[Message]],
    timeouts: st.SearchStrategy[float],
    metadata: st.SearchStrategy[tuple[tuple[str, str | bytes], ...]],
) -> Hostile:
    # Composite, not builds(): a falsifying example then prints as Hostile's masked repr.
    return Hostile(tuple(draw(requests)), draw(timeouts), draw(metadata))
