"""Who is calling: the authenticated principal, derived from the transport identity."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Role(Enum):
    """The kinds of caller the service knows; the client certificate's OU names one."""

    OPERATOR = "operator"
    MARKETPLACE = "marketplace"
    COURIER = "courier"
    REGULATOR = "regulator"
    CITIZEN_PORTAL = "citizen-portal"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a role and the organisation acting in it."""

    role: Role
    organisation: str

    @property
    def name(self) -> str:
        """The principal's short name, e.g. ``operator-cmcc`` or ``regulator``."""
        if self.organisation == self.role.value:
            return self.role.value
        return f"{self.role.value}-{self.organisation}"

    @classmethod
    def parse(cls, name: str) -> Principal:
        """Parses a short name back into a principal (``operator-cmcc`` → operator, cmcc)."""
        for role in sorted(Role, key=lambda r: -len(r.value)):
            if name == role.value:
                return cls(role, role.value)
            if name.startswith(role.value + "-") and len(name) > len(role.value) + 1:
                return cls(role, name[len(role.value) + 1 :])
        raise ValueError(f"not a principal name: {name!r}")
