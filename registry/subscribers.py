"""Subscriber identifiers every party must read alike: document types, numbers, MSISDN masks.

The bottom layer: the service pseudonymises the normal form of a document number, and the store
and the courier hash the very same string, so the rule lives here once, below ``services/``.
"""

from __future__ import annotations

import enum
import re
from typing import Final

_NUMBER_NOISE: Final = re.compile(r"[\s\-]")
MSISDN_LENGTH: Final = 11


class DocumentType(enum.IntEnum):
    """Identity document kinds, numbered as the ``realname.v1.DocumentType`` proto enum."""

    RESIDENT_ID_CARD = 1
    PASSPORT = 2
    HK_MACAO_PERMIT = 3
    TAIWAN_PERMIT = 4
    FOREIGN_PERMANENT_RESIDENCE = 5


def normalise_number(raw: str) -> str:
    """Strip whitespace and dashes and upper-case: the form every party hashes."""
    return _NUMBER_NOISE.sub("", raw).upper()


def mask_msisdn(msisdn: str) -> str:
    """Mask an MSISDN for display: ``13812341234`` reads ``138****1234``.

    The one masking rule: an 11-character number keeps its first three and last four characters
    (so a number masked already comes back unchanged); anything else is hidden whole, since a
    number of another shape gives no safe part to show. Checking that a number is valid is the
    caller's job, not the mask's.
    """
    if len(msisdn) != MSISDN_LENGTH:
        return "*" * len(msisdn)
    return msisdn[:3] + "****" + msisdn[7:]
