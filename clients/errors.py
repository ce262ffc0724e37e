"""Typed errors raised by the client instead of raw ``grpc.aio.AioRpcError``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ResolutionFlowError(Exception):
    """Base class. ``code`` is the gRPC status, ``message`` the server's explanation."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class InvalidArgument(ResolutionFlowError):
    def __init__(self, code: grpc.StatusCode, message: str, violations: list[FieldViolation]):
        super().__init__(code, message)
        self.violations = violations


class Unauthenticated(ResolutionFlowError):
    pass


class PermissionDenied(ResolutionFlowError):
    pass


class NotFound(ResolutionFlowError):
    pass


class Conflict(ResolutionFlowError):
    """The handoff is not in a state that allows this (e.g. already resolved), or a
    request_id was reused with a different request body (ALREADY_EXISTS)."""


class AlreadyPickedUp(Conflict):
    """Someone else won the pickup; ``holder_id`` / ``holder_name`` say who."""

    def __init__(self, code: grpc.StatusCode, message: str, holder_id: str, holder_name: str):
        super().__init__(code, message)
        self.holder_id = holder_id
        self.holder_name = holder_name


class NotHolder(PermissionDenied):
    """Only the holder may resolve (or, with admins, release) it; ``holder_id`` /
    ``holder_name`` say who that is."""

    def __init__(self, code: grpc.StatusCode, message: str, holder_id: str, holder_name: str):
        super().__init__(code, message)
        self.holder_id = holder_id
        self.holder_name = holder_name


class Unavailable(ResolutionFlowError):
    """The server is down, restarting or overloaded; retrying later is right."""


_BY_CODE: dict[grpc.StatusCode, type[ResolutionFlowError]] = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Unavailable,
}


_BY_REASON: dict[str, type[AlreadyPickedUp] | type[NotHolder]] = {
    "ALREADY_PICKED_UP": AlreadyPickedUp,
    "NOT_HOLDER": NotHolder,
}


def from_rpc_error(error: grpc.aio.AioRpcError) -> ResolutionFlowError:
    code, message = error.code(), error.details() or ""
    details = _details(error)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violations = [
            FieldViolation(v.field, v.description)
            for d in details
            if isinstance(d, error_details_pb2.BadRequest)
            for v in d.field_violations
        ]
        return InvalidArgument(code, message, violations)
    for d in details:
        if isinstance(d, error_details_pb2.ErrorInfo) and d.reason in _BY_REASON:
            return _BY_REASON[d.reason](
                code, message, d.metadata.get("holder_id", ""), d.metadata.get("holder_name", "")
            )
    return _BY_CODE.get(code, ResolutionFlowError)(code, message)


def _details(error: grpc.aio.AioRpcError) -> list[object]:
    trailers: Any = error.trailing_metadata() or ()
    raw = dict(trailers).get(STATUS_DETAILS)
    if not isinstance(raw, bytes):
        return []
    status = status_pb2.Status.FromString(raw)
    out: list[object] = []
    for any_detail in status.details:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo):
            if any_detail.Is(kind.DESCRIPTOR):
                message = kind()
                any_detail.Unpack(message)
                out.append(message)
    return out
