"""Handoff operations: create (idempotent), read, list, state transitions, the queue."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.schema import HandoffRecord, UTCDateTime
from server.domain.rules import (
    TRANSITIONS,
    Action,
    check_holder,
    refuse_transition,
)
from server.domain.types import (
    Assessment,
    AssessmentStatus,
    Caller,
    EventType,
    Handoff,
    Intent,
    NewHandoff,
    Priority,
    QueueSnapshot,
    Role,
    Status,
)
from server.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from server.models import events, sla
from server.models.records import record_change, to_domain


def _visible(caller: Caller) -> Select[tuple[HandoffRecord]]:
    """Every read starts here: the caller's account, and a technician's own handoffs only."""
    query = select(HandoffRecord).where(HandoffRecord.account_id == caller.account_id)
    if caller.role is Role.TECHNICIAN:
        query = query.where(HandoffRecord.created_by_id == caller.user_id)
    return query


async def create(
    session: AsyncSession,
    caller: Caller,
    new: NewHandoff,
    now: datetime,
    sla_target_seconds: float,
) -> tuple[Handoff, bool]:
    """Create the handoff and its CREATED event; a repeated request_id returns the first.

    Returns the handoff and whether this call created it.
    """
    existing = await _by_request_id(session, caller, new.request_id)
    if existing is not None:
        return existing, False
    escalation = new.intent is Intent.ESCALATE
    record = HandoffRecord(
        id=str(uuid.uuid4()),
        account_id=caller.account_id,
        request_id=new.request_id,
        session_id=new.session_id,
        intent=new.intent.value,
        status=Status.OPEN.value,
        priority=new.priority.value,
        priority_rank=new.priority.rank,
        problem_summary=new.problem_summary,
        steps_tried=[{"description": s.description, "outcome": s.outcome} for s in new.steps_tried],
        notes=new.notes,
        created_by_id=caller.user_id,
        created_by_name=caller.name,
        resolution_note="",
        assessment_status=AssessmentStatus.PENDING.value,
        sla_due_at=now + timedelta(seconds=sla_target_seconds) if escalation else None,
        created_at=now,
        updated_at=now,
        sequence=0,
    )
    try:
        # A savepoint, so that losing a concurrent race on the idempotency key leaves the
        # outer transaction usable for reading the winner's row.
        async with session.begin_nested():
            session.add(record)
            await session.flush()
    except IntegrityError:
        winner = await _by_request_id(session, caller, new.request_id)
        if winner is None:
            raise
        return winner, False
    if escalation:
        session.add_all(sla.timers_for(record.id, record.account_id, now, sla_target_seconds))
    record.sequence = await events.next_sequence(session, caller.account_id)
    await session.flush()
    handoff = to_domain(record)
    await events.append(session, EventType.CREATED, handoff, now)
    return handoff, True


async def _by_request_id(session: AsyncSession, caller: Caller, request_id: str) -> Handoff | None:
    record = await session.scalar(
        select(HandoffRecord)
        .where(
            HandoffRecord.account_id == caller.account_id,
            HandoffRecord.created_by_id == caller.user_id,
            HandoffRecord.request_id == request_id,
        )
        .execution_options(populate_existing=True)
    )
    return to_domain(record) if record else None


async def get(session: AsyncSession, caller: Caller, handoff_id: str) -> Handoff:
    record = await session.scalar(
        _visible(caller)
        .where(HandoffRecord.id == handoff_id)
        .execution_options(populate_existing=True)
    )
    if record is None:
        # Same answer for "does not exist" and "belongs to someone else": nothing leaks.
        raise NotFound(f"handoff {handoff_id} not found")
    return to_domain(record)


async def get_escalation(session: AsyncSession, caller: Caller, handoff_id: str) -> Handoff:
    handoff = await get(session, caller, handoff_id)
    if handoff.intent is not Intent.ESCALATE:
        raise FailedPrecondition(f"handoff {handoff_id} is not an escalation")
    return handoff


async def list_page(
    session: AsyncSession,
    caller: Caller,
    *,
    status: Status | None,
    intent: Intent | None,
    priority: Priority | None,
    page_size: int,
    page_token: str,
) -> tuple[list[Handoff], str]:
    """Newest first, keyset-paginated on (created_at, id) so pages never shift."""
    query = _visible(caller)
    if status is not None:
        query = query.where(HandoffRecord.status == status.value)
    if intent is not None:
        query = query.where(HandoffRecord.intent == intent.value)
    if priority is not None:
        query = query.where(HandoffRecord.priority == priority.value)
    if page_token:
        created_at, last_id = _decode_page_token(page_token)
        query = query.where(
            or_(
                HandoffRecord.created_at < created_at,
                and_(HandoffRecord.created_at == created_at, HandoffRecord.id < last_id),
            )
        )
    query = query.order_by(HandoffRecord.created_at.desc(), HandoffRecord.id.desc())
    rows = list(await session.scalars(query.limit(page_size + 1)))
    page = [to_domain(r) for r in rows[:page_size]]
    token = _encode_page_token(page[-1]) if len(rows) > page_size else ""
    return page, token


def _encode_page_token(last: Handoff) -> str:
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


async def transition(
    session: AsyncSession,
    caller: Caller,
    handoff_id: str,
    action: Action,
    now: datetime,
    resolution_note: str = "",
) -> Handoff:
    """Apply one state-machine step as a conditional update, plus its event."""
    current = (
        await get(session, caller, handoff_id)
        if action is Action.CANCEL
        else await get_escalation(session, caller, handoff_id)
    )
    if action is Action.CANCEL and not (
        current.created_by.id == caller.user_id or caller.role is Role.ADMIN
    ):
        raise PermissionDenied(
            f"cannot cancel handoff {handoff_id}: only its creator or an admin can"
        )
    check_holder(action, caller, current)
    step = TRANSITIONS[action]
    values: dict[str, object] = {"status": step.to.value, "updated_at": now}
    conditions = [
        HandoffRecord.id == handoff_id,
        HandoffRecord.account_id == caller.account_id,
        HandoffRecord.status.in_([s.value for s in step.allowed_from]),
    ]
    if action is Action.PICK_UP:
        values |= {
            "picked_up_by_id": caller.user_id,
            "picked_up_by_name": caller.name,
            "picked_up_at": now,
            # Time to pickup is measured to the first pickup, whatever releases follow.
            "first_picked_up_at": func.coalesce(
                HandoffRecord.first_picked_up_at, bindparam("first", now, type_=UTCDateTime())
            ),
        }
    elif action is Action.RELEASE:
        values |= {"picked_up_by_id": None, "picked_up_by_name": None, "picked_up_at": None}
        if caller.role is not Role.ADMIN:
            conditions.append(HandoffRecord.picked_up_by_id == caller.user_id)
    elif action is Action.RESOLVE:
        values |= {"resolved_at": now, "resolution_note": resolution_note}
        conditions.append(HandoffRecord.picked_up_by_id == caller.user_id)
    elif action is Action.CANCEL:
        values |= {"cancelled_at": now}
    changed = await session.execute(
        update(HandoffRecord)
        .where(*conditions)
        .values(**values)
        .returning(HandoffRecord.id)
        .execution_options(synchronize_session=False)
    )
    if changed.scalar_one_or_none() is None:
        # Lost a race (or the state never allowed it): report the state that won.
        raise refuse_transition(action, await get(session, caller, handoff_id))
    return await record_change(session, caller.account_id, handoff_id, step.event, now)


async def active(session: AsyncSession, caller: Caller) -> QueueSnapshot:
    """The caller's visible handoffs that are not finished yet, with their cursor.

    Must run in a snapshot read (``Database.read``) so the cursor matches the rows.
    """
    sequence = await events.head(session, caller.account_id)
    rows = await session.scalars(
        _visible(caller)
        .where(HandoffRecord.status.in_([Status.OPEN.value, Status.PICKED_UP.value]))
        .order_by(HandoffRecord.created_at, HandoffRecord.id)
    )
    return QueueSnapshot(sequence=sequence, handoffs=[to_domain(r) for r in rows])


async def get_internal(session: AsyncSession, handoff_id: str) -> Handoff | None:
    """For background work that acts for no caller; never reachable from an API."""
    record = await session.get(HandoffRecord, handoff_id, populate_existing=True)
    return to_domain(record) if record else None


async def pending_assessments(session: AsyncSession) -> list[str]:
    rows = await session.scalars(
        select(HandoffRecord.id)
        .where(HandoffRecord.assessment_status == AssessmentStatus.PENDING.value)
        .order_by(HandoffRecord.created_at)
    )
    return list(rows)


async def save_assessment(
    session: AsyncSession, handoff_id: str, result: Assessment, now: datetime
) -> Handoff | None:
    """Record the outcome once (only over PENDING) with its ASSESSMENT_READY event."""
    changed = await session.execute(
        update(HandoffRecord)
        .where(
            HandoffRecord.id == handoff_id,
            HandoffRecord.assessment_status == AssessmentStatus.PENDING.value,
        )
        .values(
            assessment_status=result.status.value,
            assessment_summary=result.summary,
            assessment_first_step=result.suggested_first_step,
            assessment_provider=result.provider,
            assessment_failure_reason=result.failure_reason,
            assessment_completed_at=result.completed_at,
            updated_at=now,
        )
        .returning(HandoffRecord.account_id)
        .execution_options(synchronize_session=False)
    )
    account_id = changed.scalar_one_or_none()
    if account_id is None:
        return None
    return await record_change(session, account_id, handoff_id, EventType.ASSESSMENT_READY, now)


async def queue(session: AsyncSession, account_id: str) -> QueueSnapshot:
    """Open escalations, most urgent first then oldest, with the cursor they were read at.

    Must run in a snapshot read (``Database.read``) so the cursor matches the rows.
    """
    sequence = await events.head(session, account_id)
    rows = await session.scalars(
        select(HandoffRecord)
        .where(
            HandoffRecord.account_id == account_id,
            HandoffRecord.intent == Intent.ESCALATE.value,
            HandoffRecord.status == Status.OPEN.value,
        )
        .order_by(HandoffRecord.priority_rank.desc(), HandoffRecord.created_at, HandoffRecord.id)
    )
    return QueueSnapshot(sequence=sequence, handoffs=[to_domain(r) for r in rows])
