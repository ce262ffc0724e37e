"""Business rules: the handoff state machine and input limits (who may do what is in
server/domain/policy.py).

Transitions are applied in the database as conditional updates
(``UPDATE ... WHERE status IN allowed_from``), so the state machine here is also what
makes concurrent pickups safe: only one update can match an OPEN row.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass

from server.domain.types import (
    EventType,
    Handoff,
    Intent,
    NewHandoff,
    Priority,
    Status,
    Step,
)
from server.errors import FailedPrecondition, FieldViolation, InvalidArgument

MAX_ID = 128
MAX_SUMMARY = 2_000
MAX_STEPS = 50
MAX_STEP_DESCRIPTION = 1_000
MAX_STEP_OUTCOME = 200
MAX_NOTES = 10_000
MAX_RESOLUTION_NOTE = 5_000
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50


class Action(enum.Enum):
    PICK_UP = "pick up"
    RELEASE = "release"
    RESOLVE = "resolve"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Transition:
    allowed_from: frozenset[Status]
    to: Status
    event: EventType


TRANSITIONS: dict[Action, Transition] = {
    Action.PICK_UP: Transition(frozenset({Status.OPEN}), Status.PICKED_UP, EventType.PICKED_UP),
    Action.RELEASE: Transition(frozenset({Status.PICKED_UP}), Status.OPEN, EventType.RELEASED),
    Action.RESOLVE: Transition(frozenset({Status.PICKED_UP}), Status.RESOLVED, EventType.RESOLVED),
    Action.CANCEL: Transition(frozenset({Status.OPEN}), Status.CANCELLED, EventType.CANCELLED),
}


def refuse_transition(action: Action, current: Handoff) -> FailedPrecondition:
    """The error for an action that lost a race or does not apply to the current state."""
    holder = current.picked_up_by
    if current.status is Status.PICKED_UP and holder is not None:
        return FailedPrecondition(
            f"cannot {action.value} handoff {current.id}: "
            f"already picked up by {holder.name or holder.id} ({holder.id})",
            reason="ALREADY_PICKED_UP",
            metadata={"holder_id": holder.id, "holder_name": holder.name},
        )
    return FailedPrecondition(
        f"cannot {action.value} handoff {current.id}: it is {current.status.value}"
    )


def require_escalation(handoff: Handoff) -> Handoff:
    """Pickups, releases, resolutions and the context are for escalations only."""
    if handoff.intent is not Intent.ESCALATE:
        raise FailedPrecondition(f"handoff {handoff.id} is not an escalation")
    return handoff


def validate_new_handoff(
    *,
    request_id: str,
    session_id: str,
    intent: Intent | None,
    priority: Priority | None,
    problem_summary: str,
    steps_tried: list[Step],
    notes: str,
) -> NewHandoff:
    """Check every field and report all violations at once."""
    v: list[FieldViolation] = []
    # Optional: absent or empty means the caller wants no idempotency (each call creates).
    _text(v, "request_id", request_id, MAX_ID, required=False)
    _text(v, "session_id", session_id, MAX_ID, required=True)
    if intent is None:
        v.append(FieldViolation("intent", one_of(INTENT_NAMES)))
    _text(v, "problem_summary", problem_summary, MAX_SUMMARY, required=True)
    if len(steps_tried) > MAX_STEPS:
        v.append(FieldViolation("steps_tried", f"at most {MAX_STEPS} steps"))
    for i, step in enumerate(steps_tried[:MAX_STEPS]):
        _text(v, f"steps_tried[{i}].description", step.description, MAX_STEP_DESCRIPTION, True)
        _text(v, f"steps_tried[{i}].outcome", step.outcome, MAX_STEP_OUTCOME, required=False)
    _text(v, "notes", notes, MAX_NOTES, required=False)
    if v:
        raise InvalidArgument(v)
    assert intent is not None
    return NewHandoff(
        request_id=request_id or None,
        session_id=session_id.strip(),
        intent=intent,
        priority=priority or Priority.NORMAL,
        problem_summary=problem_summary.strip(),
        steps_tried=tuple(Step(s.description.strip(), s.outcome.strip()) for s in steps_tried),
        notes=notes.strip(),
    )


def validate_handoff_id(value: str, field: str = "handoff_id") -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument([FieldViolation(field, "must be a handoff id (UUID)")]) from None


_REPORTER_ID = re.compile(r"[A-Za-z0-9_-]{1,48}")
# Per ReportPresence call: the edge splits bigger reports (a request is at most 1 MiB).
MAX_PRESENCE_GROUPS = 1000
MAX_PRESENCE_TOKENS = 5000


def validate_presence_report(reporter_id: str, groups: int, tokens: int) -> str:
    v: list[FieldViolation] = []
    if not _REPORTER_ID.fullmatch(reporter_id):
        v.append(FieldViolation("reporter_id", "1 to 48 letters, digits, '-' or '_'"))
    if groups > MAX_PRESENCE_GROUPS:
        v.append(FieldViolation("accounts", f"at most {MAX_PRESENCE_GROUPS} per report"))
    if tokens > MAX_PRESENCE_TOKENS:
        v.append(FieldViolation("accounts", f"at most {MAX_PRESENCE_TOKENS} tokens per report"))
    if v:
        raise InvalidArgument(v)
    return reporter_id


def validate_resolution_note(value: str) -> str:
    """Required: the note is what the next technician with this problem learns from."""
    v: list[FieldViolation] = []
    _text(v, "resolution_note", value, MAX_RESOLUTION_NOTE, required=True)
    if v:
        raise InvalidArgument(v)
    return value.strip()


def validate_page_size(value: int) -> int:
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            [FieldViolation("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")]
        )
    return value


# The names clients send (protobuf enum value names), listed in errors about enum fields so
# a caller learns the valid values from the error itself.
INTENT_NAMES = tuple(f"HANDOFF_INTENT_{i.value}" for i in Intent)
STATUS_NAMES = tuple(f"HANDOFF_STATUS_{s.value}" for s in Status)
PRIORITY_NAMES = tuple(f"PRIORITY_{p.value}" for p in Priority)


def one_of(names: tuple[str, ...]) -> str:
    return "must be one of " + ", ".join(names)


def _text(v: list[FieldViolation], field: str, value: str, limit: int, required: bool) -> None:
    if required and not value.strip():
        v.append(FieldViolation(field, "is required"))
    elif len(value) > limit:
        v.append(FieldViolation(field, f"at most {limit} characters (got {len(value)})"))
    elif _CONTROL.search(value):
        v.append(FieldViolation(field, "must not contain control characters"))


# Unicode control characters (category Cc: C0, DEL and C1) but tab and line breaks; one
# regular-expression scan instead of a Python call per character (every create's text).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
