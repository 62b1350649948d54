"""Exceptions of the authorization registry's workflow.

Each carries a machine-readable ``reason`` (the ``ErrorInfo.reason`` a service reports) and never
carries key material, passphrases or contact details.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every error the registry workflow raises on purpose."""

    reason = "REGISTRY_ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidRequestError(RegistryError):
    """Raised when request fields are bad regardless of state; lists every (field, problem)."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[tuple[str, str]], *, reason: str | None = None) -> None:
        super().__init__("; ".join(f"{f}: {p}" for f, p in violations), reason=reason)
        self.violations = violations


class NotFoundError(RegistryError):
    """Raised when an application, authorization or CA does not exist."""

    reason = "NOT_FOUND"


class ForbiddenError(RegistryError):
    """Raised when the acting party may not act on this record (another operator's store)."""

    reason = "NOT_YOUR_AUTHORIZATION"


class StateError(RegistryError):
    """Raised when the record's state forbids the step (deny an issued application, ...)."""

    reason = "WRONG_STATE"


class KeysUnavailableError(RegistryError):
    """Raised when a CA private key is needed but its passphrase or key file is not available."""

    reason = "CA_KEYS_UNAVAILABLE"


class ConcurrentUpdateError(RegistryError):
    """Raised when a concurrent transaction changed the same record first; retry the unit."""

    reason = "CONCURRENT_UPDATE"
