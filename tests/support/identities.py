"""Valid test identities: resident ID numbers, MSISDNs and ICCIDs built with real check digits."""

from __future__ import annotations

from services.domain.documents import resident_id_check_char
from services.domain.numbers import luhn_complete


def resident_id(seq: int, region: str = "110105", birth: str = "19900307") -> str:
    """A valid 18-character resident ID; ``seq`` (0..999) picks the sequence code."""
    first17 = f"{region}{birth}{seq % 1000:03d}"
    return first17 + resident_id_check_char(first17)


def msisdn(prefix: str, seq: int) -> str:
    """An 11-digit MSISDN under a segment prefix."""
    return f"{prefix}{seq:0{11 - len(prefix)}d}"


def iccid(seq: int) -> str:
    """A valid 20-digit ICCID (89 86 00 …, Luhn)."""
    return luhn_complete(f"898600{seq:013d}")
