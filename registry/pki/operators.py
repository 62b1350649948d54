"""Operator identifiers: the basic and virtual mobile operators that run authorization CAs."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from registry.pki.errors import InvalidOperatorError


class OperatorKind(enum.IntEnum):
    """Whether an operator owns its network (basic) or resells capacity (virtual, MVNO)."""

    BASIC = 1
    VIRTUAL = 2


KNOWN_OPERATORS: Final[Mapping[str, OperatorKind]] = MappingProxyType(
    {
        "cmcc": OperatorKind.BASIC,
        "cucc": OperatorKind.BASIC,
        "ctcc": OperatorKind.BASIC,
        "vno1": OperatorKind.VIRTUAL,
        "vno2": OperatorKind.VIRTUAL,
    }
)
"""The operators of the demo deployment; other well-formed ids are accepted with a kind given."""

_OPERATOR_ID = re.compile(r"[a-z][a-z0-9-]{1,15}")

# "root" names the regulator's CRL (/crl/root.crl); an operator of that name would shadow it.
_RESERVED: Final = frozenset({"root"})


def validate_operator_id(operator: str) -> str:
    """Return ``operator`` if it is a well-formed id (2-16 of ``a-z0-9-``, a letter first)."""
    if not _OPERATOR_ID.fullmatch(operator) or operator in _RESERVED:
        raise InvalidOperatorError(
            f"operator id {operator!r} must be 2-16 characters of a-z, 0-9 and '-', "
            "start with a letter, and not be reserved"
        )
    return operator


def operator_kind(operator: str) -> OperatorKind:
    """Return the kind of a known operator, raising for an id not in :data:`KNOWN_OPERATORS`."""
    kind = KNOWN_OPERATORS.get(operator)
    if kind is None:
        raise InvalidOperatorError(f"unknown operator {operator!r}; pass its kind explicitly")
    return kind
