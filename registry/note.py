"""C2SP signed-note with Ed25519 keys, C2SP tlog-cosignature, and k-of-n witness policies.

Wire compatible with golang.org/x/mod/sumdb/note (signer keys ``PRIVATE+KEY+<name>+<hash>+<key>``,
verifier keys ``<name>+<hash>+<key>``) and with transparency-dev witnesses (signature type 0x04).
Parsing is stricter than that reference where it costs nothing to honest peers: base64 must be
canonical, and every signature by a known key is verified, repeated ones included.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Final, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

ED25519_TYPE: Final = 0x01
"""Signature type of plain Ed25519 note signatures."""

COSIGNATURE_V1_TYPE: Final = 0x04
"""Signature type of timestamped Ed25519 witness cosignatures (tlog-cosignature)."""

MAX_SIGNATURES: Final = 100
"""Most signature lines a note may carry before it is refused unread."""

MAX_TIMESTAMP: Final = (1 << 63) - 1
"""Largest cosignature timestamp the spec allows."""

_SIGNATURE_PREFIX: Final = "\u2014 "  # em dash, space
_COSIGNATURE_HEADER: Final = b"cosignature/v1\ntime "
_KEY_HASH_RE: Final = re.compile(r"[0-9a-fA-F]{8}")
_ED25519_KEY_SIZE: Final = 32
_ED25519_SIGNATURE_SIZE: Final = 64
_TIMESTAMP_SIZE: Final = 8
# Characters no text in a note may hold: ASCII controls other than newline.
_CONTROL_RE: Final = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteError(Exception):
    """Base class of every error raised by ``registry.note``."""


class MalformedNoteError(NoteError):
    """Raised when a note's encoding, layout or a signature line is not well-formed."""


class TooManySignaturesError(MalformedNoteError):
    """Raised when a note carries more than ``MAX_SIGNATURES`` signature lines."""


class InvalidSignatureError(NoteError):
    """Raised when a known key's signature on a note does not verify."""

    def __init__(self, name: str, key_hash: int) -> None:
        super().__init__(f"invalid signature by known key {name}+{key_hash:08x}")
        self.name = name
        self.key_hash = key_hash


class UnverifiedNoteError(NoteError):
    """Raised when a well-formed note carries no signature by any known key."""

    def __init__(self, note: Note) -> None:
        super().__init__("note has no signature by a known key")
        self.note = note


class MalformedKeyError(NoteError):
    """Raised when a key, key string or key name is malformed or its key hash does not match."""


class AmbiguousVerifierError(NoteError):
    """Raised when two different keys with the same name and key hash are trusted together."""


class InvalidParameterError(NoteError):
    """Raised when a witness policy threshold or a cosignature timestamp is out of range."""


class InsufficientCosignaturesError(NoteError):
    """Raised when a note carries valid cosignatures from fewer witnesses than a policy needs."""

    def __init__(self, required: int, found: int) -> None:
        super().__init__(f"cosigned by {found} trusted witnesses, policy requires {required}")
        self.required = required
        self.found = found


class Verifier(Protocol):
    """Checks note signatures made by one named key."""

    @property
    def name(self) -> str:
        """Key name as it appears in signature lines."""

    @property
    def key_hash(self) -> int:
        """32-bit key ID as it appears at the front of signatures."""

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Report whether ``signature`` (without the key ID) signs ``message``."""


class Signer(Protocol):
    """Signs notes with one named key."""

    @property
    def name(self) -> str:
        """Key name written in signature lines."""

    @property
    def key_hash(self) -> int:
        """32-bit key ID written at the front of signatures."""

    def sign(self, message: bytes) -> bytes:
        """Return the signature (without the key ID) of ``message``."""


def is_valid_key_name(name: str) -> bool:
    """Report whether ``name`` may name a key: non-empty, no spaces, no '+', no controls."""
    return bool(name) and "+" not in name and not any(c.isspace() or c < " " for c in name)


def key_hash(name: str, signature_type: int, public_key: bytes) -> int:
    """Return the key ID: SHA-256(name || 0x0A || type || public key), first 4 bytes big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([signature_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def format_verifier_key(name: str, public_key: bytes, signature_type: int = ED25519_TYPE) -> str:
    """Encode a verifier key, ``<name>+<hash>+base64(type || public key)``."""
    if not is_valid_key_name(name):
        raise MalformedKeyError(f"invalid key name {name!r}")
    material = bytes([signature_type]) + public_key
    return f"{name}+{key_hash(name, signature_type, public_key):08x}+{_b64(material)}"


@dataclass(frozen=True)
class _Ed25519Verifier:
    """Shared parts of the Ed25519-based verifiers; the key is compared, not the parsed object."""

    SIGNATURE_TYPE: ClassVar[int] = ED25519_TYPE

    name: str
    public_key: bytes
    key_hash: int = field(init=False)
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validate the name and key and derive the key ID."""
        if not is_valid_key_name(self.name):
            raise MalformedKeyError(f"invalid key name {self.name!r}")
        if len(self.public_key) != _ED25519_KEY_SIZE:
            raise MalformedKeyError(f"Ed25519 public key is {len(self.public_key)} bytes")
        try:
            parsed = Ed25519PublicKey.from_public_bytes(self.public_key)
        except ValueError as error:
            raise MalformedKeyError("invalid Ed25519 public key") from error
        object.__setattr__(self, "_key", parsed)
        object.__setattr__(
            self, "key_hash", key_hash(self.name, self.SIGNATURE_TYPE, self.public_key)
        )

    @property
    def verifier_key(self) -> str:
        """The key encoded as a verifier key string."""
        return format_verifier_key(self.name, self.public_key, self.SIGNATURE_TYPE)

    def _verify_ed25519(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != _ED25519_SIGNATURE_SIZE:
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Ed25519Verifier(_Ed25519Verifier):
    """Verifies Ed25519 note signatures (type 0x01) by one named key."""

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Report whether ``signature`` is this key's Ed25519 signature of ``message``."""
        return self._verify_ed25519(message, signature)


@dataclass(frozen=True)
class CosignatureVerifier(_Ed25519Verifier):
    """Verifies a witness's timestamped Ed25519 cosignatures (type 0x04) on checkpoints."""

    SIGNATURE_TYPE: ClassVar[int] = COSIGNATURE_V1_TYPE

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Report whether ``signature`` is this witness's cosignature of note text ``message``."""
        if len(signature) != _TIMESTAMP_SIZE + _ED25519_SIGNATURE_SIZE:
            return False
        timestamp = int.from_bytes(signature[:_TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            return False
        signed = cosigned_message(message, timestamp)
        return self._verify_ed25519(signed, signature[_TIMESTAMP_SIZE:])


def cosigned_message(text: bytes, timestamp: int) -> bytes:
    """Return what a cosignature signs: ``cosignature/v1``, ``time <timestamp>``, the note text."""
    return b"%s%d\n%s" % (_COSIGNATURE_HEADER, timestamp, text)


def _unix_now() -> int:
    return int(time.time())


class _Ed25519KeySigner:
    """Shared parts of the Ed25519-based signers."""

    __slots__ = ("_key", "_key_hash", "_name", "_public_key")

    SIGNATURE_TYPE: ClassVar[int] = ED25519_TYPE

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        """Sign as ``name`` with ``private_key``."""
        if not is_valid_key_name(name):
            raise MalformedKeyError(f"invalid key name {name!r}")
        self._name = name
        self._key = private_key
        self._public_key = private_key.public_key().public_bytes_raw()
        self._key_hash = key_hash(name, self.SIGNATURE_TYPE, self._public_key)

    @property
    def name(self) -> str:
        """Key name written in signature lines."""
        return self._name

    @property
    def key_hash(self) -> int:
        """32-bit key ID written at the front of signatures."""
        return self._key_hash

    @property
    def signer_key(self) -> str:
        """The key encoded as a (secret) signer key string."""
        seed = self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        material = bytes([self.SIGNATURE_TYPE]) + seed
        return f"PRIVATE+KEY+{self._name}+{self._key_hash:08x}+{_b64(material)}"


class Ed25519Signer(_Ed25519KeySigner):
    """Signs notes with an Ed25519 key (type 0x01)."""

    __slots__ = ()

    def verifier(self) -> Ed25519Verifier:
        """Return the verifier for this key."""
        return Ed25519Verifier(self._name, self._public_key)

    def sign(self, message: bytes) -> bytes:
        """Return the Ed25519 signature of ``message``."""
        return self._key.sign(message)


class CosignatureSigner(_Ed25519KeySigner):
    """Produces a witness's timestamped Ed25519 cosignatures (type 0x04)."""

    __slots__ = ("_clock",)

    SIGNATURE_TYPE: ClassVar[int] = COSIGNATURE_V1_TYPE

    def __init__(
        self, name: str, private_key: Ed25519PrivateKey, clock: Callable[[], int] = _unix_now
    ) -> None:
        """Cosign as ``name`` with ``private_key``, stamping times from ``clock`` (Unix seconds)."""
        super().__init__(name, private_key)
        self._clock = clock

    def verifier(self) -> CosignatureVerifier:
        """Return the verifier for this witness key."""
        return CosignatureVerifier(self._name, self._public_key)

    def sign(self, message: bytes) -> bytes:
        """Return the cosignature of note text ``message`` stamped with the clock's time."""
        return self.sign_at(message, self._clock())

    def sign_at(self, message: bytes, timestamp: int) -> bytes:
        """Return the cosignature of note text ``message`` stamped with ``timestamp``."""
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise InvalidParameterError(f"cosignature timestamp {timestamp} out of range")
        signature = self._key.sign(cosigned_message(message, timestamp))
        return timestamp.to_bytes(_TIMESTAMP_SIZE, "big") + signature


def generate_signer_key(name: str, signature_type: int = ED25519_TYPE) -> tuple[str, str]:
    """Generate a new key; return (signer key, verifier key) strings. Keep the first secret."""
    signer = _signer_for_type(name, Ed25519PrivateKey.generate(), signature_type)
    return signer.signer_key, signer.verifier().verifier_key


def parse_signer_key(skey: str) -> Ed25519Signer | CosignatureSigner:
    """Parse ``PRIVATE+KEY+<name>+<hash>+base64(type || seed)``; type 0x04 gives a cosigner."""
    parts = skey.split("+", 4)
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise MalformedKeyError("signer key must start with PRIVATE+KEY+")
    name, hash_text, material = _split_key_fields(parts[2], parts[3], parts[4])
    if len(material) != 1 + _ED25519_KEY_SIZE:
        raise MalformedKeyError("signer key seed must be 32 bytes")
    private_key = Ed25519PrivateKey.from_private_bytes(material[1:])
    signer = _signer_for_type(name, private_key, material[0])
    # The hash covers the public key, so it can only be checked once the seed is expanded.
    if signer.key_hash != int(hash_text, 16):
        raise MalformedKeyError("signer key hash does not match its key")
    return signer


def parse_verifier_key(vkey: str) -> Ed25519Verifier | CosignatureVerifier:
    """Parse ``<name>+<hash>+base64(type || public key)`` for type 0x01 or 0x04."""
    # The base64 key material may itself contain '+', so split at most twice.
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise MalformedKeyError("verifier key must be <name>+<hash>+<key>")
    name, hash_text, material = _split_key_fields(*parts)
    if int(hash_text, 16) != key_hash(name, material[0], material[1:]):
        raise MalformedKeyError("verifier key hash does not match its key")
    if material[0] == ED25519_TYPE:
        return Ed25519Verifier(name, material[1:])
    if material[0] == COSIGNATURE_V1_TYPE:
        return CosignatureVerifier(name, material[1:])
    raise MalformedKeyError(f"unknown verifier key type 0x{material[0]:02x}")


@dataclass(frozen=True)
class Signature:
    """One signature line of a note; ``verifier`` is set once a known key has checked it."""

    name: str
    key_hash: int
    data: bytes
    verifier: Verifier | None = field(default=None, compare=False)

    def line(self) -> str:
        """Return the signature line, ``— <name> base64(key ID || signature)`` and newline."""
        encoded = _b64(self.key_hash.to_bytes(4, "big") + self.data)
        return f"{_SIGNATURE_PREFIX}{self.name} {encoded}\n"


@dataclass(frozen=True)
class Note:
    """An opened note: its text and its signatures, verified and unknown."""

    text: str
    signatures: tuple[Signature, ...] = ()
    unverified_signatures: tuple[Signature, ...] = ()


class VerifierSet:
    """The keys trusted to sign notes, looked up by (name, key hash)."""

    __slots__ = ("_by_id",)

    def __init__(self, verifiers: Iterable[Verifier]) -> None:
        """Trust ``verifiers``; the same key listed twice is kept once."""
        self._by_id: dict[tuple[str, int], Verifier] = {}
        for verifier in verifiers:
            key = (verifier.name, verifier.key_hash)
            known = self._by_id.setdefault(key, verifier)
            if known != verifier:
                raise AmbiguousVerifierError(f"two keys named {key[0]}+{key[1]:08x}")

    def get(self, name: str, key_hash: int) -> Verifier | None:
        """Return the verifier for (name, key hash), or None if that key is unknown."""
        return self._by_id.get((name, key_hash))

    def __iter__(self) -> Iterator[Verifier]:
        """Iterate over the trusted verifiers."""
        return iter(self._by_id.values())

    def __len__(self) -> int:
        """Number of distinct trusted keys."""
        return len(self._by_id)


def sign_note(note: Note | str, *signers: Signer) -> bytes:
    """Sign a text (or re-sign a note, keeping its other signatures) and return the note bytes.

    Existing signatures by the same (name, key hash) as a new signer are replaced.
    """
    if isinstance(note, str):
        note = Note(note)
    text = note.text
    encoded_text = _check_text(text)
    new_ids = {(signer.name, signer.key_hash) for signer in signers}
    lines = [text, "\n"]
    for signature in (*note.signatures, *note.unverified_signatures):
        if (signature.name, signature.key_hash) not in new_ids:
            lines.append(_checked_line(signature))
    for signer in signers:
        signature = Signature(signer.name, signer.key_hash, signer.sign(encoded_text))
        lines.append(_checked_line(signature))
    if len(lines) == 2:
        raise MalformedNoteError("a signed note needs at least one signature")
    if len(lines) - 2 > MAX_SIGNATURES:
        raise TooManySignaturesError(f"more than {MAX_SIGNATURES} signatures")
    return "".join(lines).encode()


def open_note(message: bytes, known: VerifierSet | Iterable[Verifier]) -> Note:
    """Parse a signed note and verify the signatures of ``known`` keys; ignore unknown ones.

    Raises ``InvalidSignatureError`` if any known key's signature fails and
    ``UnverifiedNoteError`` if no known key signed.
    """
    verifiers = known if isinstance(known, VerifierSet) else VerifierSet(known)
    try:
        decoded = message.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedNoteError("note is not valid UTF-8") from error
    if _CONTROL_RE.search(decoded):
        raise MalformedNoteError("note contains control characters")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("note has no blank line before its signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNoteError("note must end with a signature line and newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise TooManySignaturesError(f"note has {len(lines)} signatures, max {MAX_SIGNATURES}")

    encoded_text = text.encode()
    verified: dict[tuple[str, int], Signature] = {}
    unverified: dict[str, Signature] = {}
    for line in lines:
        signature = _parse_signature_line(line)
        verifier = verifiers.get(signature.name, signature.key_hash)
        if verifier is None:
            unverified.setdefault(line, signature)
            continue
        if not verifier.verify(encoded_text, signature.data):
            raise InvalidSignatureError(signature.name, signature.key_hash)
        verified.setdefault(
            (signature.name, signature.key_hash),
            Signature(signature.name, signature.key_hash, signature.data, verifier),
        )
    note = Note(text, tuple(verified.values()), tuple(unverified.values()))
    if not verified:
        raise UnverifiedNoteError(note)
    return note


def cosignature_timestamp(signature: Signature) -> int:
    """Return the Unix time a tlog-cosignature/v1 cosignature was made."""
    if len(signature.data) != _TIMESTAMP_SIZE + _ED25519_SIGNATURE_SIZE:
        raise MalformedNoteError("not a timestamped Ed25519 cosignature")
    return int.from_bytes(signature.data[:_TIMESTAMP_SIZE], "big")


class WitnessPolicy:
    """Requires verified cosignatures from at least ``threshold`` distinct trusted witnesses."""

    __slots__ = ("_threshold", "_witnesses")

    def __init__(self, witnesses: Iterable[Verifier], threshold: int) -> None:
        """Trust ``witnesses`` (a key listed twice counts once); require ``threshold`` of them."""
        self._witnesses = VerifierSet(witnesses)
        if not 1 <= threshold <= len(self._witnesses):
            raise InvalidParameterError(f"threshold {threshold} must be 1..{len(self._witnesses)}")
        self._threshold = threshold

    @property
    def threshold(self) -> int:
        """Number of distinct witnesses required."""
        return self._threshold

    @property
    def witnesses(self) -> VerifierSet:
        """The trusted witness keys; open notes with these among the known verifiers."""
        return self._witnesses

    def check(self, note: Note) -> tuple[Verifier, ...]:
        """Return the witnesses whose verified cosignatures ``note`` carries, if enough do."""
        satisfied: dict[tuple[str, int], Verifier] = {}
        for signature in note.signatures:
            witness = self._witnesses.get(signature.name, signature.key_hash)
            # Only count signatures checked by this very key, not by a look-alike.
            if witness is not None and signature.verifier == witness:
                satisfied[(signature.name, signature.key_hash)] = witness
        if len(satisfied) < self._threshold:
            raise InsufficientCosignaturesError(self._threshold, len(satisfied))
        return tuple(satisfied.values())


def _signer_for_type(
    name: str, private_key: Ed25519PrivateKey, signature_type: int
) -> Ed25519Signer | CosignatureSigner:
    if signature_type == ED25519_TYPE:
        return Ed25519Signer(name, private_key)
    if signature_type == COSIGNATURE_V1_TYPE:
        return CosignatureSigner(name, private_key)
    raise MalformedKeyError(f"unknown signer key type 0x{signature_type:02x}")


def _split_key_fields(name: str, hash_text: str, material_text: str) -> tuple[str, str, bytes]:
    if not is_valid_key_name(name):
        raise MalformedKeyError(f"invalid key name {name!r}")
    if not _KEY_HASH_RE.fullmatch(hash_text):
        raise MalformedKeyError("key hash must be 8 hex digits")
    try:
        material = _b64decode(material_text)
    except ValueError as error:
        raise MalformedKeyError("key material is not canonical base64") from error
    if not material:
        raise MalformedKeyError("empty key material")
    return name, hash_text, material


def _parse_signature_line(line: str) -> Signature:
    if not line.startswith(_SIGNATURE_PREFIX):
        raise MalformedNoteError("signature line must start with an em dash and a space")
    name, space, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
    if not space or not is_valid_key_name(name):
        raise MalformedNoteError(f"malformed signature line {line!r}")
    try:
        raw = _b64decode(encoded)
    except ValueError as error:
        raise MalformedNoteError(f"signature of {name!r} is not canonical base64") from error
    if len(raw) < 5:
        raise MalformedNoteError(f"signature of {name!r} is too short")
    return Signature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def _check_text(text: str) -> bytes:
    if not text.endswith("\n"):
        raise MalformedNoteError("note text must end with a newline")
    if _CONTROL_RE.search(text):
        raise MalformedNoteError("note text contains control characters")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise MalformedNoteError("note text is not valid Unicode") from error


def _checked_line(signature: Signature) -> str:
    if not is_valid_key_name(signature.name):
        raise MalformedNoteError(f"invalid key name {signature.name!r}")
    if not 0 <= signature.key_hash <= 0xFFFFFFFF or not signature.data:
        raise MalformedNoteError(f"malformed signature by {signature.name!r}")
    return signature.line()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str) -> bytes:
    """Decode standard, padded base64, refusing any other spelling of the same bytes."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("invalid base64") from error
    if _b64(data) != text:
        raise ValueError("non-canonical base64")
    return data
