"""Mobile numbers (MSISDN) and SIM serials (ICCID): format checks and masking."""

from __future__ import annotations

import re

_MSISDN = re.compile(r"1[3-9]\d{9}")
_ICCID = re.compile(r"89\d{17,18}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


def msisdn_problem(msisdn: str) -> str | None:
    """Returns why ``msisdn`` is not an 11-digit mainland mobile number, or None."""
    if not _MSISDN.fullmatch(msisdn):
        return "must be an 11-digit mainland mobile number starting with 13-19"
    return None


def luhn_valid(digits: str) -> bool:
    """Checks a Luhn (mod 10) check digit over a string of ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iccid_problem(iccid: str) -> str | None:
    """Returns why ``iccid`` is not an ITU-T E.118 ICCID (89…, 19-20 digits, Luhn), or None."""
    if not _ICCID.fullmatch(iccid):
        return "must be 19-20 digits starting with 89"
    if not luhn_valid(iccid):
        return "the Luhn check digit does not match"
    return None


def luhn_complete(partial: str) -> str:
    """Appends the Luhn check digit to a string of digits (used to make test and demo ICCIDs)."""
    for d in "0123456789":
        if luhn_valid(partial + d):
            return partial + d
    raise AssertionError("unreachable: one digit always completes a Luhn sum")


def request_id_problem(request_id: str) -> str | None:
    """Returns why an idempotency key is unacceptable, or None."""
    if not _REQUEST_ID.fullmatch(request_id):
        return "must be 1-64 characters of letters, digits and . _ : -"
    return None
