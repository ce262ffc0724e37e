"""Working an escalation together: known users, transfer, comments, reopen, history.

SQL only, like ``handoffs``: each change is a conditional update on the handoff row plus
its event, in the caller's transaction, applying what server/domain/policy.py decided;
an update that matches nothing returns None and the policy judges the state that won.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.schema import ACCOUNT_USERS, HANDOFFS, SLA_TIMERS
from server.domain.policy import Transfer
from server.domain.types import (
    AccountUser,
    Caller,
    Comment,
    Event,
    EventDetail,
    EventType,
    Handoff,
    Role,
    Status,
    UserRef,
)
from server.models import events, search, sla
from server.models.records import record_change


async def record_user(session: AsyncSession, caller: Caller, now: datetime) -> None:
    """Remember the caller as their token names them now (insert or update)."""
    dialect_insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = dialect_insert(ACCOUNT_USERS).values(
        account_id=caller.account_id,
        user_id=caller.user_id,
        name=caller.name,
        role=caller.role.value,
        last_seen_at=now,
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["account_id", "user_id"],
            set_={
                "name": stmt.excluded.name,
                "role": stmt.excluded.role,
                "last_seen_at": stmt.excluded.last_seen_at,
            },
        )
    )


def _user(r: Any) -> AccountUser:
    return AccountUser(id=r.user_id, name=r.name, role=Role(r.role), last_seen_at=r.last_seen_at)


async def users_in_roles(
    session: AsyncSession, account_id: str, roles: Iterable[Role]
) -> list[AccountUser]:
    """The account's known users of these roles, by name then id."""
    rows = await session.execute(
        select(ACCOUNT_USERS)
        .where(
            ACCOUNT_USERS.c.account_id == account_id,
            ACCOUNT_USERS.c.role.in_([r.value for r in roles]),
        )
        .order_by(ACCOUNT_USERS.c.name, ACCOUNT_USERS.c.user_id)
    )
    return [_user(r) for r in rows]


async def user(session: AsyncSession, account_id: str, user_id: str) -> AccountUser | None:
    row = (
        await session.execute(
            select(ACCOUNT_USERS).where(
                ACCOUNT_USERS.c.account_id == account_id, ACCOUNT_USERS.c.user_id == user_id
            )
        )
    ).first()
    return _user(row) if row else None


async def transfer(
    session: AsyncSession,
    account_id: str,
    handoff_id: str,
    move: Transfer,
    actor: UserRef,
    note: str,
    now: datetime,
) -> Handoff | None:
    """Move the hold as the policy allowed, with a TRANSFERRED event; None when the update
    matched nothing.

    A compare-and-set on the holder that was judged: a concurrent pickup, release or
    transfer that changed the row first makes this update match nothing. The holder is
    one column of one row, so there is exactly one at every moment.
    """
    changed = await session.execute(
        update(HANDOFFS)
        .where(
            HANDOFFS.c.id == handoff_id,
            HANDOFFS.c.account_id == account_id,
            HANDOFFS.c.status == Status.PICKED_UP.value,
            HANDOFFS.c.picked_up_by_id == move.previous_holder.id,
        )
        .values(
            picked_up_by_id=move.to.id,
            picked_up_by_name=move.to.name,
            picked_up_at=now,
            updated_at=now,
        )
        .returning(HANDOFFS.c.id)
    )
    if changed.scalar_one_or_none() is None:
        return None
    detail = EventDetail(actor=actor, note=note, previous_holder=move.previous_holder)
    return await record_change(session, account_id, handoff_id, EventType.TRANSFERRED, now, detail)


async def add_comment(
    session: AsyncSession,
    caller: Caller,
    handoff_id: str,
    body: str,
    request_id: str | None,
    now: datetime,
) -> Comment:
    """Append a COMMENTED event carrying the comment; the log is where comments live.
    The caller has read the handoff through their scope first (it is theirs to see).

    With a request_id, a retry (e.g. after a connection lost across a server restart)
    returns the first comment instead of adding another: the handoff row is locked first,
    so concurrent retries look for it one after the other.
    """
    await session.execute(
        update(HANDOFFS)
        .where(HANDOFFS.c.id == handoff_id, HANDOFFS.c.account_id == caller.account_id)
        .values(updated_at=now)
    )
    if request_id is not None:
        earlier = await _comment_by_request(session, caller, handoff_id, request_id)
        if earlier is not None:
            return earlier
    comment = Comment(
        id=str(uuid.uuid4()),
        handoff_id=handoff_id,
        author=caller.ref,
        author_role=caller.role,
        body=body,
        created_at=now,
    )
    detail = EventDetail(actor=caller.ref, comment=comment, request_id=request_id)
    await record_change(session, caller.account_id, handoff_id, EventType.COMMENTED, now, detail)
    return comment


async def _comment_by_request(
    session: AsyncSession, caller: Caller, handoff_id: str, request_id: str
) -> Comment | None:
    after = 0
    while True:
        batch = await events.of_handoff(session, caller.account_id, handoff_id, after, 500)
        for event in batch:
            d = event.detail
            if (
                event.type is EventType.COMMENTED
                and d is not None
                and d.request_id == request_id
                and d.comment is not None
                and d.comment.author.id == caller.user_id
            ):
                return d.comment
        if len(batch) < 500:
            return None
        after = batch[-1].sequence


async def reopen(
    session: AsyncSession,
    account_id: str,
    handoff_id: str,
    actor: UserRef,
    reason: str,
    now: datetime,
    sla_target_seconds: float,
) -> Handoff | None:
    """Back to the queue, as the policy allowed: OPEN, nobody holding it, a fresh SLA
    clock and its timers; None when the update matched nothing (no longer RESOLVED)."""
    changed = await session.execute(
        update(HANDOFFS)
        .where(
            HANDOFFS.c.id == handoff_id,
            HANDOFFS.c.account_id == account_id,
            HANDOFFS.c.status == Status.RESOLVED.value,
        )
        .values(
            status=Status.OPEN.value,
            picked_up_by_id=None,
            picked_up_by_name=None,
            picked_up_at=None,
            resolved_at=None,
            resolution_note="",
            sla_due_at=now + timedelta(seconds=sla_target_seconds),
            sla_breached_at=None,
            updated_at=now,
        )
        .returning(HANDOFFS.c.id)
    )
    if changed.scalar_one_or_none() is None:
        return None
    await search.forget(session, handoff_id)  # an open problem is nobody's fix
    await session.execute(delete(SLA_TIMERS).where(SLA_TIMERS.c.handoff_id == handoff_id))
    await session.execute(
        insert(SLA_TIMERS), sla.timers_for(handoff_id, account_id, now, sla_target_seconds)
    )
    detail = EventDetail(actor=actor, note=reason)
    return await record_change(session, account_id, handoff_id, EventType.REOPENED, now, detail)


async def history(
    session: AsyncSession, account_id: str, handoff_id: str, after: int, limit: int
) -> list[Event]:
    """The handoff's events after ``after`` (the caller has read it through their scope)."""
    return await events.of_handoff(session, account_id, handoff_id, after, limit)
