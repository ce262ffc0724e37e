"""Rows to domain values, and the one way a change to a handoff gets its event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.schema import HANDOFFS
from server.domain.types import (
    Assessment,
    AssessmentStatus,
    EventDetail,
    EventType,
    Handoff,
    Intent,
    Priority,
    Status,
    Step,
    UserRef,
)
from server.models import events


def to_domain(r: Any) -> Handoff:
    """A handoff from anything with the table's columns as attributes (ORM record or row)."""
    return Handoff(
        id=r.id,
        account_id=r.account_id,
        session_id=r.session_id,
        intent=Intent(r.intent),
        status=Status(r.status),
        priority=Priority(r.priority),
        problem_summary=r.problem_summary,
        steps_tried=tuple(Step(**s) for s in r.steps_tried),
        notes=r.notes,
        created_by=UserRef(r.created_by_id, r.created_by_name),
        picked_up_by=(
            UserRef(r.picked_up_by_id, r.picked_up_by_name or "") if r.picked_up_by_id else None
        ),
        resolution_note=r.resolution_note,
        assessment=Assessment(
            status=AssessmentStatus(r.assessment_status),
            summary=r.assessment_summary,
            suggested_first_step=r.assessment_first_step,
            provider=r.assessment_provider,
            failure_reason=r.assessment_failure_reason,
            completed_at=r.assessment_completed_at,
        ),
        sla_due_at=r.sla_due_at,
        created_at=r.created_at,
        picked_up_at=r.picked_up_at,
        resolved_at=r.resolved_at,
        cancelled_at=r.cancelled_at,
        updated_at=r.updated_at,
        sequence=r.sequence,
    )


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
    await events.announce(session, account_id)
    sequence = await events.next_sequence(session, account_id)
    row = (await session.execute(_NUMBER, {"handoff": handoff_id, "number": sequence})).one()
    handoff = to_domain(row)
    await events.append(session, event_type, handoff, now, detail)
    return handoff
