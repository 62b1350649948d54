"""Recipient commitment: a salted, memory-hard hash of the recipient's document.

The store that sells a card knows the buyer's document (it registered the card with it). It puts
into the shipment token, instead of the number, the KDF parameters, a salt and::

    commitment = Argon2id(                      /* RFC 9106, version 0x13 */
        password = "realname/recipient-commitment/v2" || 0x00
                   || uint8 document_type       /* realname.v1.DocumentType number */
                   || UTF-8(normalise_number(number)),
        salt = salt,                            /* 16 random bytes, also in the token */
        memory = memory_kib KiB, iterations, parallelism,
        tag length = 32, no secret, no associated data)

Every part before the number has a fixed length, so the password is unambiguous; the label
separates this hash from every other in the system. The parameters travel in the token
(:class:`KdfParams`), so they can be raised without a new token format. At the door the courier
app recomputes the hash from the document the recipient shows and compares in constant time; the
token never holds the number. The same inputs are expressible in the npm ``hash-wasm`` package's
``argon2id`` (memorySize in KiB, iterations, parallelism, hashLength 32), for a browser check;
tests/vectors/recipient-commitment.json holds answers it reproduces.

Why memory-hard: a resident ID number has little entropy once the region (on the parcel's
address) and the birth year are known: about 71,667 candidates (issue 14's count). Version 1
hashed them with one SHA-256 each, under a second for the whole search. With
:data:`DEFAULT_PARAMS` each guess costs what the door check costs (about 50 ms and 19 MiB on the
project's server, see docs/performance.md), so that search takes about an hour of one core per
token instead of a fraction of a second, and the memory each guess needs blunts GPUs. Guessing is
made expensive, not impossible: token bytes are still personal data.

:data:`FLOOR` is the weakest parameter set a token may carry; :func:`check_params` refuses weaker
ones (and ones past :data:`MAX_MEMORY_KIB` / :data:`MAX_WORK`, which would let a token make its
verifier allocate or compute without bound). The token decoder and :func:`new_shipment
<registry.delivery.token.new_shipment>` both apply it; :func:`commit` itself takes any
parameters Argon2 accepts, so a unit test can exercise the layout cheaply.
"""

from __future__ import annotations

import enum
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from registry.delivery.errors import InvalidDocumentError, WeakCommitmentError
from registry.subscribers import DocumentType, normalise_number

COMMITMENT_LABEL: Final = b"realname/recipient-commitment/v2\x00"
"""Domain-separation prefix of the hashed password."""

SALT_SIZE: Final = 16
"""Length in bytes of the random salt."""

COMMITMENT_SIZE: Final = 32
"""Length in bytes of a commitment (the Argon2id tag)."""

MAX_NUMBER_LENGTH: Final = 64
"""Longest normalised document number accepted, in characters (real ones are under 20)."""


class Kdf(enum.IntEnum):
    """The password hash a commitment is made with; the number is its byte in the token."""

    ARGON2ID = 1
    """Argon2id, RFC 9106, version 0x13."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Which KDF a commitment uses and its cost: memory in KiB, passes, lanes."""

    kdf: Kdf
    memory_kib: int
    iterations: int
    parallelism: int

    def __str__(self) -> str:
        return (
            f"{self.kdf.name.lower()} m={self.memory_kib} KiB t={self.iterations} "
            f"p={self.parallelism}"
        )


DEFAULT_PARAMS: Final = KdfParams(Kdf.ARGON2ID, memory_kib=19_456, iterations=4, parallelism=1)
"""What a store signs with: 19 MiB (OWASP's Argon2id memory), 4 passes, 1 lane (≈50 ms here)."""

FLOOR: Final = DEFAULT_PARAMS
"""The weakest parameters a token may carry: memory and passes each at least these."""

MAX_MEMORY_KIB: Final = 262_144
"""Most memory a token may ask its verifier for (256 MiB): a phone must be able to check it."""

MAX_WORK: Final = 1_048_576
"""Most memory x passes (KiB) a token may ask for: about 13 x the default, under a second here."""

MAX_PARALLELISM: Final = 4
"""Most lanes a token may name (a lane count changes no guess cost; phones have few cores)."""


def check_params(params: KdfParams) -> None:
    """Raise ``WeakCommitmentError`` for parameters under :data:`FLOOR` or past the ceilings."""
    if params.kdf is not FLOOR.kdf:
        raise WeakCommitmentError(f"recipient commitment must use {FLOOR.kdf.name.lower()}")
    if params.memory_kib < FLOOR.memory_kib or params.iterations < FLOOR.iterations:
        raise WeakCommitmentError(
            f"recipient commitment parameters ({params}) are under the floor "
            f"(m={FLOOR.memory_kib} KiB, t={FLOOR.iterations})"
        )
    if not 1 <= params.parallelism <= MAX_PARALLELISM:
        raise WeakCommitmentError(f"recipient commitment parallelism must be 1-{MAX_PARALLELISM}")
    if params.memory_kib > MAX_MEMORY_KIB or params.memory_kib * params.iterations > MAX_WORK:
        raise WeakCommitmentError(
            f"recipient commitment parameters ({params}) are past what a verifier computes "
            f"(m <= {MAX_MEMORY_KIB} KiB, m x t <= {MAX_WORK})"
        )


def document_type(value: DocumentType | int) -> DocumentType:
    """Return ``value`` as a :class:`DocumentType`, raising ``InvalidDocumentError`` if unknown."""
    try:
        return DocumentType(value)
    except ValueError:
        raise InvalidDocumentError(f"unknown document type {value!r}") from None


def _normalised(number: str) -> bytes:
    normal = normalise_number(number)
    if not normal:
        raise InvalidDocumentError("document number is empty")
    if len(normal) > MAX_NUMBER_LENGTH:
        raise InvalidDocumentError(f"document number is longer than {MAX_NUMBER_LENGTH}")
    if not normal.isprintable():
        raise InvalidDocumentError("document number contains non-printable characters")
    return normal.encode("utf-8")


def validate_document(doc_type: DocumentType | int, number: str) -> DocumentType:
    """Return the document type once (type, number) is known to be committable; else raise."""
    kind = document_type(doc_type)
    _normalised(number)
    return kind


def new_salt() -> bytes:
    """Return a fresh random salt from the operating system's CSPRNG."""
    return secrets.token_bytes(SALT_SIZE)


def commit(doc_type: DocumentType | int, number: str, salt: bytes, params: KdfParams) -> bytes:
    """Return the commitment to document (``doc_type``, ``number``) under ``salt``, ``params``.

    The one implementation: the store signing a token, the courier at the door, the offline
    queue and the online service all call it.
    """
    kind = document_type(doc_type)
    if len(salt) != SALT_SIZE:
        raise InvalidDocumentError(f"salt must be {SALT_SIZE} bytes, got {len(salt)}")
    password = COMMITMENT_LABEL + bytes((kind,)) + _normalised(number)
    try:
        kdf = Argon2id(
            salt=salt,
            length=COMMITMENT_SIZE,
            iterations=params.iterations,
            lanes=params.parallelism,
            memory_cost=params.memory_kib,
        )
    except ValueError as error:  # a cost Argon2 itself refuses (m < 8 p, t < 1)
        raise WeakCommitmentError(f"bad recipient commitment parameters: {error}") from None
    return kdf.derive(password)


def matches(
    commitment: bytes,
    salt: bytes,
    params: KdfParams,
    doc_type: DocumentType | int,
    presented: str,
) -> bool:
    """Return whether the presented document is the committed one (constant-time compare).

    Raises ``InvalidDocumentError`` for a presented document that is not one (unknown type, empty
    number): that is bad input, not a mismatch.
    """
    if len(commitment) != COMMITMENT_SIZE:
        raise InvalidDocumentError(f"commitment must be {COMMITMENT_SIZE} bytes")
    return hmac.compare_digest(commit(doc_type, presented, salt, params), commitment)
