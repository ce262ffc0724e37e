"""Value types of the domain: handoffs, their parts, and stream events."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Role(enum.StrEnum):
    TECHNICIAN = "technician"
    ENGINEER = "engineer"
    ADMIN = "admin"


class Intent(enum.StrEnum):
    ESCALATE = "ESCALATE"
    REASSIGN = "REASSIGN"


class Status(enum.StrEnum):
    OPEN = "OPEN"
    PICKED_UP = "PICKED_UP"
    RESOLVED = "RESOLVED"
    CANCELLED = "CANCELLED"


class Priority(enum.StrEnum):
    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"
    URGENT = "URGENT"

    @property
    def rank(self) -> int:
        """Higher is more urgent; the queue sorts on it."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.LOW: 1, Priority.NORMAL: 2, Priority.HIGH: 3, Priority.URGENT: 4}


class AssessmentStatus(enum.StrEnum):
    PENDING = "PENDING"
    READY = "READY"
    FAILED = "FAILED"


class EventType(enum.StrEnum):
    SNAPSHOT = "SNAPSHOT"
    RESET = "RESET"
    CREATED = "CREATED"
    PICKED_UP = "PICKED_UP"
    RELEASED = "RELEASED"
    RESOLVED = "RESOLVED"
    CANCELLED = "CANCELLED"
    ASSESSMENT_READY = "ASSESSMENT_READY"
    SLA_WARNING = "SLA_WARNING"
    SLA_BREACHED = "SLA_BREACHED"
    HEARTBEAT = "HEARTBEAT"
    TRANSFERRED = "TRANSFERRED"
    COMMENTED = "COMMENTED"
    REOPENED = "REOPENED"


@dataclass(frozen=True)
class Caller:
    """Who is calling, as proven by their token."""

    user_id: str
    account_id: str
    role: Role
    name: str
    # When the token ends (seconds since the epoch); a stream opened with it ends then too.
    expires_at: float | None = field(default=None, compare=False)

    @property
    def ref(self) -> UserRef:
        return UserRef(id=self.user_id, name=self.name)


@dataclass(frozen=True)
class UserRef:
    id: str
    name: str


@dataclass(frozen=True)
class Step:
    description: str
    outcome: str = ""


@dataclass(frozen=True)
class Assessment:
    status: AssessmentStatus
    summary: str = ""
    suggested_first_step: str = ""
    provider: str = ""
    failure_reason: str = ""
    completed_at: datetime | None = None


@dataclass(frozen=True)
class NewHandoff:
    """A validated create request. ``request_id`` is None when the caller sent none."""

    request_id: str | None
    session_id: str
    intent: Intent
    priority: Priority
    problem_summary: str
    steps_tried: tuple[Step, ...]
    notes: str

    def body_hash(self) -> str:
        """A canonical hash of what the request asks for (everything but request_id).

        Stored with the handoff so a repeated request_id can be told apart: the same body
        is a retry and gets the first handoff; a different body is a client bug that must
        not be answered with someone else's handoff. Taken after validation, so spellings
        that create the same handoff (an unspecified priority and NORMAL, surrounding
        blanks) hash alike.
        """
        body = {
            "session_id": self.session_id,
            "intent": self.intent.value,
            "priority": self.priority.value,
            "problem_summary": self.problem_summary,
            "steps_tried": [[s.description, s.outcome] for s in self.steps_tried],
            "notes": self.notes,
        }
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Handoff:
    id: str
    account_id: str
    session_id: str
    intent: Intent
    status: Status
    priority: Priority
    problem_summary: str
    steps_tried: tuple[Step, ...]
    notes: str
    created_by: UserRef
    picked_up_by: UserRef | None
    resolution_note: str
    assessment: Assessment
    sla_due_at: datetime | None
    created_at: datetime
    picked_up_at: datetime | None
    resolved_at: datetime | None
    cancelled_at: datetime | None
    updated_at: datetime
    sequence: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict; the event log stores the state after each change this way."""
        return _jsonable(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Handoff:
        a = data["assessment"]
        return cls(
            id=data["id"],
            account_id=data["account_id"],
            session_id=data["session_id"],
            intent=Intent(data["intent"]),
            status=Status(data["status"]),
            priority=Priority(data["priority"]),
            problem_summary=data["problem_summary"],
            steps_tried=tuple(Step(**s) for s in data["steps_tried"]),
            notes=data["notes"],
            created_by=UserRef(**data["created_by"]),
            picked_up_by=UserRef(**data["picked_up_by"]) if data["picked_up_by"] else None,
            resolution_note=data["resolution_note"],
            assessment=Assessment(
                status=AssessmentStatus(a["status"]),
                summary=a["summary"],
                suggested_first_step=a["suggested_first_step"],
                provider=a["provider"],
                failure_reason=a["failure_reason"],
                completed_at=_dt(a["completed_at"]),
            ),
            sla_due_at=_dt(data["sla_due_at"]),
            created_at=_dt_required(data["created_at"]),
            picked_up_at=_dt(data["picked_up_at"]),
            resolved_at=_dt(data["resolved_at"]),
            cancelled_at=_dt(data["cancelled_at"]),
            updated_at=_dt_required(data["updated_at"]),
            sequence=data["sequence"],
        )


@dataclass(frozen=True)
class Comment:
    id: str
    handoff_id: str
    author: UserRef
    author_role: Role
    body: str
    created_at: datetime


@dataclass(frozen=True)
class EventDetail:
    """What an event says beyond the handoff's state: who did it, the transfer note or
    reopen reason, the comment, and who held the escalation before a transfer."""

    actor: UserRef | None = None
    note: str = ""
    comment: Comment | None = None
    previous_holder: UserRef | None = None
    # An idempotency key of the change (a comment's request_id), to find a retry's first.
    request_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(_jsonable(self))

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> EventDetail | None:
        if not data:
            return None
        c = data.get("comment")
        return cls(
            actor=UserRef(**data["actor"]) if data.get("actor") else None,
            note=data.get("note", ""),
            comment=Comment(
                id=c["id"],
                handoff_id=c["handoff_id"],
                author=UserRef(**c["author"]),
                author_role=Role(c["author_role"]),
                body=c["body"],
                created_at=_dt_required(c["created_at"]),
            )
            if c
            else None,
            previous_holder=(
                UserRef(**data["previous_holder"]) if data.get("previous_holder") else None
            ),
            request_id=data.get("request_id"),
        )


@dataclass(frozen=True)
class Event:
    """One entry of an account's event log: the handoff as it was after the change."""

    account_id: str
    sequence: int
    type: EventType
    occurred_at: datetime
    handoff: Handoff
    detail: EventDetail | None = None


@dataclass(frozen=True)
class AccountUser:
    """A user the server has seen in an account, as their last token named them."""

    id: str
    name: str
    role: Role
    last_seen_at: datetime


@dataclass(frozen=True)
class QueueSnapshot:
    """A consistent read: ``handoffs`` as of the account's ``sequence``."""

    sequence: int
    handoffs: list[Handoff] = field(default_factory=list)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {name: _jsonable(getattr(value, name)) for name in value.__dataclass_fields__}
    return value


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _dt_required(value: str) -> datetime:
    return datetime.fromisoformat(value)
