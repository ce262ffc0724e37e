"""Rows to domain values and back, and the one way a change to a handoff gets its event.

The row mapping is derived from the Handoff dataclass by field name (ARCHITECTURE.md):
a new field needs its column in server/db/schema.py (and a migration), nothing here.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.schema import HANDOFFS
from server.domain import shapes
from server.domain.types import EventDetail, EventType, Handoff
from server.models import events

# Table columns that no domain field maps to, and why they are only in storage.
ROW_ONLY = frozenset(
    {
        "request_id",  # the idempotency key (NewHandoff.request_id), not part of the handoff
        "request_hash",  # NewHandoff.body_hash: tells a retry from a reused request_id
        "first_picked_up_at",  # metrics: time to the first pickup, whatever releases follow
        "sla_breached_at",  # metrics: when the SLA_BREACHED timer fired
        "assessment_lease_until",  # the assessment claim of one replica (worker.py)
        "assessment_claimed_by",
        "assessment_attempts",
    }
)
# Columns computed from the domain value, written with it so queries can sort on them.
DERIVED: dict[str, Callable[[Handoff], Any]] = {"priority_rank": lambda h: h.priority.rank}
# Columns named otherwise than the field path they hold (``assessment_`` + field name).
RENAMED = {"assessment_suggested_first_step": "assessment_first_step"}


def _leaf(src: shapes.Source, field: shapes.FieldShape, to_row: bool) -> shapes.Leaf:
    """How one value of the field becomes its column value, or back (None: as it is).

    A repeated dataclass (the steps) is one JSON column holding the items as the event
    payload does; enums are stored by value; datetimes go as they are (UTCDateTime)."""
    if field.nested:
        codec = shapes.json_encoder if to_row else shapes.json_decoder
        return src.call(codec(field.type))
    if field.enum:
        return "{}.value".format if to_row else src.call(field.type)
    return None


def _writers(src: shapes.Source, cls: type, prefix: str, path: str) -> list[tuple[str, str]]:
    """(column, expression of its value from the domain value ``v``) for dataclass ``cls``.

    A nested dataclass (UserRef, Assessment) spreads over one column per field, named
    ``<field>_<subfield>``; all of them are NULL when an optional one is None.
    """
    columns = []
    for field in shapes.shape(cls):
        column = RENAMED.get(prefix + field.name, prefix + field.name)
        value = path + field.name
        if field.nested and not field.repeated:
            for name, expression in _writers(src, field.type, column + "_", value + "."):
                if field.optional:
                    expression = f"(None if {value} is None else {expression})"
                columns.append((name, expression))
        else:
            columns.append((column, shapes.apply(field, value, _leaf(src, field, to_row=True))))
    return columns


def _reader(src: shapes.Source, cls: type, prefix: str = "") -> str:
    """The expression of the ``cls`` value stored in row ``v``'s columns."""
    args = []
    for field in shapes.shape(cls):
        column = RENAMED.get(prefix + field.name, prefix + field.name)
        if field.nested and not field.repeated:
            value = _reader(src, field.type, column + "_")
            if field.optional:  # absent when its first column is NULL
                first = _writers(src, field.type, column + "_", "")[0][0]
                value = f"(None if v.{first} is None else {value})"
        else:
            leaf = _leaf(src, field, to_row=False)
            value = shapes.apply(field, "v." + column, leaf, sequence="tuple")
        args.append(value)
    return f"{src.ref(cls)}({', '.join(args)})"


_SOURCE = shapes.Source()
_COLUMNS = _writers(_SOURCE, Handoff, "", "v.") + [
    (name, f"{_SOURCE.call(derive)('v')}") for name, derive in DERIVED.items()
]
# Every column a handoff's domain value fills (the rest are ROW_ONLY).
MAPPED_COLUMNS = frozenset(name for name, _ in _COLUMNS)
_TO_ROW = _SOURCE.compile(
    "handoff_to_row", "{" + ", ".join(f"{name!r}: {value}" for name, value in _COLUMNS) + "}"
)
_TO_DOMAIN = _SOURCE.compile("handoff_from_row", _reader(_SOURCE, Handoff))


def to_domain(r: Any) -> Handoff:
    """A handoff from anything with the table's columns as attributes (ORM record or row)."""
    return typing.cast(Handoff, _TO_DOMAIN(r))


def to_row(h: Handoff) -> dict[str, Any]:
    """The columns the handoff's fields fill, by column name (without ``ROW_ONLY``)."""
    return typing.cast(dict[str, Any], _TO_ROW(h))


_NUMBER = (
    update(HANDOFFS)
    .where(HANDOFFS.c.id == bindparam("handoff"))
    .values(sequence=bindparam("number"))
    .returning(*HANDOFFS.c)
)


async def record_change(
    session: AsyncSession,
    account_id: str,
    handoff_id: str,
    event_type: EventType,
    now: datetime,
    detail: EventDetail | None = None,
) -> Handoff:
    """Number the change just made to the handoff and log the state it left behind.

    The account's counter row is the last row the transaction locks: it serializes every
    writer of the account, so only what needs the number (numbering the handoff, its
    event) runs between taking it and the commit.
    """
    # The bump also queues the NOTIFY that wakes other replicas (events.next_sequence).
    sequence = await events.next_sequence(session, account_id)
    conn = await session.connection()
    row = (await conn.execute(_NUMBER, {"handoff": handoff_id, "number": sequence})).one()
    handoff = to_domain(row)
    await events.append(session, event_type, handoff, now, detail)
    return handoff
