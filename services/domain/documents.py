"""Identity documents: types, normalisation, format checks (GB 11643-1999) and masking."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from registry.subscribers import DocumentType

# GB 11643-1999 / ISO 7064 MOD 11-2.
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS = "10X98765432"
# GB/T 2260 province-level codes: the first two digits of every real region code.
PROVINCE_CODES = frozenset(
    {
        "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
        "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64",
        "65", "71", "81", "82",
    }
)  # fmt: skip
_EARLIEST_BIRTH = dt.date(1900, 1, 1)

_PATTERNS: dict[DocumentType, re.Pattern[str]] = {
    # Chinese passports (E/G + 8 digits, E + letter + 7 digits) and foreign ones (ICAO 9303
    # allows up to 9 characters in the MRZ field; some states use longer numbers in the data page).
    DocumentType.PASSPORT: re.compile(r"[A-Z0-9]{5,17}"),
    # H or M, 8 digits, and a 2-digit renewal count on cards issued since 2013.
    DocumentType.HK_MACAO_PERMIT: re.compile(r"[HM]\d{8}(\d{2})?"),
    # 8 digits on the card permit since 2015; older booklets carry 10 with a letter suffix.
    DocumentType.TAIWAN_PERMIT: re.compile(r"\d{8}|\d{8}[A-Z0-9]{2}"),
    # Old format: 3-letter nationality + 12 digits; since 2023: 18 characters starting with 9.
    DocumentType.FOREIGN_PERMANENT_RESIDENCE: re.compile(r"[A-Z]{3}\d{12}|9\d{16}[0-9X]"),
}


@dataclass(frozen=True)
class Document:
    """A validated, normalised identity document. Never log or persist ``number``."""

    type: DocumentType
    number: str

    def masked(self) -> str:
        """Returns the number with all but its first and last four characters hidden."""
        return mask_document_number(self.number)

    def __repr__(self) -> str:
        return f"Document({self.type.name}, {self.masked()})"

    __str__ = __repr__


def mask_document_number(number: str) -> str:
    """Masks a document number as ``1101**********123X``; short numbers keep less."""
    if len(number) <= 8:
        keep = max(1, len(number) // 4)
        return number[:keep] + "*" * (len(number) - 2 * keep) + number[-keep:]
    return number[:4] + "*" * (len(number) - 8) + number[-4:]


def resident_id_check_char(first17: str) -> str:
    """Computes the GB 11643-1999 check character for the first 17 digits."""
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_CHARS[total % 11]


def resident_id_problem(number: str, today: dt.date) -> str | None:
    """Returns why ``number`` is not a valid resident ID card number, or None if it is."""
    if len(number) != 18:
        return "must be 18 characters"
    if not number[:17].isdigit() or not number[:17].isascii():
        return "the first 17 characters must be digits"
    if number[17] not in "0123456789X":
        return "the check character must be a digit or X"
    if number[:2] not in PROVINCE_CODES:
        return "the region code is not a known province"
    if number[2:6] == "0000":
        return "the region code names no prefecture or county"
    try:
        birth = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return "the birth date is not a real date"
    if birth > today:
        return "the birth date is in the future"
    if birth < _EARLIEST_BIRTH:
        return "the birth date is implausibly early"
    if resident_id_check_char(number[:17]) != number[17]:
        return "the check character does not match (GB 11643-1999)"
    return None


def document_problem(doc_type: DocumentType, number: str, today: dt.date) -> str | None:
    """Returns why a normalised number is not valid for its type, or None."""
    if doc_type is DocumentType.RESIDENT_ID_CARD:
        return resident_id_problem(number, today)
    if not _PATTERNS[doc_type].fullmatch(number):
        return f"is not a valid {doc_type.name.lower().replace('_', ' ')} number"
    return None
