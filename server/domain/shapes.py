"""The fields of the domain's dataclasses, read once, and the JSON mapping built from them.

Why: a handoff crosses four shapes (the table row, the domain value, the event log's JSON
payload, the protobuf message). Each layer's conversion is derived from the dataclass
fields by name, once at import, so adding a field is one edit per layer (the dataclass,
the column and its migration, the proto field) and never a list to keep in step by hand.
``tests/test_mapping.py`` fails when a layer misses a field. See ARCHITECTURE.md.

The conversions are compiled once from the field list (``Source``): no reflection per
call, since they run on every write (the event payload) and every event replayed.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any


@dataclasses.dataclass(frozen=True)
class FieldShape:
    """One field: its name and its type with ``| None`` and ``tuple[T, ...]`` taken off."""

    name: str
    type: Any  # str, int, datetime, an Enum, or a dataclass
    optional: bool  # ``T | None``
    repeated: bool  # ``tuple[T, ...]``
    default: Any  # dataclasses.MISSING when the field has none

    @property
    def nested(self) -> bool:
        return dataclasses.is_dataclass(self.type)

    @property
    def enum(self) -> bool:
        return isinstance(self.type, type) and issubclass(self.type, enum.Enum)


@functools.cache
def shape(cls: type) -> tuple[FieldShape, ...]:
    """The fields of dataclass ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    result = []
    for f in dataclasses.fields(cls):
        hint, optional, repeated = hints[f.name], False, False
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(args) != 1:
                raise TypeError(f"{cls.__name__}.{f.name}: only `T | None` unions are mapped")
            hint, optional = args[0], True
        if typing.get_origin(hint) is tuple:
            item, *rest = typing.get_args(hint)
            if rest != [Ellipsis]:
                raise TypeError(f"{cls.__name__}.{f.name}: only `tuple[T, ...]` is mapped")
            hint, repeated = item, True
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        result.append(FieldShape(f.name, hint, optional, repeated, default))
    return tuple(result)


class Source:
    """One conversion function, written as Python source from a field list and compiled
    once (the way ``dataclasses`` builds ``__init__``): it then runs exactly as fast as
    the hand-written conversion it replaces, one expression per field, no loop over
    fields per call. ``v`` is the function's argument."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {}

    def ref(self, value: Any) -> str:
        """A name the source can use for ``value`` (a class, a function, a table)."""
        label = "".join(c if c.isalnum() else "_" for c in getattr(value, "__name__", "value"))
        name = f"_{label}_{len(self.env)}"
        self.env[name] = value
        return name

    def call(self, function: Any) -> Callable[[str], str]:
        """The leaf expression ``function(x)``."""
        name = self.ref(function)
        return lambda x: f"{name}({x})"

    def compile(self, name: str, expression: str) -> Callable[[Any], Any]:
        source = f"def {name}(v):\n    return {expression}\n"
        exec(compile(source, f"<{name}>", "exec"), self.env)
        function: Callable[[Any], Any] = self.env[name]
        function.__doc__ = source  # what runs, for help() and a debugger
        return function


Leaf = Callable[[str], str] | None  # expression of the converted value, given the raw one


def apply(field: FieldShape, value: str, leaf: Leaf, sequence: str = "list") -> str:
    """The expression of the field's converted value, given the expression of its raw
    value: ``leaf`` on every item of a repeated field (collected in ``sequence``), and
    not on None."""
    if field.repeated:
        if leaf is None:
            return f"{sequence}({value})"
        items = f"[{leaf('x')} for x in {value}]"
        return items if sequence == "list" else f"{sequence}({items})"
    if leaf is None:
        return value
    if field.optional:
        return f"(None if {value} is None else {leaf(value)})"
    return leaf(value)


@functools.cache
def json_encoder(cls: type) -> Callable[[Any], dict[str, Any]]:
    """``value -> dict`` of JSON values, keyed by field name."""
    src = Source()
    items = []
    for field in shape(cls):
        leaf: Leaf = None
        if field.nested:
            leaf = src.call(json_encoder(field.type))
        elif field.enum:
            leaf = "{}.value".format
        elif field.type is datetime:
            leaf = "{}.isoformat()".format
        items.append(f"{field.name!r}: {apply(field, 'v.' + field.name, leaf)}")
    return src.compile(f"{cls.__name__}_to_json", "{" + ", ".join(items) + "}")


@functools.cache
def json_decoder(cls: type) -> Callable[[dict[str, Any]], Any]:
    """``dict -> value``, the inverse of ``json_encoder``.

    A key missing from the payload (one written before the field existed) reads as the
    field's default, or None for an optional field: the event log keeps old payloads.
    """
    src = Source()
    args = []
    for field in shape(cls):
        leaf: Leaf = None
        if field.nested:
            leaf = src.call(json_decoder(field.type))
        elif field.enum or field.type is datetime:
            convert = field.type if field.type is not datetime else datetime.fromisoformat
            leaf = src.call(convert)
        value = apply(field, f"v[{field.name!r}]", leaf, sequence="tuple")
        fallback = field.default
        if fallback is dataclasses.MISSING and field.optional:
            fallback = None
        if fallback is not dataclasses.MISSING:
            value = f"({value} if {field.name!r} in v else {src.ref(fallback)})"
        args.append(value)
    return src.compile(f"{cls.__name__}_from_json", f"{src.ref(cls)}({', '.join(args)})")
