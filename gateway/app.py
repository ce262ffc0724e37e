"""The HTTP gateway: REST + Server-Sent Events in front of the gRPC server (docs/design.md §2, §4).

A translator only. Each route turns the HTTP request into a protobuf request
(``json_format`` for bodies), calls the server through the generated stubs with the
caller's ``Authorization`` header as gRPC metadata and a per-request deadline, and turns
the reply back into JSON with the protobuf JSON mapping, exactly what grpcurl prints
(lowerCamelCase, enum names, default values omitted). Status codes come from the one
table in ``gateway.errors``. There is no auth logic here: the server decides.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any, TypeVar

import grpc
import jwt
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from resolutionflow.v1 import escalation_pb2 as esc
from resolutionflow.v1 import handoff_pb2 as pb
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from gateway import openapi
from gateway.docs import install_docs
from gateway.errors import (
    CODE_OF_HTTP,
    GatewayError,
    bad_request,
    error_response,
    from_rpc_error,
)
from gateway.json_body import check_body, enum_choices, enum_value
from gateway.request_ids import RequestIdMiddleware, request_id
from gateway.security import SecurityHeadersMiddleware
from gateway.settings import GatewaySettings
from gateway.sse import SSEStreams
from gateway.upstream import Upstream

M = TypeVar("M", bound=Message)
log = logging.getLogger(__name__)

# Handoff ids are UUIDs (the server answers 400 for anything else, 404 for unknown ones).
HandoffId = Annotated[
    str, Path(description="handoff id (a UUID)", json_schema_extra={"format": "uuid"})
]

MAX_INT32 = 2**31 - 1
MAX_UINT64 = 2**64 - 1

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

# Query-parameter enums: the full proto names, as in the JSON mapping.
STATUS_NAMES = [v.name for v in pb.HandoffStatus.DESCRIPTOR.values]
INTENT_NAMES = [v.name for v in pb.HandoffIntent.DESCRIPTOR.values]
PRIORITY_NAMES = [v.name for v in pb.Priority.DESCRIPTOR.values]

_ENUM_TYPES: dict[str, Any] = {
    "status": pb.HandoffStatus,
    "intent": pb.HandoffIntent,
    "priority": pb.Priority,
}


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    upstream = Upstream(settings)
    streams = SSEStreams(
        upstream,
        heartbeat_seconds=settings.heartbeat_seconds,
        retry_ms=settings.sse_retry_ms,
        first_event_wait_seconds=settings.sse_first_event_wait_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upstream.channel  # noqa: B018 - connect early, in the serving loop
        try:
            yield
        finally:
            streams.closing.set()
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

    timeout = settings.upstream_timeout_seconds
    limit = settings.max_body_bytes
    body_timeout = settings.http_body_timeout_seconds

    async def call(request: Request, rpc: Callable[..., Awaitable[M]], message: Message) -> M:
        return await rpc(message, metadata=_metadata(request), timeout=timeout)

    async def stream(
        request: Request, rpc: Callable[..., Any], message: Any, after: int | None
    ) -> Response:
        """Start the upstream stream from the cursor (``Last-Event-ID`` or ``?after=``)."""
        cursor = _cursor(request, after)
        if cursor is not None:
            message.after_sequence = cursor
        return await streams.respond(rpc(message, metadata=_metadata(request)))

    # ---- handoffs -----------------------------------------------------------------------

    @app.post(
        "/v1/handoffs",
        status_code=201,
        tags=["handoffs"],
        summary="Create a handoff (CreateHandoff); idempotent per requestId if given",
        description="With a `requestId`, a repeat with the same body returns the first "
        "handoff (201, nothing created) and a repeat with a different body is 409 "
        "`ALREADY_EXISTS` naming `request_id`. Without one, every call creates a handoff.",
        openapi_extra=_body("CreateHandoffRequest"),
        responses=_responses(201, "CreateHandoffResponse", 400, 401, 403, 408, 409, 413, 415, 429),
    )
    async def create_handoff(request: Request) -> Response:
        message = await _parse_body(request, pb.CreateHandoffRequest(), limit, seconds=body_timeout)
        reply = await call(request, upstream.handoffs.CreateHandoff, message)
        return proto_json(
            reply, status_code=201, headers={"Location": f"/v1/handoffs/{reply.handoff.id}"}
        )

    @app.get(
        "/v1/handoffs",
        tags=["handoffs"],
        summary="List handoffs, newest first (ListHandoffs)",
        responses=_responses(200, "ListHandoffsResponse", 400, 401, 403),
    )
    async def list_handoffs(
        request: Request,
        status: str | None = Query(None, json_schema_extra={"enum": STATUS_NAMES}),
        intent: str | None = Query(None, json_schema_extra={"enum": INTENT_NAMES}),
        priority: str | None = Query(None, json_schema_extra={"enum": PRIORITY_NAMES}),
        page_size: int | None = Query(None, ge=0, le=MAX_INT32, description="1-200, default 50"),
        page_token: str | None = Query(None, description="nextPageToken of the previous page"),
    ) -> Response:
        message = pb.ListHandoffsRequest(
            status=_enum("status", status),
            intent=_enum("intent", intent),
            priority=_enum("priority", priority),
            page_size=page_size or 0,
            page_token=page_token or "",
        )
        return proto_json(await call(request, upstream.handoffs.ListHandoffs, message))

    # Declared before /v1/handoffs/{handoff_id} so "stream" is never taken for an id.
    @app.get(
        "/v1/handoffs/stream",
        tags=["streams"],
        summary="The account's handoffs, live (WatchHandoffs as SSE)",
        responses=_stream_responses(),
    )
    async def watch_handoffs(
        request: Request,
        after: int | None = Query(None, ge=0, le=MAX_UINT64, description="resume after it"),
    ) -> Response:
        return await stream(
            request, upstream.handoffs.WatchHandoffs, pb.WatchHandoffsRequest(), after
        )

    @app.get(
        "/v1/handoffs/{handoff_id}",
        tags=["handoffs"],
        summary="One handoff (GetHandoff)",
        responses=_responses(200, "GetHandoffResponse", 400, 401, 403, 404),
    )
    async def get_handoff(request: Request, handoff_id: HandoffId) -> Response:
        message = pb.GetHandoffRequest(handoff_id=handoff_id)
        return proto_json(await call(request, upstream.handoffs.GetHandoff, message))

    @app.post(
        "/v1/handoffs/{handoff_id}/cancel",
        tags=["handoffs"],
        summary="Cancel an open handoff (CancelHandoff)",
        responses=_responses(200, "CancelHandoffResponse", 400, 401, 403, 404, 409),
    )
    async def cancel_handoff(request: Request, handoff_id: HandoffId) -> Response:
        message = pb.CancelHandoffRequest(handoff_id=handoff_id)
        return proto_json(await call(request, upstream.handoffs.CancelHandoff, message))

    # ---- escalations --------------------------------------------------------------------

    @app.get(
        "/v1/escalations",
        tags=["escalations"],
        summary="The open queue and the sequence it was read at (ListEscalations)",
        description="Ordered by what needs a human first: `slaDueAt` (breached first), "
        "then `createdAt`, then `id`. A queue over 1 MiB comes in pages (`nextPageToken`).",
        responses=_responses(200, "ListEscalationsResponse", 400, 401, 403),
    )
    async def list_escalations(
        request: Request,
        page_token: str | None = Query(
            None, description="nextPageToken of the previous page (queues over 1 MiB)"
        ),
    ) -> Response:
        message = esc.ListEscalationsRequest(page_token=page_token or "")
        return proto_json(await call(request, upstream.escalations.ListEscalations, message))

    # Fixed paths before the /{handoff_id}/... ones.
    @app.get(
        "/v1/escalations/stream",
        tags=["streams"],
        summary="The account's escalation queue, live (StreamEscalations as SSE)",
        responses=_stream_responses(),
    )
    async def stream_escalations(
        request: Request,
        after: int | None = Query(None, ge=0, le=MAX_UINT64, description="resume after it"),
        priorities: list[str] = Query(  # noqa: B008 - FastAPI declares parameters this way
            [], description="only these priorities (repeatable), e.g. PRIORITY_URGENT"
        ),
        held_by_me: bool = Query(False, description="only escalations the caller holds"),
    ) -> Response:
        message = esc.StreamEscalationsRequest(held_by_me=held_by_me)
        for name in priorities:
            if name not in pb.Priority.keys():  # noqa: SIM118 - an enum wrapper, not a dict
                valid = ", ".join(pb.Priority.keys()[1:])
                raise bad_request({"priorities": f"must be one of {valid}"})
            message.priorities.append(pb.Priority.Value(name))  # type: ignore[arg-type]
        return await stream(request, upstream.escalations.StreamEscalations, message, after)

    @app.get(
        "/v1/escalations/metrics",
        tags=["escalations"],
        summary="Escalation metrics over a window (GetEscalationMetrics)",
        responses=_responses(200, "GetEscalationMetricsResponse", 400, 401, 403, 501),
    )
    async def escalation_metrics(
        request: Request,
        start_time: str | None = Query(
            None,
            description="RFC 3339; default: 7 days before end_time",
            json_schema_extra={"format": "date-time"},
        ),
        end_time: str | None = Query(
            None, description="RFC 3339; default: now", json_schema_extra={"format": "date-time"}
        ),
    ) -> Response:
        message = esc.GetEscalationMetricsRequest()
        if start_time:
            message.start_time.CopyFrom(_timestamp("start_time", start_time))
        if end_time:
            message.end_time.CopyFrom(_timestamp("end_time", end_time))
        return proto_json(await call(request, upstream.escalations.GetEscalationMetrics, message))

    @app.post(
        "/v1/escalations/{handoff_id}/pickup",
        tags=["escalations"],
        summary="Pick up an escalation; exactly one caller wins (PickUpEscalation)",
        description="The others get 409 naming the holder. Picking up an escalation you "
        "already hold answers 200 with its context again and changes nothing.",
        responses=_responses(200, "PickUpEscalationResponse", 400, 401, 403, 404, 409),
    )
    async def pick_up(request: Request, handoff_id: HandoffId) -> Response:
        message = esc.PickUpEscalationRequest(handoff_id=handoff_id)
        return proto_json(await call(request, upstream.escalations.PickUpEscalation, message))

    @app.post(
        "/v1/escalations/{handoff_id}/release",
        tags=["escalations"],
        summary="Give a picked-up escalation back to the queue (ReleaseEscalation)",
        responses=_responses(200, "ReleaseEscalationResponse", 400, 401, 403, 404, 409),
    )
    async def release(request: Request, handoff_id: HandoffId) -> Response:
        message = esc.ReleaseEscalationRequest(handoff_id=handoff_id)
        return proto_json(await call(request, upstream.escalations.ReleaseEscalation, message))

    @app.post(
        "/v1/escalations/{handoff_id}/resolve",
        tags=["escalations"],
        summary="Resolve a picked-up escalation (ResolveEscalation); holder only, note required",
        openapi_extra=_body("ResolveEscalationRequestBody"),
        responses=_responses(
            200, "ResolveEscalationResponse", 400, 401, 403, 404, 408, 409, 413, 415
        ),
    )
    async def resolve(request: Request, handoff_id: HandoffId) -> Response:
        message = await _parse_body(
            request,
            esc.ResolveEscalationRequest(),
            limit,
            seconds=body_timeout,
            allow_empty=True,
            path_fields={"handoff_id"},
        )
        message.handoff_id = handoff_id
        return proto_json(await call(request, upstream.escalations.ResolveEscalation, message))

    @app.get(
        "/v1/escalations/{handoff_id}/context",
        tags=["escalations"],
        summary="The handoff-context screen (GetHandoffContext)",
        responses=_responses(200, "GetHandoffContextResponse", 400, 401, 403, 404),
    )
    async def context(request: Request, handoff_id: HandoffId) -> Response:
        message = esc.GetHandoffContextRequest(handoff_id=handoff_id)
        return proto_json(await call(request, upstream.escalations.GetHandoffContext, message))

    # ---- health and the page ------------------------------------------------------------

    @app.get(
        "/healthz",
        tags=["health"],
        summary="Whether the upstream gRPC server is serving (grpc.health.v1)",
        responses={
            200: _content("Health", "the upstream is serving"),
            503: _content("Health", "the upstream is down or not serving"),
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
        responses={503: _content("Health", "not ready; send traffic elsewhere")},
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

    install_docs(app)
    _install_web(app, settings)
    return app


# ---- the web page -----------------------------------------------------------------------

WEB_DIR = FilePath(__file__).resolve().parent / "web"
# The browser module lives with the clients; the page loads it from its real file.
STREAM_JS = FilePath(__file__).resolve().parent.parent / "clients" / "web" / "stream.js"
ROLES = ("technician", "engineer", "admin")


def _install_web(app: FastAPI, settings: GatewaySettings) -> None:
    """``/`` (the page), ``/static/*`` and, in local mode only, ``POST /local/token``."""
    host, _ = settings.http_host_port
    secret = settings.local_token_secret if is_loopback(host) else None
    if settings.local_token_secret is not None and secret is None:
        log.warning("local sign-in is off: %s is not a loopback address", host)
    page = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    page = page.replace(
        'data-local-mode="false"', f'data-local-mode="{str(secret is not None).lower()}"'
    )

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.api_route("/static/stream.js", methods=["GET", "HEAD"], include_in_schema=False)
    async def stream_js() -> Response:
        return FileResponse(STREAM_JS, media_type="text/javascript")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    if secret is None:
        return
    roles = ROLES if settings.local_admin else tuple(r for r in ROLES if r != "admin")

    @app.post("/local/token", include_in_schema=False)
    async def local_token(request: Request) -> Response:
        """A signed token for whoever asks: only ``resolutionflow serve`` offers this.

        Whoever can reach this route can act as anyone in any account, so it answers only
        a page this gateway served itself on a loopback address: a loopback ``Host`` (a
        DNS-rebinding page has its own name there), no foreign ``Origin``, and a JSON
        body (a cross-site form or ``text/plain`` post never gets here).
        """
        _require_local_caller(request)
        raw = await _read_body(request, 4096, settings.http_body_timeout_seconds)
        _require_json(request)
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
        if "role" not in violations and values["role"] not in ROLES:
            violations["role"] = f"one of {', '.join(roles)}"
        if violations:
            raise bad_request(violations)
        if values["role"] not in roles:
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                "local sign-in does not hand out admin tokens; start `resolutionflow serve "
                "--local-admin` to allow it, or use `resolutionflow token --role admin`",
            )
        now = int(time.time())
        claims = {
            "sub": values["user"],
            "account": values["account"],
            "role": values["role"],
            "name": values["name"] or values["user"],
            "iat": now,
            "exp": now + settings.local_token_ttl_seconds,
        }
        token = jwt.encode(claims, secret.get_secret_value(), algorithm="HS256")
        return JSONResponse({"token": token, "expiresAt": claims["exp"]})


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


# ---- translation helpers ----------------------------------------------------------------


def proto_json(
    message: Message, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The protobuf JSON mapping, as grpcurl prints it (camelCase, enum names)."""
    body = json.dumps(json_format.MessageToDict(message), separators=(",", ":"), ensure_ascii=False)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def _metadata(request: Request) -> tuple[tuple[str, str], ...]:
    """The caller's Authorization header, unchanged, and the request id as gRPC metadata."""
    rid = (("x-request-id", request_id(request)),)
    value = request.headers.get("authorization")
    if value is None:
        return rid
    if not value.isascii() or not value.isprintable():
        raise GatewayError(
            grpc.StatusCode.UNAUTHENTICATED, "malformed Authorization header (not printable ASCII)"
        )
    return (("authorization", value), *rid)


def _cursor(request: Request, after: int | None) -> int | None:
    """Where a stream resumes: ``Last-Event-ID`` (a reconnecting browser) wins over ?after=."""
    header = request.headers.get("last-event-id")
    if header is None or not header.strip():
        return after
    text = header.strip()
    if not text.isdigit() or int(text) > MAX_UINT64:
        raise bad_request({"Last-Event-ID": "must be an event id (a sequence) of this stream"})
    return int(text)


def _enum(field: str, value: str | None) -> Any:
    if value is None or value == "":
        return 0
    enum = _ENUM_TYPES[field].DESCRIPTOR
    number = enum_value(enum, value)
    if number is None:
        raise bad_request({field: f"unknown value {value[:80]!r}; {enum_choices(enum)}"})
    return number


def _require_json(request: Request) -> None:
    """A body is JSON only when it says so: ``text/plain`` or XML is refused with 415.

    Browsers send ``text/plain`` cross-origin without a CORS preflight; accepting it as JSON
    would let any web page post to the API with the user's ambient credentials.
    """
    media_type, _, params = request.headers.get("content-type", "").partition(";")
    charset = ""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    if media_type.strip().lower() != "application/json" or charset not in ("", "utf-8"):
        raise StarletteHTTPException(
            415, "the request body must be JSON, sent as Content-Type: application/json"
        )


def _timestamp(field: str, value: str) -> Timestamp:
    ts = Timestamp()
    try:
        ts.FromJsonString(value)
    except ValueError as e:
        raise bad_request({field: f"must be an RFC 3339 timestamp ({e})"}) from None
    return ts


async def _read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The body, refused with 413 as soon as it is known to be over ``limit`` bytes.

    A body that has not arrived whole within ``seconds`` is answered 408 and the
    connection closed: a client trickling a body must not hold a request open for ever.
    """
    too_large = StarletteHTTPException(413, f"the request body is over {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        log.info(
            "request body not received within %ss; answered 408",
            seconds,
            extra={"request_id": request_id(request), "path": request.url.path},
        )
        raise StarletteHTTPException(
            408,
            f"the request body did not arrive within {seconds:g} seconds",
            headers={"Connection": "close"},
        ) from None
    return b"".join(chunks)


async def _parse_body(
    request: Request,
    message: M,
    limit: int,
    *,
    seconds: float,
    allow_empty: bool = False,
    path_fields: set[str] | None = None,
) -> M:
    raw = await _read_body(request, limit, seconds)
    if not raw.strip():
        if allow_empty:
            return message
        raise bad_request({"body": "a JSON object is required"})
    _require_json(request)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise bad_request({"body": f"not valid JSON: {e}"}) from None
    if not isinstance(data, dict):
        raise bad_request({"body": "must be a JSON object"})
    where = _lone_surrogate(data)
    if where is not None:
        raise bad_request({where: "must be Unicode text (a lone surrogate such as \\ud800 is not)"})
    problems = check_body(data, message.DESCRIPTOR)
    if problems:
        raise bad_request(problems)
    for name in path_fields or ():
        descriptor = message.DESCRIPTOR.fields_by_name[name]
        for key in (name, descriptor.json_name):
            if key in data:
                raise bad_request({key: "is taken from the URL path, not the body"})
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as e:
        field, description = _violation(str(e))
        raise bad_request({field: description}, f"invalid request body: {description}") from None
    except (ValueError, TypeError, RecursionError) as e:
        raise bad_request({"body": str(e)}) from None
    return message


def _lone_surrogate(data: dict[str, Any]) -> str | None:
    """Where a decoded body holds a lone surrogate (JSON allows the escape "\\ud800"), or None.

    Protobuf strings cannot hold one. Caught here, before ``json_format``: its C
    implementation fails on one in a key or an enum name with a SystemError (a 500), and
    an error message echoing one could not be encoded. A bad key is reported at its parent.
    """
    todo: list[tuple[str, Any]] = [("body", data)]
    while todo:
        path, value = todo.pop()
        if isinstance(value, str):
            if not _is_unicode(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _is_unicode(key):
                    return path
                todo.append((key if path == "body" else f"{path}.{key}", item))
        elif isinstance(value, list):
            todo.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _violation(text: str) -> tuple[str, str]:
    """The field a json_format.ParseError is about, and a one-line description."""
    first = text.strip().splitlines()[0] if text.strip() else "invalid"
    unknown = re.search(r'has no field named "([^"]+)" at "([^"]+)"', text)
    if unknown:
        path = unknown.group(2).partition(".")[2]
        field = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        return field, f"unknown field {unknown.group(1)!r}"
    located = re.search(r" at ([A-Za-z_][\w]*)\.([\w.\[\]]+?)\.?$", first)
    if located:
        return located.group(2), first
    named = re.match(r"Failed to parse (\w+) field", first)
    if named:
        return named.group(1), first
    return "body", first


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

ERROR_DESCRIPTIONS = {
    400: "INVALID_ARGUMENT: bad input; details hold a google.rpc.BadRequest",
    401: "UNAUTHENTICATED: missing, invalid or expired token",
    403: "PERMISSION_DENIED: the token's role may not do this, or the escalation is held "
    "by someone else (names who)",
    404: "NOT_FOUND: no such handoff in the caller's account",
    409: "FAILED_PRECONDITION / ABORTED / ALREADY_EXISTS: e.g. already picked up (names "
    "who), or a requestId reused with a different body",
    408: "DEADLINE_EXCEEDED: the body did not arrive within RF_HTTP_BODY_TIMEOUT_SECONDS",
    413: "RESOURCE_EXHAUSTED: the body is over the gateway's RF_MAX_BODY_BYTES",
    415: "INVALID_ARGUMENT: the body is not sent as Content-Type: application/json",
    429: "RESOURCE_EXHAUSTED: a rate or stream limit, or a message over the server's limit",
    501: "UNIMPLEMENTED: the server does not offer this call yet",
    503: "UNAVAILABLE: the gRPC server is down or restarting; retry",
    504: "DEADLINE_EXCEEDED: the gRPC server did not answer in time",
}


def _content(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": openapi.ref(schema)}},
    }


def _responses(ok: int, schema: str, *errors: int) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {ok: _content(schema, "success")}
    for status in (*errors, 503, 504):
        responses[status] = _content("Error", ERROR_DESCRIPTIONS[status])
    responses[500] = _content("Error", "INTERNAL or an unexpected upstream status")
    return responses


def _stream_responses() -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "An SSE stream. Each event: `id: <sequence>`, `event: <type>`, "
            "`data: <HandoffEvent JSON>` (schema HandoffEvent); `: ping` comments; "
            "`event: error` with an Error body before the stream ends on an upstream "
            "failure (also when the server is down at the start).",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "itemSchema": openapi.ref("HandoffEvent"),
                }
            },
        }
    }
    for status in (400, 401, 403):
        responses[status] = _content("Error", ERROR_DESCRIPTIONS[status])
    return responses


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": openapi.ref(schema)}},
        }
    }


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
        builder = openapi.SchemaBuilder()
        for descriptor in (
            pb.CreateHandoffRequest.DESCRIPTOR,
            pb.CreateHandoffResponse.DESCRIPTOR,
            pb.GetHandoffResponse.DESCRIPTOR,
            pb.ListHandoffsResponse.DESCRIPTOR,
            pb.CancelHandoffResponse.DESCRIPTOR,
            pb.HandoffEvent.DESCRIPTOR,
            esc.ListEscalationsResponse.DESCRIPTOR,
            esc.PickUpEscalationResponse.DESCRIPTOR,
            esc.GetHandoffContextResponse.DESCRIPTOR,
            esc.ReleaseEscalationResponse.DESCRIPTOR,
            esc.ResolveEscalationResponse.DESCRIPTOR,
            esc.GetEscalationMetricsResponse.DESCRIPTOR,
        ):
            builder.message(descriptor)
        builder.message(esc.ResolveEscalationRequest.DESCRIPTOR, omit=frozenset({"handoff_id"}))
        openapi.apply_limits(builder.components)
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        # FastAPI's 422 models are not used: validation errors are 400 with the Error body.
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas.update(builder.components)
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
                    bad = _content("Error", ERROR_DESCRIPTIONS[400])
                    responses["400"] = responses.get("400", bad)
                    del responses["422"]
                if path.startswith("/v1/"):
                    operation["security"] = [{"bearerAuth": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
