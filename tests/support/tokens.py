"""Shipment tokens the encoder refuses to make, signed by a real store key: old and weak ones.

``registry.delivery.token`` only writes version 2 with parameters at or above the floor; to test
that a verifier refuses the others, these helpers re-make a genuine token's bytes and sign them
exactly as a store would (labelled message, deterministic ECDSA, low-S), so that only the
commitment differs from a token that would be accepted.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from registry.delivery.commitment import KdfParams, commit
from registry.delivery.token import SIGNATURE_SIZE, SIGNING_LABEL, decode_token
from registry.subscribers import normalise_number

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
V1_SIGNING_LABEL = b"realname/delivery/shipment-token/v1\x00"
V1_COMMITMENT_LABEL = b"realname/delivery/recipient-commitment/v1\x00"
# Version 2's tail before the signature: KDF id, memory, iterations, parallelism, salt, commitment.
_TAIL = 1 + 4 + 1 + 1 + 16 + 32


def sign_body(body: bytes, key: ec.EllipticCurvePrivateKey, label: bytes = SIGNING_LABEL) -> bytes:
    """Return ``body`` and a store signature over ``label || body``, as ``sign_shipment`` makes."""
    der = key.sign(label + body, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    s = min(s, P256_ORDER - s)
    return body + r.to_bytes(32, "big") + s.to_bytes(32, "big")


def with_params(
    token: bytes,
    key: ec.EllipticCurvePrivateKey,
    params: KdfParams,
    *,
    doc_type: int,
    number: str,
) -> bytes:
    """The token re-made with commitment ``params`` (the commitment recomputed under them)."""
    fields = decode_token(token).fields
    head = token[: -SIGNATURE_SIZE - _TAIL]
    kdf = bytes((params.kdf,)) + params.memory_kib.to_bytes(4, "big")
    kdf += bytes((params.iterations, params.parallelism))
    commitment = commit(doc_type, number, fields.salt, params)
    return sign_body(head + kdf + fields.salt + commitment, key)


def as_version_1(
    token: bytes, key: ec.EllipticCurvePrivateKey, *, doc_type: int, number: str
) -> bytes:
    """The token as version 1 wrote it: no KDF fields, one SHA-256 as the commitment."""
    salt = decode_token(token).fields.salt
    head = b"\x01" + token[1 : -SIGNATURE_SIZE - _TAIL]
    normal = normalise_number(number).encode()
    commitment = hashlib.sha256(V1_COMMITMENT_LABEL + salt + bytes((doc_type,)) + normal).digest()
    return sign_body(head + salt + commitment, key, V1_SIGNING_LABEL)
