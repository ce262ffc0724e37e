"""Creates and assessment outcomes, written many to a transaction (group commit).

``Database.write_batched`` gives ``write`` every create and assessment outcome that arrived
while the previous transaction committed; ``write`` does them all with a fixed number of
statements, whatever their number: the outcomes' conditional updates (one statement), the
creates' inserts (one, idempotent by request_id) and their SLA timers, one counter bump per
account, then the numbering and the events. On PostgreSQL the timers go with the inserts
and the events with the numbering (a statement's data-modifying WITH parts), so a batch is
BEGIN, four statements (one per account for the bump) and COMMIT; SQLite, which has no
such statements, takes one statement for each. One at a time, each item took four or five
statements and a transaction of its own, and a statement's round trip and execution cost
more CPU than the rows it carries. The rows travel as one JSON parameter per statement.

The order inside is what keeps the invariants: the outcomes' updates (existing rows) come
before any counter row is taken (see ``Database.write_batched``); the inserts decide
idempotency before anything is numbered, so a repeated request_id never costs a sequence;
counter rows are taken account by account in sorted order and held to the commit, so each
account's events are numbered gap-free in commit order. Each item's outcome is its own:
a create refused for its request_id changed nothing and fails alone.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, BigInteger, String, bindparam, insert, select, text, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.database import APPENDED_EVENTS
from server.db.schema import EVENTS, HANDOFFS, SLA_TIMERS, UTCDateTime
from server.domain.types import (
    Assessment,
    AssessmentStatus,
    Caller,
    Event,
    EventType,
    Handoff,
    Intent,
    NewHandoff,
)
from server.errors import AlreadyExists, DomainError, FieldViolation, Unavailable
from server.models import events, sla
from server.models.records import to_domain, to_row


@dataclass(frozen=True)
class Create:
    """A validated create request of ``caller``, as of ``now``."""

    caller: Caller
    new: NewHandoff
    now: datetime
    sla_target_seconds: float
    assessment_lease_seconds: float
    # The replica that holds the new assessment's claim from the insert on.
    assessment_owner: str = ""


@dataclass(frozen=True)
class SaveAssessment:
    """An assessment's outcome, recorded only over PENDING, with its ASSESSMENT_READY."""

    handoff_id: str
    result: Assessment
    now: datetime


# An outcome per item: a create's (handoff, whether this call created it); a save's
# handoff as recorded, or None if it was no longer PENDING; or the item's own DomainError.
Outcome = tuple[Handoff, bool] | Handoff | None | DomainError


async def create(
    session: AsyncSession,
    caller: Caller,
    new: NewHandoff,
    now: datetime,
    sla_target_seconds: float,
    assessment_lease_seconds: float,
    assessment_owner: str = "",
) -> tuple[Handoff, bool]:
    """Create the handoff and its CREATED event (``write`` with this one create).

    A repeated request_id with the same body returns the first handoff; with another body
    it is refused (ALREADY_EXISTS naming request_id). Without a request_id every call
    creates. The creating replica holds the claim on the new assessment from the start (no
    write of its own needed), so no other replica runs it unless this one dies or fails to
    save. Returns the handoff and whether this call created it.
    """
    item = Create(caller, new, now, sla_target_seconds, assessment_lease_seconds, assessment_owner)
    (outcome,) = await write(session, [item])
    if isinstance(outcome, DomainError):
        raise outcome
    assert isinstance(outcome, tuple)
    return outcome


async def save_assessment(
    session: AsyncSession, handoff_id: str, result: Assessment, now: datetime
) -> Handoff | None:
    """Record the outcome once (only over PENDING) with its ASSESSMENT_READY event."""
    (outcome,) = await write(session, [SaveAssessment(handoff_id, result, now)])
    assert outcome is None or isinstance(outcome, Handoff)
    return outcome


async def write(session: AsyncSession, items: Sequence[Create | SaveAssessment]) -> list[Outcome]:
    """Write ``items`` in the session's transaction; one outcome per item, in order."""
    dialect = session.get_bind().dialect
    conn = await session.connection()  # Core statements: no ORM execution layer
    outcomes: list[Outcome] = [None] * len(items)
    # The changes to number, in item order: (item index, handoff before numbering, type).
    changes: list[tuple[int, Handoff, EventType]] = []

    # 1. Outcomes of assessments: conditional updates of existing rows, before any
    # counter row is taken. A handoff saved twice in one batch: the second finds it done.
    saves: dict[str, int] = {}
    for i, item in enumerate(items):
        if isinstance(item, SaveAssessment) and item.handoff_id not in saves:
            saves[item.handoff_id] = i
    if saves:
        rows = [_saved_row(items[i]) for i in saves.values()]  # type: ignore[arg-type]
        result = await conn.execute(
            _statement(dialect, _SAVE),
            {"rows": _json(rows, dialect), "pending": _PENDING, "ids": list(saves)},
        )
        saved = {row.id: to_domain(row) for row in result}
        for handoff_id, i in saves.items():
            if handoff_id in saved:
                changes.append((i, saved[handoff_id], EventType.ASSESSMENT_READY))

    # 2. Creates: one insert; the idempotency key decides in it. Whoever inserts nothing
    # (an earlier or concurrent request with its request_id won) reads the winner, before
    # anything is numbered, so a repeat never costs a sequence. Repeats of a key within
    # the batch follow its first create.
    fresh: list[tuple[int, Create, Handoff, dict[str, Any]]] = []
    first_of_key: dict[tuple[str, str, str], int] = {}
    repeats: list[tuple[int, int]] = []  # (item, the batch's first item with its key)
    for i, item in enumerate(items):
        if not isinstance(item, Create):
            continue
        key = item.new.request_id
        if key is not None:
            full_key = (item.caller.account_id, item.caller.user_id, key)
            if full_key in first_of_key:
                repeats.append((i, first_of_key[full_key]))
                continue
            first_of_key[full_key] = i
        handoff, row = _new_row(item)
        fresh.append((i, item, handoff, row))
    # The SLA timers of the new escalations: on PostgreSQL in the insert's own statement,
    # for the rows it inserted; on SQLite in a statement of their own once those are known.
    pg = dialect.name == "postgresql"
    timers: list[dict[str, object]] = []
    inserted: set[str] = set()
    if fresh:
        params = {"rows": _json([r for *_, r in fresh], dialect)}
        if pg:
            timers = [t for _, item, h, _ in fresh for t in _timers(item, h)]
            params["timers"] = _json(timers, dialect)
        result = await conn.execute(_statement(dialect, _INSERT), params)
        inserted = set(result.scalars())
    lost: dict[int, tuple[str, str | None, Handoff | None]] = {}  # winner id, hash, handoff
    for i, item, handoff, _row in fresh:
        if handoff.id in inserted:
            changes.append((i, handoff, EventType.CREATED))
            if not pg:
                timers += _timers(item, handoff)
            continue
        assert item.new.request_id is not None  # without a key nothing can conflict
        winner = await _by_request_id(session, item.caller, item.new.request_id)
        if winner is None:  # the winner's transaction rolled back after all: try again
            outcomes[i] = Unavailable("a concurrent request with this request_id failed; retry")
            continue
        lost[i] = (winner.id, winner.request_hash, to_domain(winner))
    if timers and not pg:
        await conn.execute(_INSERT_TIMERS, timers)

    # 3. Number the changes: each account's counter row once (accounts sorted), then the
    # handoffs and their events, one statement each.
    latest: dict[str, Handoff] = {}  # the handoffs this batch changed, as it left them
    if changes:
        numbered = await _number(session, conn, changes, items)
        for i, handoff in numbered.items():
            item = items[i]
            outcomes[i] = (handoff, True) if isinstance(item, Create) else handoff
            latest[handoff.id] = handoff
    # A repeat answers with its winner as this transaction leaves it (an outcome saved in
    # this batch changed it after the winner was read).
    for i, (winner_id, winner_hash, winner) in lost.items():
        item = items[i]
        assert isinstance(item, Create)
        lost[i] = (winner_id, winner_hash, latest.get(winner_id, winner))
        outcomes[i] = _repeat(item, _body_hash(item), *lost[i])
    for i, first in repeats:
        item, first_outcome = items[i], outcomes[first]
        assert isinstance(item, Create)
        if first in lost:  # the first lost to an earlier create: so does this one
            outcomes[i] = _repeat(item, _body_hash(item), *lost[first])
        elif isinstance(first_outcome, tuple):  # the first created it
            first_item = items[first]
            assert isinstance(first_item, Create)
            handoff = first_outcome[0]
            outcomes[i] = _repeat(
                item, _body_hash(item), handoff.id, _body_hash(first_item), handoff
            )
        else:
            outcomes[i] = first_outcome  # the first's winner rolled back: retry this too
    return outcomes


def _repeat(
    item: Create, request_hash: str | None, winner_id: str, winner_hash: str | None, winner: Any
) -> Outcome:
    """A create whose request_id was taken: the winner if the bodies agree, else refused."""
    if winner_hash is not None and winner_hash != request_hash:
        return AlreadyExists(
            f"request_id {item.new.request_id!r} was already used for handoff {winner_id} with "
            "a different request body; send the same body to retry, or a new request_id",
            [FieldViolation("request_id", "already used with a different request body")],
            reason="REQUEST_ID_REUSED",
            metadata={"request_id": item.new.request_id or "", "handoff_id": winner_id},
        )
    return winner, False


def _body_hash(item: Create) -> str | None:
    return item.new.body_hash() if item.new.request_id is not None else None


def _new_row(item: Create) -> tuple[Handoff, dict[str, Any]]:
    """The new handoff (not yet numbered) and its row."""
    new, caller, now = item.new, item.caller, item.now
    escalation = new.intent is Intent.ESCALATE
    due = now + timedelta(seconds=item.sla_target_seconds) if escalation else None
    handoff = new.open(str(uuid.uuid4()), caller.account_id, caller.ref, now, due)
    row = to_row(handoff) | {
        "request_id": new.request_id,
        "request_hash": _body_hash(item),
        "first_picked_up_at": None,
        "sla_breached_at": None,
        # The creating replica's claim on the new assessment (see ``create``).
        "assessment_lease_until": now + timedelta(seconds=item.assessment_lease_seconds),
        "assessment_attempts": 1,
        "assessment_claimed_by": item.assessment_owner or None,
    }
    return handoff, row


def _timers(item: Create, handoff: Handoff) -> list[dict[str, object]]:
    if handoff.intent is not Intent.ESCALATE:
        return []
    return sla.timers_for(handoff.id, handoff.account_id, item.now, item.sla_target_seconds)


def _saved_row(item: SaveAssessment) -> dict[str, Any]:
    result = item.result
    return {
        "id": item.handoff_id,
        "assessment_status": result.status.value,
        "assessment_summary": result.summary,
        "assessment_first_step": result.suggested_first_step,
        "assessment_provider": result.provider,
        "assessment_failure_reason": result.failure_reason,
        "assessment_completed_at": result.completed_at,
        "updated_at": item.now,
    }


async def _number(
    session: AsyncSession,
    conn: Any,
    changes: list[tuple[int, Handoff, EventType]],
    items: Sequence[Create | SaveAssessment],
) -> dict[int, Handoff]:
    """Take each account's next sequences (counter rows in sorted account order), number
    the changed handoffs and append their events; the numbered handoff per item."""
    by_account: dict[str, list[tuple[int, Handoff, EventType]]] = {}
    for change in changes:
        by_account.setdefault(change[1].account_id, []).append(change)
    numbered: dict[int, Handoff] = {}
    appended: list[Event] = session.info.setdefault(APPENDED_EVENTS, [])
    numbers: list[dict[str, object]] = []
    logged: list[dict[str, object]] = []
    for account_id in sorted(by_account):
        account_changes = by_account[account_id]
        last = await events.next_sequence(session, account_id, len(account_changes))
        for sequence, (i, before, event_type) in enumerate(
            account_changes, start=last - len(account_changes) + 1
        ):
            handoff = dataclasses.replace(before, sequence=sequence)
            occurred_at = items[i].now
            numbered[i] = handoff
            numbers.append({"handoff": handoff.id, "number": sequence})
            logged.append(
                {
                    "account_id": account_id,
                    "sequence": sequence,
                    "type": event_type.value,
                    "handoff_id": handoff.id,
                    "occurred_at": occurred_at,
                    "payload": handoff.to_json(),
                    "detail": None,
                }
            )
            appended.append(Event(account_id, sequence, event_type, occurred_at, handoff))
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        numbered_rows = [{"id": n["handoff"], "sequence": n["number"]} for n in numbers]
        params = {
            "numbers": _json(numbered_rows, dialect),
            "ids": [n["handoff"] for n in numbers],
            "events": _json(logged, dialect),
        }
        await conn.execute(_NUMBER_AND_LOG, params)
    else:
        await conn.execute(_NUMBER, numbers)
        await conn.execute(events.APPEND, logged)
    return numbered


async def _by_request_id(session: AsyncSession, caller: Caller, request_id: str) -> Any:
    """The row (with its request_hash) that this caller created with ``request_id``."""
    query = select(HANDOFFS).where(
        HANDOFFS.c.account_id == caller.account_id,
        HANDOFFS.c.created_by_id == caller.user_id,
        HANDOFFS.c.request_id == request_id,
    )
    return (await session.execute(query)).first()


# The batch's rows travel as one JSON parameter (an array of objects keyed by column):
# the statement text is the same however many rows there are, so it is compiled once,
# and the rows cost one encoding instead of a bound parameter per column and row.
_PENDING = AssessmentStatus.PENDING.value
_COLUMNS = [c.name for c in HANDOFFS.c]
_SAVED_COLUMNS = [
    "assessment_status",
    "assessment_summary",
    "assessment_first_step",
    "assessment_provider",
    "assessment_failure_reason",
    "assessment_completed_at",
    "updated_at",
]


def _sqlite_field(name: str, row: str = "value") -> str:
    return f"json_extract({row}, '$.{name}')"


_TIMER_COLUMNS = ", ".join(c.name for c in SLA_TIMERS.c)
_INSERT = {
    # The timers of the rows it inserted in the same statement (:timers has the timers of
    # every row offered; the join keeps those of the rows that were new).
    "postgresql": (
        "WITH new AS ("
        f"INSERT INTO handoffs ({', '.join(_COLUMNS)}) "
        f"SELECT {', '.join(_COLUMNS)} "
        "FROM json_populate_recordset(NULL::handoffs, CAST(:rows AS json)) "
        "ON CONFLICT (account_id, created_by_id, request_id) DO NOTHING RETURNING id"
        f"), timers AS (INSERT INTO sla_timers ({_TIMER_COLUMNS})"
        f" SELECT {', '.join('t.' + c.name for c in SLA_TIMERS.c)}"
        " FROM json_populate_recordset(NULL::sla_timers, CAST(:timers AS json)) AS t"
        " JOIN new ON new.id = t.handoff_id)"
        " SELECT id FROM new"
    ),
    # WHERE true: SQLite's parser needs it between a SELECT and ON CONFLICT.
    "sqlite": (
        f"INSERT INTO handoffs ({', '.join(_COLUMNS)}) "
        f"SELECT {', '.join(_sqlite_field(c) for c in _COLUMNS)} "
        "FROM json_each(:rows) WHERE true "
        "ON CONFLICT (account_id, created_by_id, request_id) DO NOTHING RETURNING id"
    ),
}
_SAVE = {
    "postgresql": (
        "UPDATE handoffs AS h SET "
        + ", ".join(f"{c} = v.{c}" for c in _SAVED_COLUMNS)
        + " FROM json_populate_recordset(NULL::handoffs, CAST(:rows AS json)) AS v"
        " WHERE h.id = ANY(CAST(:ids AS text[])) AND h.id = v.id"
        " AND h.assessment_status = :pending"
        f" RETURNING {', '.join('h.' + c for c in _COLUMNS)}"
    ),
    "sqlite": (
        "UPDATE handoffs SET "
        + ", ".join(f"{c} = {_sqlite_field(c, 'v.value')}" for c in _SAVED_COLUMNS)
        + " FROM json_each(:rows) AS v"
        f" WHERE handoffs.id = {_sqlite_field('id', 'v.value')}"
        " AND handoffs.id IN (SELECT value FROM json_each(:ids))"
        " AND +handoffs.assessment_status = :pending"
        f" RETURNING {', '.join(_COLUMNS)}"
    ),
}
_STATEMENTS: dict[tuple[int, str], Any] = {}


def _statement(dialect: Dialect, texts: dict[str, str]) -> Any:
    """The statement of ``texts`` for the dialect, built once (typed result columns)."""
    key = (id(texts), dialect.name)
    found = _STATEMENTS.get(key)
    if found is None:
        found = text(texts[dialect.name]).bindparams(bindparam("rows", type_=String))
        if texts is _INSERT and dialect.name == "postgresql":
            found = found.bindparams(bindparam("timers", type_=String))
        if texts is _SAVE:
            found = found.bindparams(bindparam("pending", type_=String)).columns(*HANDOFFS.c)
            if dialect.name == "sqlite":  # the ids as a JSON array (no arrays in SQLite)
                found = found.bindparams(bindparam("ids", type_=JSON))
        else:
            found = found.columns(HANDOFFS.c.id)
        _STATEMENTS[key] = found
    return found


_DATETIME_ENCODERS: dict[str, Callable[[datetime], Any]] = {}


def _json(rows: list[dict[str, Any]], dialect: Dialect) -> str:
    """The rows as the JSON parameter: datetimes as the dialect stores them (ISO 8601 with
    its offset for PostgreSQL's timestamptz; SQLite's own text form of a UTC time)."""
    encode = _DATETIME_ENCODERS.get(dialect.name)
    if encode is None:
        if dialect.name == "sqlite":
            bind = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
            assert bind is not None
            encode = bind
        else:
            encode = datetime.isoformat
        _DATETIME_ENCODERS[dialect.name] = encode

    def default(value: Any) -> Any:
        if isinstance(value, datetime):
            return encode(value)
        raise TypeError(f"not JSON: {type(value).__name__}")

    return json.dumps(rows, default=default)


_INSERT_TIMERS = insert(SLA_TIMERS)
_NUMBER = (
    update(HANDOFFS)
    .where(HANDOFFS.c.id == bindparam("handoff"))
    .values(sequence=bindparam("number", type_=BigInteger))
)
# PostgreSQL: the numbering and the events in one statement (a statement's data-modifying
# WITH parts always run to completion, read or not).
_EVENT_COLUMNS = ", ".join(c.name for c in EVENTS.c)
_NUMBER_AND_LOG = text(
    "WITH numbered AS (UPDATE handoffs AS h SET sequence = v.sequence"
    " FROM json_populate_recordset(NULL::handoffs, CAST(:numbers AS json)) AS v"
    " WHERE h.id = ANY(CAST(:ids AS text[])) AND h.id = v.id)"
    f" INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS}"
    " FROM json_populate_recordset(NULL::events, CAST(:events AS json))"
).bindparams(bindparam("numbers", type_=String), bindparam("events", type_=String))
