"""Security headers on every response of the gateway.

The web page keeps a bearer token in ``sessionStorage``: any script that runs in it can
read the token and act as that user. So the page, its assets and the API docs are served
with a Content-Security-Policy that lets scripts, styles and connections come from this
origin only, with no inline script or style, and no framing (clickjacking). The page and
Swagger UI are written to need nothing more (no inline code, styles set through the
CSSOM); ``img-src`` also allows ``data:``, which the page's empty favicon and Swagger UI's
icons use and which cannot run code.

``nosniff`` keeps a browser from running a JSON or text response as script, and
``no-referrer`` keeps URLs (handoff ids) from leaking to other sites. JSON responses
get the same headers: harmless there, and one rule is easier to keep.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # For browsers without frame-ancestors: the same rule, the old way.
    (b"x-frame-options", b"DENY"),
]
_NAMES = {name for name, _ in HEADERS}


class SecurityHeadersMiddleware:
    """Adds ``HEADERS`` to each HTTP response (replacing any a route set itself)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _NAMES]
                message["headers"] = [*kept, *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
