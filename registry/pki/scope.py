"""What a store authorization covers: card types and provinces.

An authorization never covers "everywhere" by omission. An empty province list is refused; selling
nationwide needs the explicit :data:`NATIONWIDE` marker (``"all"``), encoded in the certificate as
its own CHOICE alternative, so a bug that drops the list cannot widen an authorization.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from registry.pki.errors import InvalidAuthorizationError
from registry.pki.regions import PROVINCE_CODES, PROVINCES

NATIONWIDE: Final = "all"
"""Marker accepted in place of a province list for a nationwide authorization."""


class CardType(enum.StrEnum):
    """Kind of mobile card a store may sell."""

    PERSONAL = "personal"
    INDUSTRY = "industry"

    @property
    def code(self) -> int:
        """Integer used for this card type in the certificate extension."""
        return _CARD_TYPE_CODES[self]

    @classmethod
    def from_code(cls, code: int) -> CardType:
        """Return the card type with extension integer ``code``."""
        card_type = _CARD_TYPES_BY_CODE.get(code)
        if card_type is None:
            raise InvalidAuthorizationError(f"unknown card type code {code}")
        return card_type


_CARD_TYPE_CODES: Final = {CardType.PERSONAL: 1, CardType.INDUSTRY: 2}
_CARD_TYPES_BY_CODE: Final = {code: card_type for card_type, code in _CARD_TYPE_CODES.items()}


@dataclass(frozen=True, slots=True)
class Scope:
    """Card types and provinces a store is authorized for; build it with :meth:`of`."""

    card_types: frozenset[CardType]
    provinces: frozenset[str]
    nationwide: bool = False

    def __post_init__(self) -> None:
        if not self.card_types:
            raise InvalidAuthorizationError("a scope needs at least one card type")
        if not all(isinstance(card_type, CardType) for card_type in self.card_types):
            raise InvalidAuthorizationError("scope card types must be CardType values")
        if self.nationwide:
            if self.provinces:
                raise InvalidAuthorizationError("a nationwide scope lists no provinces")
            return
        if not self.provinces:
            raise InvalidAuthorizationError(
                f"a scope lists provinces explicitly or is {NATIONWIDE!r}; empty is refused"
            )
        if not self.provinces <= PROVINCE_CODES:
            unknown = sorted(self.provinces - PROVINCE_CODES)
            raise InvalidAuthorizationError(
                f"not GB/T 2260 province codes: {', '.join(map(repr, unknown))}"
            )

    @classmethod
    def of(
        cls,
        card_types: Iterable[CardType | str],
        provinces: Iterable[str] | Literal["all"],
    ) -> Scope:
        """Build a scope from card type names and province codes, or ``"all"`` for nationwide."""
        try:
            types = frozenset(CardType(card_type) for card_type in card_types)
        except ValueError as exc:
            raise InvalidAuthorizationError(f"unknown card type: {exc}") from exc
        if isinstance(provinces, str):
            if provinces != NATIONWIDE:
                raise InvalidAuthorizationError(
                    f"provinces must be a list of codes or {NATIONWIDE!r}"
                )
            return cls(card_types=types, provinces=frozenset(), nationwide=True)
        return cls(card_types=types, provinces=frozenset(provinces))

    def permits(self, card_type: CardType | None = None, province: str | None = None) -> bool:
        """Return whether selling ``card_type`` in ``province`` is covered (``None``: any)."""
        if province is not None and province not in PROVINCES:
            raise InvalidAuthorizationError(f"not a GB/T 2260 province code: {province!r}")
        if card_type is not None and card_type not in self.card_types:
            return False
        return province is None or self.nationwide or province in self.provinces

    def describe(self) -> str:
        """Return a short human-readable summary such as ``personal,industry@11,31``."""
        types = ",".join(sorted(self.card_types))
        where = NATIONWIDE if self.nationwide else ",".join(sorted(self.provinces))
        return f"{types}@{where}"
