"""Checks of a decoded JSON request body against the protobuf message it becomes.

``json_format.ParseDict`` is lenient where an HTTP API should not be, and fails where it
should answer 400: it turns ``1.5`` into enum value 1, ``true`` into 1, and raises a bare
``OverflowError`` (a 500) for ``1e999`` or ``Infinity``, which Python's JSON decoder reads
as a float infinity. This pass runs first, names the field of each bad number, and lets
the body use an enum's short name (``"HIGH"`` for ``PRIORITY_HIGH``) as the query strings
already do, so that a client need not know buf's prefixing convention.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

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
