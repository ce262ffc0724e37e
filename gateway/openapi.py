"""OpenAPI schemas generated from the protobuf descriptors.

Why from the descriptors and not hand-written pydantic models: the wire format *is* the
protobuf JSON mapping (``json_format`` parses the requests and prints the replies), so
the only schema that cannot drift from what the gateway really accepts and returns is
one derived from the same descriptors. A new field in a ``.proto`` shows up here with
no second place to edit. The rules follow the mapping: lowerCamelCase names, enums as
their names, ``google.protobuf.Timestamp`` as an RFC 3339 string, 64-bit integers as
decimal strings (numbers are accepted too), default values omitted.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor

Schema = dict[str, Any]

_SCALARS: dict[int, Schema] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {
        "type": "integer",
        "format": "uint32",
        "minimum": 0,
        "maximum": 2**32 - 1,
    },
    FieldDescriptor.TYPE_FIXED32: {
        "type": "integer",
        "format": "uint32",
        "minimum": 0,
        "maximum": 2**32 - 1,
    },
}
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}
_UNSIGNED = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}

# Well-known types with a special JSON form.
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339, e.g. 2026-01-31T09:30:00Z",
    },
    "google.protobuf.Duration": {"type": "string", "description": 'seconds with "s", e.g. "1.5s"'},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
}


def schema_name(full_name: str) -> str:
    """Component name: the proto name without its package (``resolutionflow.v1.``)."""
    return full_name.rsplit(".", 1)[-1]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


class SchemaBuilder:
    """Collects component schemas for messages and everything they reach."""

    def __init__(self) -> None:
        self.components: dict[str, Schema] = {}

    def message(self, descriptor: Any, *, omit: frozenset[str] = frozenset()) -> Schema:
        """A ``$ref`` to the component for ``descriptor`` (added with its dependencies)."""
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        name = schema_name(descriptor.full_name)
        if omit:
            name = f"{name}Body"
        if name not in self.components:
            self.components[name] = {}  # placeholder: recursion stops here
            properties = {
                field.json_name: self._field(field)
                for field in descriptor.fields
                if field.name not in omit
            }
            self.components[name] = {
                "type": "object",
                "title": name,
                "properties": properties,
                "additionalProperties": False,
            }
        return ref(name)

    def enum(self, descriptor: Any) -> Schema:
        name = schema_name(descriptor.full_name)
        if name not in self.components:
            self.components[name] = {
                "type": "string",
                "title": name,
                "enum": [v.name for v in descriptor.values],
            }
        return ref(name)

    def _field(self, field: Any) -> Schema:
        item: Schema
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            item = self.message(field.message_type)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            item = self.enum(field.enum_type)
        elif field.type in _INT64:
            pattern = "^[0-9]+$" if field.type in _UNSIGNED else "^-?[0-9]+$"
            item = {
                "anyOf": [
                    {"type": "string", "pattern": pattern},
                    {"type": "integer", **({"minimum": 0} if field.type in _UNSIGNED else {})},
                ],
                "description": "64-bit integer, printed as a decimal string",
            }
        else:
            item = dict(_SCALARS[field.type])
        if _is_repeated(field):
            return {"type": "array", "items": item}
        return item


def _is_repeated(field: Any) -> bool:
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


# The server's documented input limits (README "The API"), added to the generated schemas
# so that the document tells clients what will be refused. The server stays the authority
# (it answers 400 naming the field); these only describe it, they are not enforced here.
LIMITS: dict[str, Schema] = {
    "CreateHandoffRequest": {
        "required": ["sessionId", "intent", "problemSummary"],
        "properties": {
            "requestId": {
                "maxLength": 128,
                "description": "Optional idempotency key. Absent or empty: every call "
                "creates a handoff. Repeated with the same body: 201 with the first handoff, "
                "nothing created. Repeated with a different body: 409 ALREADY_EXISTS naming "
                "request_id.",
            },
            "sessionId": {"minLength": 1, "maxLength": 128},
            "problemSummary": {"minLength": 1, "maxLength": 2000},
            "stepsTried": {"maxItems": 50},
            "notes": {"maxLength": 10000},
        },
    },
    "Step": {
        "required": ["description"],
        "properties": {
            "description": {"minLength": 1, "maxLength": 1000},
            "outcome": {"maxLength": 200},
        },
    },
    "ResolveEscalationRequestBody": {
        "required": ["resolutionNote"],
        "properties": {
            "resolutionNote": {
                "minLength": 1,
                "maxLength": 5000,
                "description": "Required, not blank: what fixed it, for the next technician.",
            }
        },
    },
}


def apply_limits(components: dict[str, Schema]) -> None:
    for name, extra in LIMITS.items():
        schema = components.get(name)
        if not schema:
            continue
        if "required" in extra:
            schema["required"] = list(extra["required"])
        for prop, constraints in extra.get("properties", {}).items():
            schema["properties"][prop].update(constraints)


ERROR_SCHEMA: Schema = {
    "type": "object",
    "title": "Error",
    "description": "Every error: the gRPC status name, a message, and the rich-status "
    "details in the protobuf JSON mapping (e.g. google.rpc.BadRequest fieldViolations).",
    "properties": {
        "code": {
            "type": "string",
            "description": "gRPC status name",
            "examples": ["INVALID_ARGUMENT"],
        },
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "@type": {
                        "type": "string",
                        "examples": ["type.googleapis.com/google.rpc.BadRequest"],
                    },
                    "fieldViolations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "field": {"type": "string"},
                                "description": {"type": "string"},
                            },
                        },
                    },
                },
                "additionalProperties": True,
            },
        },
    },
    "required": ["code", "message", "details"],
}

HEALTH_SCHEMA: Schema = {
    "type": "object",
    "title": "Health",
    "properties": {
        "status": {"type": "string", "enum": ["SERVING", "NOT_SERVING", "UNKNOWN", "UNAVAILABLE"]},
        "message": {"type": "string"},
    },
    "required": ["status"],
}


# ---- operations: responses and bodies ---------------------------------------------------

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


def content(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": ref(schema)}},
    }


def responses(ok: int, schema: str, *errors: int) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {ok: content(schema, "success")}
    for status in (*errors, 503, 504):
        responses[status] = content("Error", ERROR_DESCRIPTIONS[status])
    responses[500] = content("Error", "INTERNAL or an unexpected upstream status")
    return responses


def stream_responses() -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "An SSE stream. Each event: `id: <sequence>`, `event: <type>`, "
            "`data: <HandoffEvent JSON>` (schema HandoffEvent); `: ping` comments; "
            "`event: error` with an Error body before the stream ends on an upstream "
            "failure (also when the server is down at the start).",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "itemSchema": ref("HandoffEvent"),
                }
            },
        }
    }
    for status in (400, 401, 403):
        responses[status] = content("Error", ERROR_DESCRIPTIONS[status])
    return responses


def body(schema: str, required: bool = True) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": ref(schema)}},
        }
    }
