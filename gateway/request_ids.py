"""Request ids, the access log and the HTTP metrics of the gateway.

A pure ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: the latter wraps
the response body in its own stream, which delays SSE frames and hides client
disconnects from the endpoint. The id (the caller's ``X-Request-ID`` or a new one) is
returned to the caller, forwarded to the server as ``x-request-id`` metadata and written
on the access log line, so one browser action can be followed into the server's log.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("gateway.access")

# Labelled by route template (never by the path itself: ids would make it unbounded).
HTTP_REQUESTS = Counter(
    "resolutionflow_gateway_http_requests_total",
    "HTTP requests finished, by route, method and status",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "resolutionflow_gateway_http_request_duration_seconds",
    "Time to the end of the response (streams: their whole life)",
    ["route"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600),
)
OPEN_STREAMS = Gauge(
    "resolutionflow_gateway_open_streams", "SSE responses in progress, by route", ["route"]
)
HEADER = b"x-request-id"
MAX_LENGTH = 64


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(HEADER, b"").decode("latin-1")
        rid = given[:MAX_LENGTH] if given.isprintable() and given else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = 0
        streaming = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", [])
                streaming = (b"content-type", b"text/event-stream") in [
                    (k.lower(), v.split(b";")[0]) for k, v in headers
                ]
                if streaming:
                    OPEN_STREAMS.labels(_route(scope)).inc()
                message["headers"] = [*headers, (HEADER, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = _route(scope)
            if streaming:
                OPEN_STREAMS.labels(route).dec()
            seconds = time.perf_counter() - started
            HTTP_REQUESTS.labels(route, scope["method"], str(status)).inc()
            HTTP_SECONDS.labels(route).observe(seconds)
            fields: dict[str, Any] = {
                "request_id": rid,
                "http_method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
            }
            access_log.info("http", extra=fields)
