"""The one error hierarchy of the domain.

Transports map these to their status codes in exactly one place each (the gRPC error
interceptor, the gateway's status table); the domain never knows about status codes.
"""

from __future__ import annotations

from dataclasses import dataclass


class DomainError(Exception):
    """Base class; ``message`` is safe to show to the caller.

    ``reason`` and ``metadata`` give clients something better to branch on than the
    message text (sent as a ``google.rpc.ErrorInfo``), e.g. who holds an escalation.
    """

    def __init__(self, message: str, reason: str = "", metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(DomainError):
    def __init__(self, violations: list[FieldViolation]) -> None:
        fields = ", ".join(v.field for v in violations)
        super().__init__(f"invalid request: {fields}")
        self.violations = violations


class Unauthenticated(DomainError):
    pass


class PermissionDenied(DomainError):
    pass


class NotFound(DomainError):
    pass


class FailedPrecondition(DomainError):
    pass


class AlreadyExists(DomainError):
    """What the request would create exists already, in a way the request cannot reuse
    (e.g. its request_id was first used with a different body). ``violations`` names the
    fields to change, as in INVALID_ARGUMENT."""

    def __init__(
        self,
        message: str,
        violations: list[FieldViolation],
        reason: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason, metadata)
        self.violations = violations


class Unavailable(DomainError):
    """Try again (elsewhere): e.g. the server is shutting down; streams can resume."""


class ResourceExhausted(DomainError):
    """A limit was reached; ``retry_after`` says when trying again makes sense."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StartupError(Exception):
    """A server cannot start (e.g. its port is taken); the message is one line for operators.

    Not a DomainError: no caller sees it, the command line prints it and exits non-zero.
    """
