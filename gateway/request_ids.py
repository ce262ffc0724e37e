"""Request ids and the access log of the gateway.

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

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("gateway.access")
HEADER = b"x-request-id"
MAX_LENGTH = 64


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


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

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            fields: dict[str, Any] = {
                "request_id": rid,
                "http_method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
            access_log.info("http", extra=fields)
