"""gRPC status -> HTTP status and the JSON error body, in one table (docs/design.md §4).

Every error the gateway answers has the body ``{"code", "message", "details"}``:
``code`` is the gRPC status name, ``details`` the rich-status details rendered with the
protobuf JSON mapping (e.g. a ``google.rpc.BadRequest`` with its ``fieldViolations``),
decoded from the ``grpc-status-details-bin`` trailer the server sends. Errors the gateway
finds itself (a body that is not valid JSON, an unknown enum name in a query) use the same
shape, with a ``BadRequest`` naming the field.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.rpc import error_details_pb2, status_pb2
from starlette.responses import Response

log = logging.getLogger(__name__)

STATUS_DETAILS_KEY = "grpc-status-details-bin"

# The one table. Anything not listed is 500.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# HTTP errors raised by the framework itself (unknown route, wrong method), named alike.
CODE_OF_HTTP: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    409: "FAILED_PRECONDITION",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


class GatewayError(Exception):
    """An error answered by the gateway itself, in the same shape as upstream ones."""

    def __init__(
        self, code: grpc.StatusCode, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []

    @property
    def body(self) -> dict[str, Any]:
        return {"code": self.code.name, "message": self.message, "details": self.details}


def bad_request(violations: dict[str, str], message: str = "") -> GatewayError:
    """INVALID_ARGUMENT with a ``google.rpc.BadRequest`` naming each field."""
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in violations.items()
            ]
        )
    )
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        message or f"invalid request: {', '.join(violations)}",
        [json_format.MessageToDict(detail)],
    )


def _render_detail(detail: any_pb2.Any) -> dict[str, Any]:
    try:
        return json_format.MessageToDict(detail)
    except (TypeError, json_format.Error):
        # A detail type this gateway does not know: say what it is, not what it holds.
        return {"@type": detail.type_url}


def details_of(error: grpc.aio.AioRpcError) -> list[dict[str, Any]]:
    """The rich-status details of an upstream error, in the protobuf JSON mapping."""
    trailers: Any = error.trailing_metadata() or ()
    for key, value in trailers:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except Exception:
                log.warning("undecodable %s trailer", STATUS_DETAILS_KEY)
                return []
            return [_render_detail(d) for d in status.details]
    return []


def from_rpc_error(error: grpc.aio.AioRpcError, upstream: str = "") -> GatewayError:
    code = error.code()
    message = error.details() or code.name
    if code is grpc.StatusCode.UNAVAILABLE:
        message = f"the escalation service is unavailable, try again shortly ({message})"
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"the escalation service did not answer in time ({message})"
    elif code is grpc.StatusCode.CANCELLED:
        message = f"the call was cancelled ({message})"
    elif http_status(code) == 500 and code is not grpc.StatusCode.INTERNAL:
        log.warning("unexpected upstream status %s from %s: %s", code.name, upstream, message)
    return GatewayError(code, message, details_of(error))


def _retry_after(details: list[dict[str, Any]]) -> int:
    """Whole seconds from the upstream's ``google.rpc.RetryInfo``, 1 if it sent none."""
    for detail in details:
        if detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            delay = str(detail.get("retryDelay", "1s")).removesuffix("s")
            try:
                return max(1, math.ceil(float(delay)))
            except ValueError:
                break
    return 1


def error_json(error: GatewayError) -> bytes:
    return json.dumps(error.body, separators=(",", ":"), ensure_ascii=False).encode()


def error_response(error: GatewayError) -> Response:
    status = http_status(error.code)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    elif status == 503:
        headers["Retry-After"] = "1"
    elif status == 429:
        headers["Retry-After"] = str(_retry_after(error.details))
    return Response(
        error_json(error), status_code=status, headers=headers, media_type="application/json"
    )
