"""JSON request bodies: read (bounded), checked and turned into the protobuf message.

Every route with a body goes through ``parse_body``: 415 unless sent as JSON, 413 over the
size limit, 408 when it trickles, 400 naming the field for anything ``json_format`` would
take wrongly or fail on.

``json_format.ParseDict`` is lenient where an HTTP API should not be, and fails where it
should answer 400: it turns ``1.5`` into enum value 1, ``true`` into 1, and raises a bare
``OverflowError`` (a 500) for ``1e999`` or ``Infinity``, which Python's JSON decoder reads
as a float infinity. This pass runs first, names the field of each bad number, and lets
the body use an enum's short name (``"HIGH"`` for ``PRIORITY_HIGH``) as the query strings
already do, so that a client need not know buf's prefixing convention.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from gateway.errors import bad_request
from gateway.request_ids import request_id

M = TypeVar("M", bound=Message)
log = logging.getLogger(__name__)

_INTEGER_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}


def enum_prefix(enum: EnumDescriptor) -> str:
    """The prefix buf's STANDARD rules put on every value (``PRIORITY_`` for ``Priority``).

    Those rules also name the zero value ``<PREFIX>UNSPECIFIED``, which gives the prefix.
    """
    zero = enum.values_by_number.get(0)
    return zero.name.removesuffix("UNSPECIFIED") if zero is not None else ""


def enum_choices(enum: EnumDescriptor) -> str:
    """The valid values, for an error message: the full names and the short ones."""
    prefix = enum_prefix(enum)
    names = [v.name for v in enum.values if not v.name.endswith("_UNSPECIFIED")]
    short = ", ".join(n.removeprefix(prefix) for n in names)
    return f"one of {', '.join(names)} (or without the prefix: {short})"


def enum_value(enum: EnumDescriptor, value: str) -> int | None:
    """The number of an enum value given by its full name or, case-insensitively, short name."""
    found = enum.values_by_name.get(value) or enum.values_by_name.get(
        enum_prefix(enum) + value.upper()
    )
    return None if found is None else int(found.number)


def check_body(data: dict[str, Any], descriptor: Any) -> dict[str, str]:
    """Field path -> what is wrong, for the numbers and enums of ``data`` (fixed in place).

    Short enum names are replaced by the full ones. Fields this message does not have are
    left to ``json_format``, which names them; their numbers are still checked.
    """
    violations: dict[str, str] = {}
    _check_message(data, descriptor, "", violations)
    return violations


def _check_message(
    data: dict[str, Any], descriptor: Descriptor, path: str, violations: dict[str, str]
) -> None:
    by_json = {f.json_name: f for f in descriptor.fields}
    for key in list(data):
        field = by_json.get(key) or descriptor.fields_by_name.get(key)
        where = f"{path}.{key}" if path else key
        value = data[key]
        if field is None:
            _check_finite(value, where, violations)
        elif field.is_repeated and isinstance(value, list):
            for i, item in enumerate(value):
                value[i] = _check_value(item, field, f"{where}[{i}]", violations)
        else:
            data[key] = _check_value(value, field, where, violations)


def _check_value(value: Any, field: FieldDescriptor, where: str, violations: dict[str, str]) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return _check_enum(value, field.enum_type, where, violations)
    if field.message_type is not None and isinstance(value, dict):
        _check_message(value, field.message_type, where, violations)
        return value
    if field.type in _INTEGER_TYPES and isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            violations[where] = "must be a whole number"
        return value
    _check_finite(value, where, violations)
    return value


def _check_enum(value: Any, enum: EnumDescriptor, where: str, violations: dict[str, str]) -> Any:
    if value is None:
        return value
    if isinstance(value, str):
        number = enum_value(enum, value)
        if number is not None:
            return enum.values_by_number[number].name
    elif _is_number(value) and value in enum.values_by_number and isinstance(value, int):
        return value
    shown = repr(value) if isinstance(value, str) else str(value) if _is_number(value) else "this"
    violations[where] = f"unknown value {shown[:80]}; {enum_choices(enum)}"
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_finite(value: Any, where: str, violations: dict[str, str]) -> None:
    """JSON has no infinities or NaN; Python's decoder makes them of 1e999 and ``Infinity``."""
    todo = [(where, value)]
    while todo:
        at, item = todo.pop()
        if isinstance(item, float) and not math.isfinite(item):
            violations[at] = "must be a finite number (JSON has no Infinity or NaN)"
        elif isinstance(item, dict):
            todo.extend((f"{at}.{k}", v) for k, v in item.items())
        elif isinstance(item, list):
            todo.extend((f"{at}[{i}]", v) for i, v in enumerate(item))


def require_json(request: Request) -> None:
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


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
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


async def parse_body(
    request: Request,
    message: M,
    limit: int,
    *,
    seconds: float,
    allow_empty: bool = False,
    path_fields: set[str] | None = None,
) -> M:
    raw = await read_body(request, limit, seconds)
    if not raw.strip():
        if allow_empty:
            return message
        raise bad_request({"body": "a JSON object is required"})
    require_json(request)
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
