"""The HTTP gateway: REST + Server-Sent Events in front of the gRPC server (docs/design.md §2, §4).

A translator only. The REST routes are built from the ``google.api.http`` options of the
RPCs (``gateway.routes``): each turns the HTTP request into a protobuf request
(``json_format`` for bodies), calls the server with the caller's ``Authorization`` header
as gRPC metadata and a per-request deadline, and turns the reply back into JSON with the
protobuf JSON mapping, exactly what grpcurl prints (lowerCamelCase, enum names, default
values omitted). Status codes come from the one table in ``gateway.errors``. There is no
auth logic here: the server decides. This module assembles the app: middleware, error
handlers, health, the OpenAPI document and the web page.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Any, Protocol

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from grpc_health.v1 import health_pb2
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from gateway import openapi, routes
from gateway.docs import install_docs
from gateway.errors import (
    CODE_OF_HTTP,
    GatewayError,
    bad_request,
    error_response,
    from_rpc_error,
)
from gateway.json_body import read_body, require_json
from gateway.request_ids import RequestIdMiddleware, request_id
from gateway.security import SecurityHeadersMiddleware
from gateway.settings import GatewaySettings
from gateway.sse import SSEStreams
from gateway.upstream import Upstream

log = logging.getLogger(__name__)

TITLE = "ResolutionFlow Escalations gateway"
DESCRIPTION = """REST and Server-Sent Events in front of the `resolutionflow.v1` gRPC API.

Bodies use the protobuf JSON mapping (lowerCamelCase fields, enums by name, timestamps as
RFC 3339, 64-bit integers as strings), so a field reads the same here and in grpcurl.
Request bodies are `Content-Type: application/json` only (415 otherwise); enums also take
their short names (`"priority": "HIGH"` for `PRIORITY_HIGH`), as query strings do.
Every call but `/healthz` needs `Authorization: Bearer <JWT>` (`resolutionflow token`).
Errors: `{"code": "<gRPC status>", "message": "...", "details": [...]}`.

Streams (`text/event-stream`): `id: <sequence>`, `event: <type>` (e.g. `snapshot`,
`created`, `picked_up`, `heartbeat`), `data: <HandoffEvent as one-line JSON>`; `: ping`
comments while idle; `event: error` then the end if the upstream fails mid-stream.
Resume with the `Last-Event-ID` header or `?after=<sequence>`.
"""


def create_app(
    settings: GatewaySettings | None = None, *, local_sign_in: LocalSignIn | None = None
) -> FastAPI:
    """The gateway app; with ``local_sign_in`` (``resolutionflow serve`` on a loopback
    address), the page may ask ``POST /local/token`` for a token."""
    settings = settings or GatewaySettings()
    upstream = Upstream(settings)
    streams = SSEStreams(
        upstream,
        heartbeat_seconds=settings.heartbeat_seconds,
        retry_ms=settings.sse_retry_ms,
        first_event_wait_seconds=settings.sse_first_event_wait_seconds,
        fanout=settings.sse_fanout,
        send_timeout_seconds=settings.sse_send_timeout_seconds,
        queue_frames=settings.sse_queue_frames,
        buffer_bytes=settings.sse_buffer_bytes,
        ring_frames=settings.sse_ring_frames,
        linger_seconds=settings.sse_feed_linger_seconds,
        resume_seconds=settings.sse_upstream_resume_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upstream.channel  # noqa: B018 - connect early, in the serving loop
        try:
            yield
        finally:
            streams.shut_down()
            if streams.presence is not None:
                await streams.presence.close()  # its engineers drop out now, not by TTL
            await upstream.close()

    app = FastAPI(
        title=TITLE,
        version="v1",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Swagger UI is served from installed assets (gateway.docs), not a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.upstream = upstream
    app.state.streams = streams
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["Location"],
            max_age=600,
        )
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    _install_error_handlers(app, upstream)
    _install_openapi(app)

    routes.install(app, upstream, streams)
    _install_health(app, upstream, streams, settings)
    install_docs(app)
    _install_web(app, settings, local_sign_in)
    return app


# ---- health -------------------------------------------------------------------------------


def _install_health(
    app: FastAPI, upstream: Upstream, streams: SSEStreams, settings: GatewaySettings
) -> None:
    """``/healthz`` (the upstream), ``/livez``, ``/readyz`` and ``/metrics``."""

    @app.get(
        "/healthz",
        tags=["health"],
        summary="Whether the upstream gRPC server is serving (grpc.health.v1)",
        responses={
            200: openapi.content("Health", "the upstream is serving"),
            503: openapi.content("Health", "the upstream is down or not serving"),
        },
    )
    async def healthz() -> Response:
        status, message = await upstream_status()
        if message:
            return JSONResponse({"status": status, "message": message}, status_code=503)
        return JSONResponse({"status": status})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/livez", tags=["health"], summary="The gateway process is alive")
    async def livez() -> Response:
        return JSONResponse({"status": "ALIVE"})

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Ready for traffic: the upstream is serving and the gateway is not draining",
        responses={503: openapi.content("Health", "not ready; send traffic elsewhere")},
    )
    async def readyz() -> Response:
        if streams.closing.is_set():
            return JSONResponse(
                {"status": "DRAINING", "message": "the gateway is shutting down"}, status_code=503
            )
        return await healthz()

    async def upstream_status() -> tuple[str, str]:
        """The upstream's health status name, and why it is not serving ("" if it is)."""
        try:
            reply = await upstream.health.Check(
                health_pb2.HealthCheckRequest(), timeout=settings.health_timeout_seconds
            )
        except grpc.aio.AioRpcError as e:
            return "UNAVAILABLE", from_rpc_error(e, upstream.target).message
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return name, f"upstream {upstream.target} is {name}"
        return name, ""


# ---- the web page -----------------------------------------------------------------------

WEB_DIR = FilePath(__file__).resolve().parent / "web"
# The browser module lives with the clients; the page loads it from its real file.
STREAM_JS = FilePath(__file__).resolve().parent.parent / "clients" / "web" / "stream.js"


class LocalSignIn(Protocol):
    """Signs a token for the page's local sign-in; ``resolutionflow serve`` passes the
    server's own (``server.auth.LocalSignIn``), so the gateway holds no key and no role
    list. Returns the token and its expiry (epoch seconds); raises ``ValueError`` (what
    the role may be) for an unknown role and ``PermissionError`` for one it does not
    hand out."""

    def __call__(self, *, account: str, user: str, role: str, name: str) -> tuple[str, int]: ...


def _install_web(app: FastAPI, settings: GatewaySettings, local: LocalSignIn | None) -> None:
    """``/`` (the page), ``/static/*`` and, in local mode only, ``POST /local/token``."""
    host, _ = settings.http_host_port
    sign_in = local if is_loopback(host) else None
    if local is not None and sign_in is None:
        log.warning("local sign-in is off: %s is not a loopback address", host)
    page = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    page = page.replace(
        'data-local-mode="false"', f'data-local-mode="{str(sign_in is not None).lower()}"'
    )

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.api_route("/static/stream.js", methods=["GET", "HEAD"], include_in_schema=False)
    async def stream_js() -> Response:
        return FileResponse(STREAM_JS, media_type="text/javascript")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    if sign_in is None:
        return

    @app.post("/local/token", include_in_schema=False)
    async def local_token(request: Request) -> Response:
        """A signed token for whoever asks: only ``resolutionflow serve`` offers this.

        Whoever can reach this route can act as anyone in any account, so it answers only
        a page this gateway served itself on a loopback address: a loopback ``Host`` (a
        DNS-rebinding page has its own name there), no foreign ``Origin``, and a JSON
        body (a cross-site form or ``text/plain`` post never gets here).
        """
        _require_local_caller(request)
        raw = await read_body(request, 4096, settings.http_body_timeout_seconds)
        require_json(request)
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise bad_request({"body": "must be a JSON object"})
        violations: dict[str, str] = {}
        values: dict[str, str] = {}
        for field in ("account", "user", "role", "name"):
            value = data.get(field, "")
            if not isinstance(value, str) or len(value.strip()) > 128:
                violations[field] = "must be a string of at most 128 characters"
            elif not value.strip() and field != "name":
                violations[field] = "is required"
            values[field] = value.strip() if isinstance(value, str) else ""
        if violations:
            raise bad_request(violations)
        try:
            token, expires_at = sign_in(
                account=values["account"],
                user=values["user"],
                role=values["role"],
                name=values["name"] or values["user"],
            )
        except ValueError as e:
            raise bad_request({"role": str(e)}) from None
        except PermissionError as e:
            raise GatewayError(grpc.StatusCode.PERMISSION_DENIED, str(e)) from None
        return JSONResponse({"token": token, "expiresAt": expires_at})


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether a listen host is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _require_local_caller(request: Request) -> None:
    """403 unless the request names this gateway by a loopback name and comes from its page.

    A DNS-rebinding attack points a name the attacker controls at 127.0.0.1: the browser
    then sends that name as ``Host`` (and as the page's origin), so both are checked
    against the loopback names with the port this gateway listens on.
    """
    server = request.scope.get("server")
    port = server[1] if server else None
    hosts = {f"{name}:{port}" for name in LOOPBACK_NAMES}
    if port == 80:
        hosts.update(LOOPBACK_NAMES)
    host = request.headers.get("host", "").lower()
    origin = request.headers.get("origin")
    if host not in hosts:
        raise GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            "local sign-in answers only requests to a loopback address "
            "(http://127.0.0.1, http://localhost or http://[::1] with the port)",
        )
    if origin is not None and origin.lower() != f"http://{host}":
        raise GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            "local sign-in answers only the page this gateway serves (same origin)",
        )


# ---- errors -----------------------------------------------------------------------------


def _install_error_handlers(app: FastAPI, upstream: Upstream) -> None:
    async def rpc_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, grpc.aio.AioRpcError)
        return error_response(from_rpc_error(exc, upstream.target))

    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        violations: dict[str, str] = {}
        for problem in exc.errors():
            loc = [str(part) for part in problem.get("loc", ()) if part not in ("query", "path")]
            violations[".".join(loc) or "request"] = str(problem.get("msg", "invalid"))
        return error_response(bad_request(violations))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = CODE_OF_HTTP.get(exc.status_code, "UNKNOWN")
        return JSONResponse(
            {"code": code, "message": str(exc.detail), "details": []},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def client_gone(request: Request, exc: Exception) -> Response:
        # Nobody is left to answer: one line, not a traceback (a phone that lost signal
        # mid-upload is not a gateway error).
        log.info(
            "client disconnected before its request body arrived",
            extra={"request_id": request_id(request), "path": request.url.path},
        )
        return Response(status_code=499)

    async def unexpected(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"code": "INTERNAL", "message": "internal error in the gateway", "details": []},
            status_code=500,
        )

    app.add_exception_handler(grpc.aio.AioRpcError, rpc_error)
    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unexpected)


# ---- OpenAPI ----------------------------------------------------------------------------


def _install_openapi(app: FastAPI) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=[
                {"name": "handoffs", "description": "HandoffService"},
                {"name": "escalations", "description": "EscalationService"},
                {"name": "streams", "description": "Server-Sent Events"},
            ],
        )
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        # FastAPI's 422 models are not used: validation errors are 400 with the Error body.
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas.update(routes.schema_components())
        schemas["Error"] = openapi.ERROR_SCHEMA
        schemas["Health"] = openapi.HEALTH_SCHEMA
        components["securitySchemes"] = {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "`resolutionflow token --account A --user U --role R`",
            }
        }
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if "422" in responses:
                    bad = openapi.content("Error", openapi.ERROR_DESCRIPTIONS[400])
                    responses["400"] = responses.get("400", bad)
                    del responses["422"]
                if path.startswith("/v1/"):
                    operation["security"] = [{"bearerAuth": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
