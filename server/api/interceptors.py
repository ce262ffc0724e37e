"""The interceptor every RPC passes through: observability, authentication, error mapping.

Errors are mapped to status codes here and nowhere else, including errors raised while a
streaming response is being iterated (the interceptor wraps the response generator).
"""

from __future__ import annotations

import contextvars
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_interceptor.server import AsyncServerInterceptor
from grpc_status import rpc_status
from resolutionflow.v1 import escalation_pb2, escalation_policy_pb2, handoff_pb2, webhook_pb2

from server import logs, telemetry
from server.auth import TokenVerifier, bearer_token
from server.domain import policy
from server.domain.types import Caller, Role
from server.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger("resolutionflow.access")

STATUS_OF: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

ERROR_DOMAIN = "resolutionflow.v1"

# Which roles may call which RPC: the policy's table (server/domain/policy.py) under the
# full method names of our services. An RPC the policy does not list stops the server
# at import; anything else that is not an open service is refused.
REQUIRED_ROLES: dict[str, frozenset[Role]] = {
    f"/{service.full_name}/{method.name}": policy.ROLES[method.name]
    for module in (handoff_pb2, escalation_pb2, webhook_pb2, escalation_policy_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1")


class Undecodable:
    """Stands for a request whose bytes are not the method's request message."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """A request parser that never raises: bytes that are not the request message become
    ``Undecodable``, which ``intercept`` answers with INVALID_ARGUMENT. Left to gRPC, a
    parse error is UNKNOWN naming protobuf's exception class, plus a traceback in the log
    for every such call (also on the open health service: log flooding without a token)."""

    def parse_or_mark(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return Undecodable(len(data))

    return parse_or_mark


_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller")


def current_caller() -> Caller:
    """The authenticated caller of the RPC being served."""
    return _caller.get()


class ServiceInterceptor(AsyncServerInterceptor):
    """Every RPC, streams included: request id, authentication, error mapping, one log line
    and the metrics, in this one interceptor.

    Why one and not an interceptor per concern: each interceptor that wraps a streaming
    response adds its own async generator, and grpc-interceptor one more around it, and
    every delivered event passes through all of them. Three interceptors made six
    generator hops per event per subscriber; this makes two.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        on_caller: Callable[[Caller], Awaitable[None]] | None = None,
    ) -> None:
        self._verifier = verifier
        # Told of every verified caller (the core records known users from it).
        self._on_caller = on_caller
        # Per method: the handler gRPC gave and the one wrapped around it.
        self._handlers: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        """The servicer's handler wrapped by this interceptor: built once per method (gRPC
        asks for the handler on every call, and building it was a fair part of a small
        call's cost), again only if gRPC hands out another handler for the method."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._handlers.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = await self._wrap(handler, handler_call_details)
        if len(self._handlers) > 1000:  # handlers made per call: keeping them would leak
            self._handlers.clear()
        self._handlers[method] = (handler, wrapped)
        return wrapped

    async def _wrap(self, handler: Any, handler_call_details: Any) -> Any:
        """The handler with this interceptor around the servicer's method, and with a
        request parser that does not raise (only for unary requests: a streamed request is
        parsed message by message inside the servicer's iterator, where a marker could not
        be answered for)."""
        method = handler_call_details.method
        if handler.response_streaming:
            # Streamed responses: one generator of ours is the handler itself, instead of
            # grpc-interceptor's wrapper around ours (one generator hop less per event
            # per subscriber). Also reflection's bidirectional stream.
            field = "stream_stream" if handler.request_streaming else "unary_stream"
            wrapped = self._streaming(getattr(handler, field), method)
            handler = handler._replace(**{field: wrapped})
        elif not handler.request_streaming:
            handler = handler._replace(unary_unary=self._unary(handler.unary_unary, method))
        else:
            found = handler
            handler = await super().intercept_service(lambda _: _ready(found), handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        return handler._replace(request_deserializer=_lenient(handler.request_deserializer))

    def _unary(
        self, method: Callable[[Any, Any], Awaitable[Any]], method_name: str
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        async def unary(request: Any, context: Any) -> Any:
            return await self.intercept(method, request, context, method_name)

        return unary

    async def intercept(
        self, method: Callable[..., Any], request: Any, context: Any, method_name: str
    ) -> Any:
        name = method_name.rsplit("/", 1)[-1]
        started = time.perf_counter()
        try:
            try:
                await self._begin(context, method_name)
                _decoded(request, name)
                result = await method(request, context)
            except Exception as e:
                await _abort(context, e, method_name)
        except BaseException:
            _finished(name, _code(context, failed=True), started, streaming=False)
            raise
        _finished(name, "OK", started, streaming=False)
        return result

    async def _begin(self, context: Any, method_name: str) -> None:
        """Request id, then the caller (raises for a bad token or a role not allowed)."""
        metadata = dict(context.invocation_metadata() or ())
        given = metadata.get("x-request-id", "")
        # A new id needs to be unique, not unpredictable: no system call for randomness.
        logs.request_id.set(given[:64] if given else f"{random.getrandbits(128):032x}")
        if method_name.startswith(OPEN_PREFIXES):
            return
        allowed = REQUIRED_ROLES.get(method_name)
        if allowed is None:
            raise PermissionDenied(f"{method_name} is not open to callers")
        # Awaited: a provider token may need its signing keys fetched first.
        caller = await self._verifier.verify(bearer_token(metadata.get("authorization")))
        if self._on_caller is not None:
            await self._on_caller(caller)
        if caller.role not in allowed:
            roles = " or ".join(sorted(r.value for r in allowed))
            raise PermissionDenied(f"{method_name.rsplit('/', 1)[-1]} requires role {roles}")
        _caller.set(caller)

    def _streaming(
        self, method: Callable[[Any, Any], AsyncIterator[Any]], method_name: str
    ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        """A server-streaming handler: what ``intercept`` does for a unary call, then the
        servicer's messages passed through, counted, and its error mapped to a status."""
        name = method_name.rsplit("/", 1)[-1]
        gauge = telemetry.OPEN_STREAMS.labels(name)

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                try:
                    await self._begin(context, method_name)
                    _decoded(request, name)
                    responses = method(request, context)
                    if not hasattr(responses, "__aiter__"):
                        # A handler that writes with context.write (health's Watch).
                        await cast(Awaitable[None], responses)
                except Exception as e:
                    await _abort(context, e, method_name)
            except BaseException:
                _finished(name, _code(context, failed=True), started, streaming=False)
                raise
            if not hasattr(responses, "__aiter__"):
                _finished(name, "OK", started, streaming=False)
                return
            gauge.inc()
            failed = True
            sent = 0
            try:
                try:
                    async for item in responses:
                        sent += 1
                        yield item
                    failed = False
                except Exception as e:
                    await _abort(context, e, method_name)
            finally:
                gauge.dec()
                _finished(name, _code(context, failed), started, streaming=True, sent=sent)

        return stream


async def _ready(handler: Any) -> Any:
    return handler


def _decoded(request: Any, name: str) -> None:
    """Raise for a request that did not parse: the caller's mistake, answered like any bad
    input (no parser internals in the answer, and only the access log line in the log)."""
    if isinstance(request, Undecodable):
        raise InvalidArgument(
            [
                FieldViolation(
                    "request", f"{request.size} bytes that do not decode as the request of {name}"
                )
            ]
        )


def _finished(name: str, code: str, started: float, streaming: bool, sent: int = 0) -> None:
    seconds = time.perf_counter() - started
    counter = _RPCS.get((name, code))
    if counter is None:
        counter = _RPCS[(name, code)] = telemetry.RPCS.labels(name, code)
    counter.inc()
    if not streaming:
        timer = _RPC_SECONDS.get(name)
        if timer is None:
            timer = _RPC_SECONDS[name] = telemetry.RPC_SECONDS.labels(name)
        timer.observe(seconds)
    caller = _caller.get(None)
    fields: dict[str, Any] = {
        "method": name,
        "code": code,
        "duration_ms": round(seconds * 1000, 2),
        "account_id": caller.account_id if caller else "",
        "user_id": caller.user_id if caller else "",
    }
    if streaming:
        fields["messages_sent"] = sent
    access_log.info("stream ended" if streaming else "rpc", extra=fields)


_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}
# The metrics' children by labels (methods and codes are few): a dict lookup per call
# instead of the client library's label validation.
_RPCS: dict[tuple[str, str], Any] = {}
_RPC_SECONDS: dict[str, Any] = {}


def _code(context: Any, failed: bool) -> str:
    """The status the RPC ended with; a failure with no code set is a client cancel."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        return _CODE_NAMES.get(code, str(code))
    return "CANCELLED" if failed else "OK"


async def _abort(context: grpc.aio.ServicerContext, error: Exception, method_name: str) -> None:
    if isinstance(error, DomainError):
        details = []
        if isinstance(error, InvalidArgument | AlreadyExists):
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        if isinstance(error, ResourceExhausted):
            delay = duration_pb2.Duration()
            delay.FromTimedelta(timedelta(seconds=error.retry_after))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        if error.reason:
            details.append(
                error_details_pb2.ErrorInfo(
                    reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
                )
            )
        code = STATUS_OF[type(error)]
        if not details:
            await context.abort(code, error.message)
        packed = []
        for detail in details:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        status = status_pb2.Status(code=code.value[0], message=error.message, details=packed)
        await context.abort_with_status(rpc_status.to_status(status))  # type: ignore[attr-defined]
    if isinstance(error, grpc.aio.AbortError | grpc.RpcError):
        raise error
    log.exception("unexpected error in %s", method_name)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")
