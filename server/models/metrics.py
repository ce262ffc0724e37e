"""Escalation metrics computed in the database, the same SQL on SQLite and PostgreSQL.

Percentiles use window functions (ROW_NUMBER / COUNT OVER) rather than PostgreSQL's
percentile_cont, which SQLite lacks; only the "seconds between" and "UTC day" expressions
differ per dialect.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, distinct, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.schema import EVENTS, HISTORY
from server.db.schema import HandoffRecord as H
from server.domain.metrics import (
    CollaborationMetrics,
    DayMetrics,
    DurationStats,
    EscalationMetrics,
    PriorityMetrics,
)
from server.domain.types import EventType, Intent, Priority, Status

ALL = "*"


def _seconds(dialect: str, later: Any, earlier: Any) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _utc_day(dialect: str, column: Any) -> ColumnElement[str]:
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.date(column)


async def escalation_metrics(
    session: AsyncSession, account_id: str, start: datetime, end: datetime, now: datetime
) -> EscalationMetrics:
    dialect = session.get_bind().dialect.name
    cohort = (
        H.account_id == account_id,
        H.intent == Intent.ESCALATE.value,
        H.created_at >= start,
        H.created_at < end,
    )
    counts = {
        row.priority: row
        for row in await session.execute(
            select(
                H.priority,
                func.count().label("created"),
                func.count(H.first_picked_up_at).label("picked_up"),
                func.count(H.resolved_at).label("resolved"),
                func.count(case((H.status == Status.CANCELLED.value, 1))).label("cancelled"),
                func.count(H.sla_breached_at).label("sla_breached"),
            )
            .where(*cohort)
            .group_by(H.priority)
        )
    }
    open_rows = {
        row.priority: row
        for row in await session.execute(
            select(H.priority, func.count().label("n"), func.min(H.created_at).label("oldest"))
            .where(
                H.account_id == account_id,
                H.intent == Intent.ESCALATE.value,
                H.status == Status.OPEN.value,
            )
            .group_by(H.priority)
        )
    }
    pickup = _seconds(dialect, H.first_picked_up_at, H.created_at)
    pickup_by_priority = await _stats(session, cohort, H.first_picked_up_at, pickup, H.priority)
    pickup_all = await _stats(session, cohort, H.first_picked_up_at, pickup, None)
    resolve = _seconds(dialect, H.resolved_at, H.created_at)
    resolve_all = await _stats(session, cohort, H.resolved_at, resolve, None)
    day = _utc_day(dialect, H.created_at)
    by_day = [
        DayMetrics(date=str(row.day), created=row.c, picked_up=row.p, resolved=row.r)
        for row in await session.execute(
            select(
                day.label("day"),
                func.count().label("c"),
                func.count(H.first_picked_up_at).label("p"),
                func.count(H.resolved_at).label("r"),
            )
            .where(*cohort)
            .group_by(day)
            .order_by(day)
        )
    ]

    def total(name: str) -> int:
        return sum(int(getattr(row, name)) for row in counts.values())

    by_priority = [
        PriorityMetrics(
            priority=p,
            created=int(counts[p.value].created) if p.value in counts else 0,
            picked_up=int(counts[p.value].picked_up) if p.value in counts else 0,
            resolved=int(counts[p.value].resolved) if p.value in counts else 0,
            open_now=int(open_rows[p.value].n) if p.value in open_rows else 0,
            sla_breached=int(counts[p.value].sla_breached) if p.value in counts else 0,
            time_to_pickup=pickup_by_priority.get(p.value, DurationStats()),
        )
        for p in sorted(Priority, key=lambda p: -p.rank)
    ]
    oldest = min((row.oldest for row in open_rows.values()), default=None)
    return EscalationMetrics(
        start_time=start,
        end_time=end,
        created=total("created"),
        picked_up=total("picked_up"),
        resolved=total("resolved"),
        cancelled=total("cancelled"),
        open_now=sum(int(row.n) for row in open_rows.values()),
        oldest_waiting_seconds=_age(now, oldest),
        time_to_pickup=pickup_all.get(ALL, DurationStats()),
        time_to_resolve=resolve_all.get(ALL, DurationStats()),
        sla_breached=total("sla_breached"),
        by_priority=by_priority,
        by_day=by_day,
        collaboration=await _collaboration(session, account_id, cohort, total("created")),
    )


_COUNTED = (EventType.TRANSFERRED, EventType.COMMENTED, EventType.REOPENED, EventType.RESOLVED)


async def _collaboration(
    session: AsyncSession,
    account_id: str,
    cohort: tuple[ColumnElement[bool], ...],
    created: int,
) -> CollaborationMetrics:
    """Events per kind of the cohort's escalations, from the live log and the archive."""
    kinds = [k.value for k in _COUNTED]
    logged = union_all(
        *(
            select(t.c.handoff_id, t.c.type).where(
                t.c.account_id == account_id, t.c.type.in_(kinds)
            )
            for t in (EVENTS, HISTORY)
        )
    ).subquery()
    rows = await session.execute(
        select(logged.c.type, func.count(), func.count(distinct(logged.c.handoff_id)))
        .join(H, H.id == logged.c.handoff_id)
        .where(*cohort)
        .group_by(logged.c.type)
    )
    found = {kind: (int(n), int(handoffs)) for kind, n, handoffs in rows}
    transfers = found.get(EventType.TRANSFERRED.value, (0, 0))[0]
    comments = found.get(EventType.COMMENTED.value, (0, 0))[0]
    reopened = found.get(EventType.REOPENED.value, (0, 0))[1]
    ever_resolved = found.get(EventType.RESOLVED.value, (0, 0))[1]
    return CollaborationMetrics(
        transfers=transfers,
        comments=comments,
        reopened=reopened,
        reopen_rate=round(reopened / ever_resolved, 4) if ever_resolved else 0.0,
        comments_per_escalation=round(comments / created, 4) if created else 0.0,
    )


def _age(now: datetime, oldest: Any) -> float:
    if oldest is None:
        return 0.0
    if isinstance(oldest, str):  # SQLite returns aggregates of datetimes as text
        oldest = datetime.fromisoformat(oldest).replace(tzinfo=now.tzinfo)
    elif oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=now.tzinfo)
    return round(max(0.0, (now - oldest).total_seconds()), 3)


async def _stats(
    session: AsyncSession,
    cohort: tuple[ColumnElement[bool], ...],
    ended: Any,
    seconds: ColumnElement[Any],
    group: Any,
) -> dict[str, DurationStats]:
    """count, nearest-rank p50/p90 and max of ``seconds`` per group (or ``ALL``)."""
    key = group if group is not None else literal(ALL)
    durations = (
        select(key.label("g"), seconds.label("s")).where(*cohort, ended.is_not(None)).subquery()
    )
    ranked = select(
        durations.c.g,
        durations.c.s,
        func.row_number().over(partition_by=durations.c.g, order_by=durations.c.s).label("rn"),
        func.count().over(partition_by=durations.c.g).label("n"),
    ).subquery()
    rows = await session.execute(
        select(
            ranked.c.g,
            func.count(),
            func.min(case((ranked.c.rn >= 0.5 * ranked.c.n, ranked.c.s))),
            func.min(case((ranked.c.rn >= 0.9 * ranked.c.n, ranked.c.s))),
            func.max(ranked.c.s),
        ).group_by(ranked.c.g)
    )
    return {
        # Millisecond precision: SQLite's julianday() carries no more than that.
        str(g): DurationStats(int(n), round(p50, 3), round(p90, 3), round(mx, 3))
        for g, n, p50, p90, mx in rows
    }
