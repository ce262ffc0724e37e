"""The REST routes, built at start-up from the ``google.api.http`` options of the RPCs.

Why: grpc-gateway and Envoy's gRPC-JSON transcoder read each RPC's ``google.api.http``
annotation for its HTTP verb, its path template and which request fields come from the
path, the query string and the body. This gateway follows the same convention from the
descriptors of the generated modules, so the ``.proto`` is the one place a route is
written: a new unary RPC with an annotation is served and documented (``/openapi.json``)
with no hand-written route. The binding rules are the convention's:

- ``{field}`` in the path template sets that request field (a UUID for ``*_id`` fields
  is only documented; the server checks it);
- ``body: "*"`` parses the whole JSON body into the request (path fields may not also be
  in the body), ``body: "field"`` only that field;
- every other scalar, enum, repeated scalar or ``google.protobuf.Timestamp`` field of the
  request is a query parameter, by its proto name (``page_size``) or its JSON name
  (``pageSize``); enums take their full or short names (``status=open``).

What an annotation cannot say (201 and ``Location`` for a create, the summaries and the
error statuses the document lists) is in ``OPERATIONS``, keyed by RPC name; an RPC
without an entry gets defaults. Server-streaming RPCs are served as Server-Sent Events
at the paths in ``STREAMS``: the one place an RPC is declared stream-only; the RPCs of
``INTERNAL`` are the gateway's own and have no route.
"""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import google.api.annotations_pb2 as annotations_pb2
import grpc
from fastapi import FastAPI, Query, Request
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import (
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from starlette.responses import Response

from gateway import openapi
from gateway.errors import GatewayError, bad_request
from gateway.json_body import enum_choices, enum_value, parse_body
from gateway.request_ids import request_id
from gateway.settings import GatewaySettings
from gateway.sse import SSEStreams
from gateway.upstream import Upstream

API_PACKAGE = "resolutionflow.v1"
MAX_UINT64 = 2**64 - 1


@dataclass(frozen=True)
class Operation:
    """What the HTTP side of one RPC adds to its annotation (all optional)."""

    summary: str = ""
    description: str = ""
    # The success status, and a Location header: a path with {field.path} of the reply.
    status: int = 200
    location: str = ""
    # Error statuses the document lists (503, 504 and 500 always are). None: derived.
    errors: tuple[int, ...] | None = None
    # A missing body is the empty request (the server then names what is required).
    empty_body: bool = False
    # Query parameter descriptions, by proto field name.
    parameters: dict[str, str] = field(default_factory=dict)


PAGE_TOKEN = "nextPageToken of the previous page"

OPERATIONS: dict[str, Operation] = {
    "CreateHandoff": Operation(
        summary="Create a handoff (CreateHandoff); idempotent per requestId if given",
        description="With a `requestId`, a repeat with the same body returns the first "
        "handoff (201, nothing created) and a repeat with a different body is 409 "
        "`ALREADY_EXISTS` naming `request_id`. Without one, every call creates a handoff.",
        status=201,
        location="/v1/handoffs/{handoff.id}",
        errors=(400, 401, 403, 408, 409, 413, 415, 429),
    ),
    "ListHandoffs": Operation(
        summary="List handoffs, newest first (ListHandoffs)",
        parameters={"page_size": "1-200, default 50", "page_token": PAGE_TOKEN},
    ),
    "GetHandoff": Operation(summary="One handoff (GetHandoff)"),
    "CancelHandoff": Operation(
        summary="Cancel an open handoff (CancelHandoff)", errors=(400, 401, 403, 404, 409)
    ),
    "ListEscalations": Operation(
        summary="The open queue and the sequence it was read at (ListEscalations)",
        description="Ordered by what needs a human first: `slaDueAt` (breached first), "
        "then `createdAt`, then `id`. A queue over 1 MiB comes in pages (`nextPageToken`).",
        parameters={"page_token": f"{PAGE_TOKEN} (queues over 1 MiB)"},
    ),
    "GetEscalationMetrics": Operation(
        summary="Escalation metrics over a window (GetEscalationMetrics)",
        errors=(400, 401, 403, 501),
        parameters={
            "start_time": "RFC 3339; default: 7 days before end_time",
            "end_time": "RFC 3339; default: now",
        },
    ),
    "PickUpEscalation": Operation(
        summary="Pick up an escalation; exactly one caller wins (PickUpEscalation)",
        description="The others get 409 naming the holder. Picking up an escalation you "
        "already hold answers 200 with its context again and changes nothing.",
        errors=(400, 401, 403, 404, 409),
    ),
    "ReleaseEscalation": Operation(
        summary="Give a picked-up escalation back to the queue (ReleaseEscalation)",
        errors=(400, 401, 403, 404, 409),
    ),
    "ResolveEscalation": Operation(
        summary="Resolve a picked-up escalation (ResolveEscalation); holder only, note required",
        errors=(400, 401, 403, 404, 408, 409, 413, 415),
        empty_body=True,
    ),
    "GetHandoffContext": Operation(summary="The handoff-context screen (GetHandoffContext)"),
    "CreateWebhookEndpoint": Operation(
        summary="Register a webhook endpoint; its secret is in this answer only (admins)",
        description="The URL must be https on a public address (unless the server allows "
        "otherwise); deliveries are signed per Standard Webhooks.",
        status=201,
    ),
    "ListWebhookEndpoints": Operation(summary="The account's webhook endpoints (admins)"),
    "UpdateWebhookEndpoint": Operation(
        summary="Change a webhook endpoint; enabling clears its failing state (admins)"
    ),
    "DeleteWebhookEndpoint": Operation(summary="Delete a webhook endpoint (admins)"),
    "RotateWebhookSecret": Operation(
        summary="A new signing secret, shown this once; the old one stops at once (admins)",
        empty_body=True,
    ),
    "ListWebhookDeliveries": Operation(
        summary="An endpoint's deliveries, newest first (admins)",
        parameters={"page_size": "1-500, default 100"},
    ),
    "RedeliverWebhook": Operation(
        summary="Send a delivery again, with the same webhook-id (admins)", empty_body=True
    ),
    "GetEscalationPolicy": Operation(summary="The account's breach policy (admins)"),
    "UpdateEscalationPolicy": Operation(
        summary="Change the account's breach policy; fields not given keep their value (admins)"
    ),
}


@dataclass(frozen=True)
class Stream:
    path: str
    summary: str


# Server-streaming RPCs: Server-Sent Events, resumable with Last-Event-ID or ?after=.
STREAMS: dict[str, Stream] = {
    "WatchHandoffs": Stream(
        "/v1/handoffs/stream", "The account's handoffs, live (WatchHandoffs as SSE)"
    ),
    "StreamEscalations": Stream(
        "/v1/escalations/stream",
        "The account's escalation queue, live (StreamEscalations as SSE)",
    ),
}


# Unary RPCs with no REST route, on purpose: what the gateway itself calls for its
# browsers. ReportPresence carries other callers' tokens, which only an edge holds; a
# browser reports itself by holding its queue stream open.
INTERNAL: frozenset[str] = frozenset({"ReportPresence"})


def api_services() -> list[ServiceDescriptor]:
    """Every service of the API package (each generated ``*_pb2`` module of it)."""
    package = importlib.import_module(API_PACKAGE)
    services: list[ServiceDescriptor] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"{API_PACKAGE}.{info.name}")
            services.extend(module.DESCRIPTOR.services_by_name.values())
    return services


def api_methods() -> Iterator[MethodDescriptor]:
    for service in api_services():
        yield from service.methods


# ---- the annotation, parsed -------------------------------------------------------------

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:=([^}]*))?\}")
_WELL_KNOWN_QUERY = {"google.protobuf.Timestamp"}


@dataclass(frozen=True)
class Binding:
    """One RPC's HTTP route, from its ``google.api.http`` option."""

    method: MethodDescriptor
    verb: str
    path: str  # the Starlette template: /v1/handoffs/{handoff_id}
    path_fields: tuple[str, ...]
    body: str  # "" (no body), "*" (the whole request) or a field name

    @property
    def rpc(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def query_fields(self) -> tuple[FieldDescriptor, ...]:
        if self.body == "*":
            return ()
        taken = {*self.path_fields, self.body}
        return tuple(
            f for f in self.method.input_type.fields if f.name not in taken and _bindable(f)
        )


def http_binding(method: MethodDescriptor) -> Binding | None:
    """The route of ``method``, or None if it has no ``google.api.http`` option."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule = options.Extensions[annotations_pb2.http]
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise ValueError(f"{method.full_name}: google.api.http without a verb and path")
    if rule.additional_bindings:
        raise ValueError(f"{method.full_name}: additional_bindings are not supported")
    if pattern == "custom":
        verb, template = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, template = pattern.upper(), getattr(rule, pattern)
    fields: list[str] = []

    def variable(match: re.Match[str]) -> str:
        name, segments = match.group(1), match.group(2)
        if name not in method.input_type.fields_by_name:
            raise ValueError(f"{method.full_name}: {name!r} is not a request field")
        fields.append(name)
        if segments in (None, "*"):
            return "{" + name + "}"
        if segments == "**":
            return "{" + name + ":path}"
        raise ValueError(f"{method.full_name}: path pattern {segments!r} is not supported")

    path = _VARIABLE.sub(variable, template)
    body = rule.body
    if body not in ("", "*") and body not in method.input_type.fields_by_name:
        raise ValueError(f"{method.full_name}: body {body!r} is not a request field")
    return Binding(method, verb, path, tuple(fields), body)


def bindings() -> list[Binding]:
    """Every annotated RPC's route, literal path segments before variables.

    Starlette takes the first route that matches, so ``/v1/x/metrics`` must come before
    ``/v1/x/{id}``: at each segment a literal sorts before a variable.
    """
    found = [b for m in api_methods() if (b := http_binding(m)) is not None]
    return sorted(found, key=lambda b: [s.startswith("{") for s in b.path.split("/")])


# ---- requests -----------------------------------------------------------------------------

_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _bindable(f: FieldDescriptor) -> bool:
    """Whether a field can come from a query string: scalars, enums and timestamps."""
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        message = f.message_type
        return not f.is_repeated and message is not None and message.full_name in _WELL_KNOWN_QUERY
    return f.type != FieldDescriptor.TYPE_GROUP


def _value(f: FieldDescriptor, text: str) -> Any:
    """A query or path string as the field's value; ValueError says what is wrong."""
    kind = f.type
    if kind == FieldDescriptor.TYPE_STRING:
        return text
    if kind == FieldDescriptor.TYPE_ENUM and f.enum_type is not None:
        number = enum_value(f.enum_type, text)
        if number is None:
            raise ValueError(f"unknown value {text[:80]!r}; {enum_choices(f.enum_type)}")
        return number
    if kind in _RANGES:
        low, high = _RANGES[kind]
        try:
            number = int(text)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return number
    if kind == FieldDescriptor.TYPE_BOOL:
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise ValueError("must be true or false")
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        try:
            real = float(text)
        except ValueError:
            real = math.nan
        if not math.isfinite(real):
            raise ValueError("must be a finite number")
        return real
    if kind == FieldDescriptor.TYPE_MESSAGE:  # google.protobuf.Timestamp
        ts = Timestamp()
        try:
            ts.FromJsonString(text)
        except ValueError as e:
            raise ValueError(f"must be an RFC 3339 timestamp ({e})") from None
        return ts
    raise ValueError("cannot be given in the URL")


def _set(message: Message, f: Any, values: list[str]) -> None:
    converted = [_value(f, text) for text in values]
    if f.is_repeated:
        getattr(message, f.name).extend(converted)
    elif isinstance(converted[-1], Message):
        getattr(message, f.name).CopyFrom(converted[-1])
    else:
        setattr(message, f.name, converted[-1])


def bind_url(message: Message, request: Request, binding: Binding) -> None:
    """Path variables and query parameters into ``message``; 400 naming each bad one."""
    problems: dict[str, str] = {}
    fields = message.DESCRIPTOR.fields_by_name
    for name in binding.path_fields:
        try:
            _set(message, fields[name], [request.path_params[name]])
        except ValueError as e:
            problems[name] = str(e)
    query = request.query_params
    for f in binding.query_fields:
        values = [v for v in query.getlist(f.name) or query.getlist(f.json_name) if v != ""]
        if values:
            try:
                _set(message, f, values)
            except ValueError as e:
                problems[f.name] = str(e)
    if problems:
        raise bad_request(problems)


def proto_json(
    message: Message, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The protobuf JSON mapping, as grpcurl prints it (camelCase, enum names)."""
    body = json.dumps(json_format.MessageToDict(message), separators=(",", ":"), ensure_ascii=False)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def metadata(request: Request) -> tuple[tuple[str, str], ...]:
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


def _expand(template: str, reply: Message) -> str:
    """``/v1/handoffs/{handoff.id}`` with the reply's ``handoff.id``."""

    def value(match: re.Match[str]) -> str:
        found: Any = reply
        for part in match.group(1).split("."):
            found = getattr(found, part)
        return str(found)

    return re.sub(r"\{([\w.]+)\}", value, template)


def _message_class(descriptor: Any) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


# ---- routes -------------------------------------------------------------------------------


def install(app: FastAPI, upstream: Upstream, streams: SSEStreams) -> None:
    """The SSE routes of ``STREAMS``, then one route per annotated RPC."""
    settings: GatewaySettings = upstream.settings
    by_name = {m.name: m for m in api_methods()}
    for name, stream in STREAMS.items():
        _install_stream(app, upstream, streams, by_name[name], stream)
    for binding in bindings():
        _install_unary(app, upstream, settings, binding)


def _tag(path: str) -> str:
    """The OpenAPI tag: the collection the path is under (``handoffs``, ``escalations``)."""
    return path.strip("/").split("/")[1]


def _call(upstream: Upstream, rpc: str, method: MethodDescriptor, streaming: bool) -> Any:
    """The RPC's multicallable on the upstream channel, made once per channel."""
    request_class = _message_class(method.input_type)
    response_class = _message_class(method.output_type)
    made: list[Any] = [None, None]  # the channel, and the multicallable on it

    def get() -> Any:
        channel = upstream.channel
        if made[0] is not channel:
            kind = channel.unary_stream if streaming else channel.unary_unary
            made[:] = [
                channel,
                kind(
                    rpc,
                    request_serializer=request_class.SerializeToString,
                    response_deserializer=response_class.FromString,
                ),
            ]
        return made[1]

    return get


def _install_unary(
    app: FastAPI, upstream: Upstream, settings: GatewaySettings, binding: Binding
) -> None:
    method = binding.method
    operation = OPERATIONS.get(method.name, Operation())
    request_class = _message_class(method.input_type)
    rpc: Callable[[], Callable[..., Awaitable[Message]]] = _call(
        upstream, binding.rpc, method, streaming=False
    )

    async def endpoint(request: Request) -> Response:
        message = request_class()
        if binding.body:
            target = message if binding.body == "*" else getattr(message, binding.body)
            await parse_body(
                request,
                target,
                settings.max_body_bytes,
                seconds=settings.http_body_timeout_seconds,
                allow_empty=operation.empty_body,
                path_fields=set(binding.path_fields) if binding.body == "*" else None,
            )
        bind_url(message, request, binding)
        reply = await rpc()(
            message, metadata=metadata(request), timeout=settings.upstream_timeout_seconds
        )
        headers = {"Location": _expand(operation.location, reply)} if operation.location else None
        return proto_json(reply, status_code=operation.status, headers=headers)

    app.add_api_route(
        binding.path,
        endpoint,
        methods=[binding.verb],
        name=_snake(method.name),
        status_code=operation.status,
        tags=[_tag(binding.path)],
        summary=operation.summary or method.name,
        description=operation.description or None,
        responses=openapi.responses(
            operation.status,
            openapi.schema_name(method.output_type.full_name),
            *(operation.errors if operation.errors is not None else _errors(binding)),
        ),
        openapi_extra=_openapi_request(binding, operation),
    )


def _install_stream(
    app: FastAPI,
    upstream: Upstream,
    streams: SSEStreams,
    method: MethodDescriptor,
    stream: Stream,
) -> None:
    request_class = _message_class(method.input_type)
    rpc = _call(upstream, f"/{method.containing_service.full_name}/{method.name}", method, True)
    # The queue's browsers share one stream per account: this gateway reports who they
    # are (gateway.presence), and says so on the calls, so the server does not count them.
    reported = (
        streams.presence.metadata
        if streams.presence is not None and method.name == "StreamEscalations"
        else ()
    )

    # The request's other fields (e.g. StreamEscalations' filters) come from the query
    # string, as for a unary GET.
    query_fields = tuple(
        f for f in method.input_type.fields if f.name != "after_sequence" and _bindable(f)
    )

    async def endpoint(
        request: Request,
        after: int | None = Query(None, ge=0, le=MAX_UINT64, description="resume after it"),
    ) -> Response:
        message = request_class()
        problems: dict[str, str] = {}
        for f in query_fields:
            query = request.query_params
            values = [v for v in query.getlist(f.name) or query.getlist(f.json_name) if v != ""]
            if values:
                try:
                    _set(message, f, values)
                except ValueError as e:
                    problems[f.name] = str(e)
        if problems:
            raise bad_request(problems)
        cursor = _cursor(request, after)
        if cursor is not None:
            message.after_sequence = cursor  # type: ignore[attr-defined]
        call = rpc()(message, metadata=(*metadata(request), *reported))
        return await streams.respond(
            call,
            # The shared feed of the browser's audience reopens its stream through this,
            # on whatever channel is current then (gateway.fanout).
            rpc=lambda *args, **kwargs: rpc()(*args, **kwargs),
            request=message,
            cursor=cursor,
            authorization=request.headers.get("authorization"),
            reported=reported,
        )

    app.add_api_route(
        stream.path,
        endpoint,
        methods=["GET"],
        name=_snake(method.name),
        tags=["streams"],
        summary=stream.summary,
        responses=openapi.stream_responses(),
        openapi_extra={
            "parameters": [
                {"name": f.name, "in": "query", "required": False, "schema": _parameter_schema(f)}
                for f in query_fields
            ]
        }
        if query_fields
        else None,
    )


def _cursor(request: Request, after: int | None) -> int | None:
    """Where a stream resumes: ``Last-Event-ID`` (a reconnecting browser) wins over ?after=."""
    header = request.headers.get("last-event-id")
    if header is None or not header.strip():
        return after
    text = header.strip()
    if not text.isdigit() or int(text) > MAX_UINT64:
        raise bad_request({"Last-Event-ID": "must be an event id (a sequence) of this stream"})
    return int(text)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _errors(binding: Binding) -> tuple[int, ...]:
    """The error statuses of an RPC without its own list: what its inputs can cause."""
    errors = [400, 401, 403]
    if binding.path_fields:
        errors.append(404)
    if binding.body:
        errors += [408, 413, 415]
    return tuple(errors)


# ---- the OpenAPI document -----------------------------------------------------------------


def _body_schema(binding: Binding) -> str:
    name = openapi.schema_name(binding.method.input_type.full_name)
    if binding.body != "*":
        f = binding.method.input_type.fields_by_name[binding.body]
        return openapi.schema_name(f.message_type.full_name) if f.message_type else name
    return f"{name}Body" if binding.path_fields else name


def _openapi_request(binding: Binding, operation: Operation) -> dict[str, Any]:
    fields = binding.method.input_type.fields_by_name
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": _parameter_schema(fields[name], path=True),
            **({"description": "handoff id (a UUID)"} if name == "handoff_id" else {}),
        }
        for name in binding.path_fields
    ]
    for f in binding.query_fields:
        parameter: dict[str, Any] = {
            "name": f.name,
            "in": "query",
            "required": False,
            "schema": _parameter_schema(f),
        }
        if f.name in operation.parameters:
            parameter["description"] = operation.parameters[f.name]
        parameters.append(parameter)
    extra: dict[str, Any] = {}
    if parameters:
        extra["parameters"] = parameters
    if binding.body:
        extra.update(openapi.body(_body_schema(binding)))
    return extra


def _parameter_schema(f: FieldDescriptor, path: bool = False) -> dict[str, Any]:
    schema: dict[str, Any]
    if f.type == FieldDescriptor.TYPE_ENUM and f.enum_type is not None:
        schema = {"type": "string", "enum": [v.name for v in f.enum_type.values]}
    elif f.type in _RANGES:
        low, high = _RANGES[f.type]
        schema = {"type": "integer", "minimum": low, "maximum": high}
    elif f.type == FieldDescriptor.TYPE_BOOL:
        schema = {"type": "boolean"}
    elif f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        schema = {"type": "number"}
    elif f.type == FieldDescriptor.TYPE_MESSAGE:
        schema = {"type": "string", "format": "date-time"}
    else:
        schema = {"type": "string"}
        if path and f.name.endswith("_id"):
            schema["format"] = "uuid"
    return {"type": "array", "items": schema} if f.is_repeated else schema


def schema_components() -> dict[str, openapi.Schema]:
    """The component schemas of every request body and reply the routes use."""
    builder = openapi.SchemaBuilder()
    for binding in bindings():
        method = binding.method
        if binding.body == "*":
            builder.message(method.input_type, omit=frozenset(binding.path_fields))
        elif binding.body:
            f = method.input_type.fields_by_name[binding.body]
            if f.message_type is not None:
                builder.message(f.message_type)
        builder.message(method.output_type)
    for method in api_methods():
        if method.name in STREAMS:
            builder.message(method.output_type)
    openapi.apply_limits(builder.components)
    return builder.components
