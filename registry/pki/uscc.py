"""Unified social credit code (统一社会信用代码, GB 32100-2015) parsing and validation.

Layout of the 18 characters::

    position  1     registration authority code (登记管理部门代码)
              2     organisation category code within that authority (机构类别代码)
              3-8   administrative division of the registering office (GB/T 2260, 6 digits)
              9-17  subject identifier (主体标识码; the GB 11714 organisation code)
              18    check character over positions 1-17

The alphabet is the 31 characters ``0-9`` and the capitals without I, O, Z, S and V. The check
character is ``31 - (sum(value(c_i) * 3**i mod 31) mod 31)``, with 31 written as ``0``.

The GB 11714 check digit inside positions 9-17 is deliberately not enforced: codes assigned to
individual businesses and to some non-enterprise bodies carry subject identifiers that are not
GB 11714 organisation codes, and rejecting a real, published code is worse than accepting one the
issuing authority vouches for.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from registry.pki.errors import InvalidCreditCodeError
from registry.pki.regions import PROVINCES

ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The 31 characters a credit code may contain, in check-value order."""

WEIGHTS: Final = tuple(pow(3, i, 31) for i in range(17))
"""Weight of each of the first 17 positions: 3**i mod 31."""

_VALUES: Final = {char: value for value, char in enumerate(ALPHABET)}
_ALPHABET_SET: Final = frozenset(ALPHABET)

CATEGORIES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "1": frozenset("1239"),  # institutional establishment: organs, public institutions, ...
        "2": frozenset("19"),  # foreign affairs
        "3": frozenset("123459"),  # justice administration: law firms, notaries, ...
        "4": frozenset("19"),  # culture
        "5": frozenset("1239"),  # civil affairs: social organisations, foundations, ...
        "6": frozenset("129"),  # tourism
        "7": frozenset("129"),  # religious affairs
        "8": frozenset("19"),  # trade unions
        "9": frozenset("123"),  # industry and commerce: enterprises, individual businesses, co-ops
        "A": frozenset("19"),  # Central Military Commission establishment office
        "N": frozenset("1239"),  # agriculture: rural collective economic organisations
        "Y": frozenset("1"),  # other: a single category
    }
)
"""Registration authority code mapped to the category codes defined under it."""

CENTRAL_REGION: Final = "100000"
"""Division code used by central-level registration offices, which have no province."""


@dataclass(frozen=True, slots=True)
class CreditCode:
    """A validated unified social credit code split into its parts."""

    code: str
    registration_authority: str
    category: str
    region: str
    subject_id: str
    check: str

    @property
    def province(self) -> str | None:
        """Two-digit GB/T 2260 province of the registering office, ``None`` for central ones."""
        return None if self.region == CENTRAL_REGION else self.region[:2]

    def __str__(self) -> str:
        return self.code


def check_character(first17: str) -> str:
    """Return the GB 32100-2015 check character for the first 17 characters of a code."""
    if len(first17) != 17:
        raise InvalidCreditCodeError("a credit code check is computed over exactly 17 characters")
    try:
        total = sum(map(operator.mul, map(_VALUES.__getitem__, first17), WEIGHTS))
    except KeyError:
        raise InvalidCreditCodeError(
            f"credit code contains characters outside {ALPHABET!r}"
        ) from None
    return ALPHABET[(31 - total % 31) % 31]


def _checked(code: str) -> str:
    normalised = code.strip().upper()
    if len(normalised) != 18:
        raise InvalidCreditCodeError(
            f"a credit code has 18 characters, this one has {len(normalised)}"
        )
    if not _ALPHABET_SET.issuperset(normalised):
        bad = sorted(set(normalised) - _ALPHABET_SET)
        raise InvalidCreditCodeError(
            f"credit code contains characters outside the GB 32100 alphabet: {''.join(bad)!r}"
        )
    authority, category, region = normalised[0], normalised[1], normalised[2:8]
    categories = CATEGORIES.get(authority)
    if categories is None:
        raise InvalidCreditCodeError(f"unknown registration authority code {authority!r}")
    if category not in categories:
        raise InvalidCreditCodeError(
            f"category {category!r} is not defined for registration authority {authority!r}"
        )
    if not region.isdigit() or (region != CENTRAL_REGION and region[:2] not in PROVINCES):
        raise InvalidCreditCodeError(
            f"region {region!r} is not a six-digit GB/T 2260 division code"
        )
    expected = check_character(normalised[:17])
    if normalised[17] != expected:
        raise InvalidCreditCodeError("credit code check character does not match")
    return normalised


def parse_credit_code(code: str) -> CreditCode:
    """Validate a credit code (blanks around it and letter case ignored) and split it into parts."""
    normalised = _checked(code)
    return CreditCode(
        code=normalised,
        registration_authority=normalised[0],
        category=normalised[1],
        region=normalised[2:8],
        subject_id=normalised[8:17],
        check=normalised[17],
    )


def validate_credit_code(code: str) -> str:
    """Return ``code`` in canonical form (trimmed, upper case) if it is valid, else raise."""
    return _checked(code)


def is_valid_credit_code(code: str) -> bool:
    """Return whether ``code`` is a valid unified social credit code."""
    try:
        _checked(code)
    except InvalidCreditCodeError:
        return False
    return True
