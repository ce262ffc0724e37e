"""Handoff storage: read, list, state transitions, assessment claims, the queue (creates
and assessment outcomes: server/models/batch.py).

SQL only: who may see or change what is decided in server/domain/policy.py, which hands
the reads a ``Scope`` and the transitions a ``Change`` to apply.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.schema import HANDOFFS, UTCDateTime
from server.domain.policy import Change, Scope
from server.domain.rules import TRANSITIONS, Action
from server.domain.types import (
    AssessmentStatus,
    EventDetail,
    Handoff,
    Intent,
    Priority,
    QueueSnapshot,
    Status,
    UserRef,
)
from server.errors import FieldViolation, InvalidArgument, NotFound
from server.models import events
from server.models.records import record_change, to_domain


def _visible(scope: Scope) -> Select[Any]:
    """Every read starts here: the handoffs the scope (server/domain/policy.py) lets its
    caller see. Rows, not ORM entities: reads build domain values straight from the columns.
    """
    query = select(HANDOFFS).where(HANDOFFS.c.account_id == scope.account_id)
    if scope.creator_id is not None:
        query = query.where(HANDOFFS.c.created_by_id == scope.creator_id)
    return query


async def _one(session: AsyncSession, query: Select[Any]) -> Handoff | None:
    row = (await session.execute(query)).first()
    return to_domain(row) if row else None


async def _all(session: AsyncSession, query: Select[Any]) -> list[Handoff]:
    return [to_domain(r) for r in await session.execute(query)]


async def get(session: AsyncSession, scope: Scope, handoff_id: str) -> Handoff:
    handoff = await _one(session, _visible(scope).where(HANDOFFS.c.id == handoff_id))
    if handoff is None:
        # Same answer for "does not exist" and "belongs to someone else": nothing leaks.
        raise NotFound(f"handoff {handoff_id} not found")
    return handoff


async def list_page(
    session: AsyncSession,
    scope: Scope,
    *,
    status: Status | None,
    intent: Intent | None,
    priority: Priority | None,
    page_size: int,
    page_token: str,
) -> tuple[list[Handoff], str]:
    """Newest first, keyset-paginated on (created_at, id) so pages never shift."""
    query = _visible(scope)
    if status is not None:
        query = query.where(HANDOFFS.c.status == status.value)
    if intent is not None:
        query = query.where(HANDOFFS.c.intent == intent.value)
    if priority is not None:
        query = query.where(HANDOFFS.c.priority == priority.value)
    if page_token:
        created_at, last_id = _decode_page_token(page_token)
        query = query.where(
            or_(
                HANDOFFS.c.created_at < created_at,
                and_(HANDOFFS.c.created_at == created_at, HANDOFFS.c.id < last_id),
            )
        )
    query = query.order_by(HANDOFFS.c.created_at.desc(), HANDOFFS.c.id.desc())
    rows = await _all(session, query.limit(page_size + 1))
    page = rows[:page_size]
    token = page_token_after(page[-1]) if len(rows) > page_size else ""
    return page, token


def page_token_after(last: Handoff) -> str:
    """The ListHandoffs token of the page that continues after ``last``."""
    raw = json.dumps({"c": last.created_at.isoformat(), "i": last.id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        created_at = datetime.fromisoformat(data["c"])
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at, str(uuid.UUID(data["i"]))
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument(
            [FieldViolation("page_token", "is not a token returned by ListHandoffs")]
        ) from None


async def apply(
    session: AsyncSession,
    account_id: str,
    handoff_id: str,
    change: Change,
    actor: UserRef,
    now: datetime,
    resolution_note: str = "",
) -> Handoff | None:
    """Apply one state-machine step that the policy allowed, as a conditional update, plus
    its event; None when the update matched nothing (the state or the holder changed
    since the caller read it, or never allowed it: the policy judges that, not this)."""
    action = change.action
    step = TRANSITIONS[action]
    values: dict[str, object] = {"status": step.to.value, "updated_at": now}
    conditions = [
        HANDOFFS.c.id == handoff_id,
        HANDOFFS.c.account_id == account_id,
        HANDOFFS.c.status.in_([s.value for s in change.allowed_from]),
    ]
    if change.holder_id is not None:
        conditions.append(HANDOFFS.c.picked_up_by_id == change.holder_id)
    if action is Action.PICK_UP:
        values |= {
            "picked_up_by_id": actor.id,
            "picked_up_by_name": actor.name,
            "picked_up_at": now,
            # Time to pickup is measured to the first pickup, whatever releases follow.
            "first_picked_up_at": func.coalesce(
                HANDOFFS.c.first_picked_up_at, bindparam("first", now, type_=UTCDateTime())
            ),
        }
    elif action is Action.RELEASE:
        values |= {"picked_up_by_id": None, "picked_up_by_name": None, "picked_up_at": None}
    elif action is Action.RESOLVE:
        values |= {"resolved_at": now, "resolution_note": resolution_note}
    elif action is Action.CANCEL:
        values |= {"cancelled_at": now}
    changed = await session.execute(
        update(HANDOFFS).where(*conditions).values(**values).returning(HANDOFFS.c.id)
    )
    if changed.scalar_one_or_none() is None:
        return None
    detail = None
    if action is Action.RELEASE:
        # Who held it, for clients that follow only their own escalations.
        detail = EventDetail(actor=actor, previous_holder=change.previous_holder)
    return await record_change(session, account_id, handoff_id, step.event, now, detail)


async def active(session: AsyncSession, scope: Scope) -> QueueSnapshot:
    """The caller's visible handoffs that are not finished yet, with their cursor.

    Must run in a snapshot read (``Database.read``) so the cursor matches the rows.
    """
    sequence = await events.head(session, scope.account_id)
    rows = await _all(
        session,
        _visible(scope)
        .where(HANDOFFS.c.status.in_([Status.OPEN.value, Status.PICKED_UP.value]))
        .order_by(HANDOFFS.c.created_at, HANDOFFS.c.id),
    )
    return QueueSnapshot(sequence=sequence, handoffs=rows)


def _claimable(now: datetime, own_claims_of: str | None) -> Any:
    free = or_(
        HANDOFFS.c.assessment_lease_until.is_(None),
        HANDOFFS.c.assessment_lease_until <= now,
    )
    if own_claims_of:
        free = or_(free, HANDOFFS.c.assessment_claimed_by == own_claims_of)
    return and_(HANDOFFS.c.assessment_status == AssessmentStatus.PENDING.value, free)


async def claim_assessments(
    session: AsyncSession,
    now: datetime,
    lease_until: datetime,
    limit: int,
    skip: set[str],
    owner: str,
    *,
    take_back_own: bool = False,
) -> list[Handoff]:
    """Claim up to ``limit`` pending assessments nobody holds (oldest first) for ``owner``
    until ``lease_until``; with ``take_back_own``, also those ``owner`` held before (a
    server starting on the address of one that died).

    The conditional update decides: of replicas claiming the same row at once, only the one
    whose update still finds it unclaimed gets it back. On PostgreSQL, SKIP LOCKED lets
    them take different rows instead of queueing on the same ones.
    """
    own = owner if take_back_own else None
    query = (
        select(HANDOFFS.c.id)
        .where(_claimable(now, own))
        .order_by(HANDOFFS.c.created_at, HANDOFFS.c.id)
        .limit(limit)
    )
    if skip:
        query = query.where(HANDOFFS.c.id.not_in(skip))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(await session.scalars(query))
    if not ids:
        return []
    rows = await session.execute(
        update(HANDOFFS)
        .where(HANDOFFS.c.id.in_(ids), _claimable(now, own))
        .values(
            assessment_lease_until=lease_until,
            assessment_claimed_by=owner or None,
            assessment_attempts=HANDOFFS.c.assessment_attempts + 1,
        )
        .returning(*HANDOFFS.c)
    )
    return sorted((to_domain(r) for r in rows), key=lambda h: (h.created_at, h.id))


async def renew_assessment_lease(
    session: AsyncSession, handoff_id: str, held_until: datetime, lease_until: datetime
) -> bool:
    """Extend our claim; False if the assessment is done or another replica claimed it
    (its lease then ends after ours did)."""
    changed = await session.execute(
        update(HANDOFFS)
        .where(
            HANDOFFS.c.id == handoff_id,
            HANDOFFS.c.assessment_status == AssessmentStatus.PENDING.value,
            or_(
                HANDOFFS.c.assessment_lease_until.is_(None),
                HANDOFFS.c.assessment_lease_until <= held_until,
            ),
        )
        .values(assessment_lease_until=lease_until)
        .returning(HANDOFFS.c.id)
    )
    return changed.scalar_one_or_none() is not None


async def release_assessments(session: AsyncSession, held: dict[str, datetime]) -> None:
    """Give up claims we still hold, so another replica (or our restart) takes them now."""
    for handoff_id, held_until in held.items():
        await session.execute(
            update(HANDOFFS)
            .where(
                HANDOFFS.c.id == handoff_id,
                HANDOFFS.c.assessment_status == AssessmentStatus.PENDING.value,
                HANDOFFS.c.assessment_lease_until <= held_until,
            )
            .values(assessment_lease_until=None)
        )


# What needs a human first: by SLA due time, soonest first, so escalations past it (breached)
# lead, and the priority counts through it (an URGENT one is due sooner than a LOW one
# created long before it); then by age, then by id so that the order is total. Only fields
# every client has in `Handoff`, so a client keeping the queue live sorts exactly alike.
QUEUE_ORDER = (
    HANDOFFS.c.sla_due_at.asc().nulls_last(),
    HANDOFFS.c.created_at,
    HANDOFFS.c.id,
)


async def queue(session: AsyncSession, account_id: str, page_token: str = "") -> QueueSnapshot:
    """Open escalations in ``QUEUE_ORDER``, with the cursor they were read at.

    Must run in a snapshot read (``Database.read``) so the cursor matches the rows. With a
    ``queue_page_token``, the rest of the queue after the handoff it names, as it is now,
    with the cursor of the listing's first page (the one to stream from: the pages plus
    the events after it give the exact queue, whatever changed between the pages).
    """
    query = select(HANDOFFS).where(
        HANDOFFS.c.account_id == account_id,
        HANDOFFS.c.intent == Intent.ESCALATE.value,
        HANDOFFS.c.status == Status.OPEN.value,
    )
    if page_token:
        sequence, due, created_at, last_id = _decode_queue_token(page_token)
        # Due time and creation time never change, so the order is stable between pages
        # (every escalation has a due time; QUEUE_ORDER's NULLS LAST never applies here).
        query = query.where(
            or_(
                HANDOFFS.c.sla_due_at > due,
                and_(HANDOFFS.c.sla_due_at == due, HANDOFFS.c.created_at > created_at),
                and_(
                    HANDOFFS.c.sla_due_at == due,
                    HANDOFFS.c.created_at == created_at,
                    HANDOFFS.c.id > last_id,
                ),
            )
        )
    else:
        sequence = await events.head(session, account_id)
    rows = await _all(
        session,
        query.order_by(*QUEUE_ORDER),
    )
    return QueueSnapshot(sequence=sequence, handoffs=rows)


def queue_page_token(sequence: int, last: Handoff) -> str:
    """The ListEscalations token of the page after ``last``, for a listing read at
    ``sequence``."""
    assert last.sla_due_at is not None, "an escalation always has a due time"
    raw = json.dumps(
        {
            "s": sequence,
            "d": last.sla_due_at.isoformat(),
            "c": last.created_at.isoformat(),
            "i": last.id,
        }
    ).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_queue_token(token: str) -> tuple[int, datetime, datetime, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        sequence = data["s"]
        if not isinstance(sequence, int) or sequence < 0:
            raise ValueError("not a sequence")
        due, created_at = datetime.fromisoformat(data["d"]), datetime.fromisoformat(data["c"])
        if due.tzinfo is None or created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return sequence, due, created_at, str(uuid.UUID(data["i"]))
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument(
            [FieldViolation("page_token", "is not a token returned by ListEscalations")]
        ) from None
