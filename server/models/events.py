"""The per-account event log (transactional outbox) and its gap-free sequence."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    String,
    bindparam,
    cast,
    delete,
    func,
    insert,
    null,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from server.db.database import APPENDED_EVENTS, PG_NOTIFY
from server.db.schema import EVENTS, HISTORY, AccountSequence, EventRecord
from server.domain.types import Event, EventDetail, EventType, Handoff

NOTIFY_CHANNEL = "resolutionflow_events"
ANNOUNCED_ACCOUNTS = "rf_announced_accounts"


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


class DatabaseClockMs(FunctionElement[int]):
    """The database's wall clock in ms since the epoch, read when the statement runs.

    The log check compares it across replicas, so it must be one clock for all of them:
    the database's, never a replica's own.
    """

    type = BigInteger()
    inherit_cache = True


# clock_timestamp(), not now(): now() is the transaction's start, which can be well before
# the bump in a long transaction.
_PG_CLOCK_MS = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
_SQLITE_CLOCK_MS = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"


@compiles(DatabaseClockMs, "postgresql")
def _pg_clock_ms(_element: DatabaseClockMs, _compiler: SQLCompiler, **_kw: Any) -> str:
    return _PG_CLOCK_MS


@compiles(DatabaseClockMs, "sqlite")
def _sqlite_clock_ms(_element: DatabaseClockMs, _compiler: SQLCompiler, **_kw: Any) -> str:
    return _SQLITE_CLOCK_MS


# Hot statements are built once: constructing a statement costs more than running it
# from SQLAlchemy's compiled cache.
_BUMP = (
    update(AccountSequence)
    .where(AccountSequence.account_id == bindparam("account"))
    .values(
        last_sequence=AccountSequence.last_sequence + bindparam("count", type_=BigInteger),
        moved_at_ms=DatabaseClockMs(),
    )
    .returning(AccountSequence.last_sequence)
)
# PostgreSQL with NOTIFY wake-ups: the same bump queues the account's notification, one
# round trip instead of two (identical notifications of one transaction are delivered
# once, so a second change of the account in the transaction adds none; the notification
# leaves at commit either way, so it costs the counter row's holder nothing).
_BUMP_NOTIFY = _BUMP.returning(
    AccountSequence.last_sequence,
    func.pg_notify(NOTIFY_CHANNEL, bindparam("account")),
)
APPEND = insert(EVENTS)
_READ_AFTER = (
    select(EVENTS)
    .where(EVENTS.c.account_id == bindparam("account"), EVENTS.c.sequence > bindparam("after"))
    .order_by(EVENTS.c.sequence)
    .limit(bindparam("limit"))
)


async def next_sequence(session: AsyncSession, account_id: str, count: int = 1) -> int:
    """Take the account's next ``count`` sequences inside the caller's transaction; returns
    the last of them.

    The counter row stays locked until commit, so a second writer of the same account waits
    here and commits after us: sequences become visible in order, never with a hole.
    """
    params = {"account": account_id, "count": count}
    bump = _BUMP_NOTIFY if _notifies(session) else _BUMP
    conn = await session.connection()
    value = (await conn.execute(bump, params)).scalar_one_or_none()
    if value is None:
        await conn.execute(
            (pg_insert if _dialect(session) == "postgresql" else sqlite_insert)(AccountSequence)
            .values(account_id=account_id, last_sequence=0)
            .on_conflict_do_nothing(index_elements=["account_id"])
        )
        value = (await conn.execute(bump, params)).scalar_one()
    return value


def _notifies(session: AsyncSession) -> bool:
    """Whether this transaction wakes other replicas by NOTIFY (PostgreSQL)."""
    return bool(session.info.get(PG_NOTIFY)) and _dialect(session) == "postgresql"


async def append(
    session: AsyncSession,
    event_type: EventType,
    handoff: Handoff,
    occurred_at: datetime,
    detail: EventDetail | None = None,
) -> Event:
    """Write the event for a change made in this same transaction.

    A Core insert rather than ``session.add``: the ORM's unit of work was the largest
    share of a write's CPU, and nothing here needs identity tracking.
    """
    # On the session's connection: Core statements skip the ORM's execution layer.
    await (await session.connection()).execute(
        APPEND,
        {
            "account_id": handoff.account_id,
            "sequence": handoff.sequence,
            "type": event_type.value,
            "handoff_id": handoff.id,
            "occurred_at": occurred_at,
            "payload": handoff.to_json(),
            "detail": detail.to_json() if detail else None,
        },
    )
    event = Event(
        account_id=handoff.account_id,
        sequence=handoff.sequence,
        type=event_type,
        occurred_at=occurred_at,
        handoff=handoff,
        detail=detail,
    )
    appended: list[Event] = session.info.setdefault(APPENDED_EVENTS, [])
    appended.append(event)
    return event


async def append_account_event(
    session: AsyncSession,
    account_id: str,
    event_type: EventType,
    occurred_at: datetime,
    detail: EventDetail,
) -> Event:
    """Log an account event, one about no handoff (a webhook endpoint marked failing), in
    the caller's transaction: numbered in the account's sequence like any change, so the
    streams, resumption and webhooks see it in order."""
    await announce(session, account_id)
    sequence = await next_sequence(session, account_id)
    await session.execute(
        APPEND,
        {
            "account_id": account_id,
            "sequence": sequence,
            "type": event_type.value,
            "handoff_id": None,
            "occurred_at": occurred_at,
            "payload": None,
            "detail": detail.to_json(),
        },
    )
    event = Event(account_id, sequence, event_type, occurred_at, None, detail)
    appended: list[Event] = session.info.setdefault(APPENDED_EVENTS, [])
    appended.append(event)
    return event


async def announce(session: AsyncSession, account_id: str) -> None:
    """Wake every LISTENing replica for ``account_id`` when (and only if) this transaction
    commits; once per account and transaction.

    Called before the account's counter row is taken: the notification is delivered at
    commit wherever it was queued, so queueing it first keeps one round trip out of the
    time the row is held.
    """
    if not _notifies(session):
        return  # another wake-up transport (or none) announces commits
    announced: set[str] = session.info.setdefault(ANNOUNCED_ACCOUNTS, set())
    if account_id in announced:
        return
    announced.add(account_id)
    await session.execute(
        text("SELECT pg_notify(:channel, :account)"),
        {"channel": NOTIFY_CHANNEL, "account": account_id},
    )


async def head(session: AsyncSession, account_id: str) -> int:
    """The account's last committed sequence (0 before its first event)."""
    value = await session.scalar(
        select(AccountSequence.last_sequence).where(AccountSequence.account_id == account_id)
    )
    return value or 0


# The log check's statements. Usually the short one: the accounts whose counter moved
# since a point on the database's clock (an index range, so an idle tick reads nothing
# however many accounts are online), with that clock's reading in the same statement so
# the next tick starts where this one stood. Now and then the full one: of the accounts a
# replica follows, those whose counter passed what it has seen (positions as parameters,
# two arrays on PostgreSQL, one JSON object on SQLite, so the text stays the same however
# many accounts are online); it covers what the short one cannot (a writer whose commit
# came later than the overlap after its bump, a clock stepped back).
_MOVED_SINCE = union_all(
    select(
        cast(null(), String).label("account_id"),
        cast(null(), BigInteger).label("last_sequence"),
        DatabaseClockMs().label("moved_at_ms"),
    ),
    select(
        AccountSequence.account_id, AccountSequence.last_sequence, AccountSequence.moved_at_ms
    ).where(AccountSequence.moved_at_ms >= bindparam("since")),
)
_MOVED_POSTGRES = text(
    f"SELECT NULL AS account_id, NULL AS last_sequence, {_PG_CLOCK_MS} AS now"
    " UNION ALL SELECT s.account_id, s.last_sequence, NULL FROM account_sequences AS s"
    " JOIN unnest(CAST(:accounts AS text[]), CAST(:seen AS bigint[])) AS t(account_id, seen)"
    " ON s.account_id = t.account_id WHERE s.last_sequence > t.seen"
)
_MOVED_SQLITE = text(
    f"SELECT NULL AS account_id, NULL AS last_sequence, {_SQLITE_CLOCK_MS} AS now"
    " UNION ALL SELECT s.account_id, s.last_sequence, NULL FROM json_each(:seen) AS t"
    " JOIN account_sequences AS s ON s.account_id = t.key WHERE s.last_sequence > t.value"
)


async def heads_moved(session: AsyncSession, seen: dict[str, int]) -> tuple[int, dict[str, int]]:
    """The database's clock now (ms since the epoch), and of ``seen`` (account -> last
    sequence seen) the accounts whose head is past it."""
    if _dialect(session) == "postgresql":
        rows = await session.execute(
            _MOVED_POSTGRES, {"accounts": list(seen), "seen": list(seen.values())}
        )
    else:
        rows = await session.execute(_MOVED_SQLITE, {"seen": json.dumps(seen)})
    return _clock_and_heads(rows.tuples())


async def moved_since(session: AsyncSession, since_ms: int) -> tuple[int, dict[str, int]]:
    """The database's clock now, and the head of every account whose counter moved at or
    after ``since_ms`` on that clock (every account of the database, followed or not)."""
    return _clock_and_heads((await session.execute(_MOVED_SINCE, {"since": since_ms})).tuples())


def _clock_and_heads(rows: Iterable[tuple[Any, Any, Any]]) -> tuple[int, dict[str, int]]:
    """Splits the log check's answer: one row holds only the clock, the others heads."""
    now = 0
    moved: dict[str, int] = {}
    for account, head, clock in rows:
        if account is None:
            now = int(clock)
        else:
            moved[account] = int(head)
    return now, moved


async def oldest(session: AsyncSession, account_id: str) -> int | None:
    """The oldest sequence still in the log (older ones were pruned), None if empty."""
    return await session.scalar(
        select(func.min(EventRecord.sequence)).where(EventRecord.account_id == account_id)
    )


_COLUMNS = ("account_id", "sequence", "type", "handoff_id", "occurred_at", "payload", "detail")


async def prune(session: AsyncSession, before: datetime) -> int:
    """Move events that occurred before ``before`` out of the live log into the history
    archive (one transaction: each event is in exactly one of them); returns how many.

    Streams resume only from the live log; GetHandoffHistory reads both. Replicas pruning
    at once copy the same rows: the archive's key makes the second copy a no-op.
    """
    old = select(*(EVENTS.c[name] for name in _COLUMNS)).where(EVENTS.c.occurred_at < before)
    insert_stmt = (pg_insert if _dialect(session) == "postgresql" else sqlite_insert)(HISTORY)
    await session.execute(
        insert_stmt.from_select(list(_COLUMNS), old).on_conflict_do_nothing(
            index_elements=["account_id", "sequence"]
        )
    )
    result = await session.execute(delete(EventRecord).where(EventRecord.occurred_at < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _event(r: Any) -> Event:
    return Event(
        account_id=r.account_id,
        sequence=r.sequence,
        type=EventType(r.type),
        occurred_at=r.occurred_at,
        handoff=Handoff.from_json(r.payload) if r.payload is not None else None,
        detail=EventDetail.from_json(r.detail),
    )


async def of_handoff(
    session: AsyncSession, account_id: str, handoff_id: str, after: int, limit: int
) -> list[Event]:
    """One handoff's events after sequence ``after``, oldest first: the archive's and the
    live log's. Run in a snapshot read (``Database.read``) so a concurrent prune, which
    moves rows from one table to the other, is seen entirely or not at all."""
    rows: list[Any] = []
    for table in (HISTORY, EVENTS):
        rows.extend(
            await session.execute(
                select(table)
                .where(
                    table.c.handoff_id == handoff_id,
                    table.c.account_id == account_id,
                    table.c.sequence > after,
                )
                .order_by(table.c.sequence)
                .limit(limit)
            )
        )
    rows.sort(key=lambda r: r.sequence)
    return [_event(r) for r in rows[:limit]]


async def read_after(
    session: AsyncSession, account_id: str, after: int, limit: int = 1000
) -> list[Event]:
    rows = await session.execute(
        _READ_AFTER, {"account": account_id, "after": after, "limit": limit}
    )
    return [_event(r) for r in rows]
