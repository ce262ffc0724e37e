"""Rows to domain values."""

from __future__ import annotations

from server.db.schema import HandoffRecord
from server.domain.types import (
    Assessment,
    AssessmentStatus,
    Handoff,
    Intent,
    Priority,
    Status,
    Step,
    UserRef,
)


def to_domain(r: HandoffRecord) -> Handoff:
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
