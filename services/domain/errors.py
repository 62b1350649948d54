"""Domain errors: what went wrong, in terms a transport can map to a status without parsing text.

Domain code raises these; the gRPC layer turns them into google.rpc.Status with details. Messages
never contain a clear identity number or MSISDN (callers pass masked values).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class ErrorKind(Enum):
    """The class of failure, mirroring the canonical gRPC codes the design allows."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    NOT_FOUND = "NOT_FOUND"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: its path (e.g. ``document.number``) and why it is bad."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """A quota that a request would exceed."""

    subject: str
    description: str


class RealnameError(Exception):
    """Base of every error the domain raises on purpose."""

    kind: ErrorKind = ErrorKind.FAILED_PRECONDITION

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        metadata: dict[str, str] | None = None,
        kind: ErrorKind | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        if kind is not None:
            self.kind = kind


class InvalidArgument(RealnameError):
    """Raised when a request is bad regardless of state; carries every field violation found."""

    kind = ErrorKind.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation], reason: str = "INVALID_ARGUMENT") -> None:
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(message, reason=reason)
        self.violations = violations


class FailedPrecondition(RealnameError):
    """Raised when the current state forbids the request (e.g. a reused request id)."""

    kind = ErrorKind.FAILED_PRECONDITION


class QuotaExceeded(RealnameError):
    """Raised when a limit would be exceeded, such as the per-document card cap."""

    kind = ErrorKind.RESOURCE_EXHAUSTED

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        violations: list[QuotaViolation],
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = violations


class ResourceExhausted(RealnameError):
    """Raised when a caller is over a rate limit; says how long to wait before retrying."""

    kind = ErrorKind.RESOURCE_EXHAUSTED

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float,
        reason: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_seconds = retry_after_seconds


class AlreadyExists(RealnameError):
    """Raised when a unique thing (active MSISDN, ICCID) is already taken."""

    kind = ErrorKind.ALREADY_EXISTS


class NotFound(RealnameError):
    """Raised when the named thing does not exist for this caller."""

    kind = ErrorKind.NOT_FOUND


class PermissionDenied(RealnameError):
    """Raised when an authenticated caller may not do this."""

    kind = ErrorKind.PERMISSION_DENIED


class Unauthenticated(RealnameError):
    """Raised when the caller presented no acceptable identity."""

    kind = ErrorKind.UNAUTHENTICATED


class Unavailable(RealnameError):
    """Raised when a dependency (the database) is unreachable; the call can be retried."""

    kind = ErrorKind.UNAVAILABLE


class DeadlineExceeded(RealnameError):
    """Raised when the caller's deadline passed before the work could start."""

    kind = ErrorKind.DEADLINE_EXCEEDED


@dataclass
class Violations:
    """Collects field violations so a request reports all its problems at once."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        """Records one bad field."""
        self.items.append(FieldViolation(field_path, description))

    def raise_if_any(self) -> None:
        """Raises InvalidArgument listing every recorded violation, if there is one."""
        if self.items:
            raise InvalidArgument(self.items)
