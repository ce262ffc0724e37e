"""Value types of the domain: handoffs, their parts, and stream events.

A handoff's field is declared once, here; the row, JSON and protobuf mappings derive from
these dataclasses (server/domain/shapes.py, ARCHITECTURE.md).
"""

from __future__ import annotations

import enum
import hashlib
import json
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from server.domain import shapes


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
    PRIORITY_RAISED = "PRIORITY_RAISED"
    # An account event: about no handoff (Event.handoff is None).
    WEBHOOK_FAILING = "WEBHOOK_FAILING"


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

    def open(
        self,
        handoff_id: str,
        account_id: str,
        creator: UserRef,
        now: datetime,
        sla_due_at: datetime | None,
    ) -> Handoff:
        """The handoff this request creates, as it starts: OPEN, assessment PENDING, not
        yet numbered (its CREATED event gives it its sequence)."""
        return Handoff(
            id=handoff_id,
            account_id=account_id,
            session_id=self.session_id,
            intent=self.intent,
            status=Status.OPEN,
            priority=self.priority,
            problem_summary=self.problem_summary,
            steps_tried=self.steps_tried,
            notes=self.notes,
            created_by=creator,
            picked_up_by=None,
            resolution_note="",
            assessment=Assessment(AssessmentStatus.PENDING),
            sla_due_at=sla_due_at,
            created_at=now,
            picked_up_at=None,
            resolved_at=None,
            cancelled_at=None,
            updated_at=now,
            sequence=0,
        )


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
        return _HANDOFF_TO_JSON(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Handoff:
        return typing.cast(Handoff, _HANDOFF_FROM_JSON(data))


@dataclass(frozen=True)
class Comment:
    id: str
    handoff_id: str
    author: UserRef
    author_role: Role
    body: str
    created_at: datetime


@dataclass(frozen=True)
class WebhookEndpointRef:
    """A webhook endpoint as an event names it: by its URL's host only (engineers see
    these events, and a full URL can be a credential)."""

    id: str
    host: str
    description: str = ""
    last_error: str = ""


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
    # WEBHOOK_FAILING: the endpoint marked failing.
    webhook_endpoint: WebhookEndpointRef | None = None

    def to_json(self) -> dict[str, Any]:
        return _DETAIL_TO_JSON(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> EventDetail | None:
        return typing.cast(EventDetail, _DETAIL_FROM_JSON(data)) if data else None


@dataclass(frozen=True)
class Event:
    """One entry of an account's event log: the handoff as it was after the change, or
    None for an account event (WEBHOOK_FAILING), which is about no handoff."""

    account_id: str
    sequence: int
    type: EventType
    occurred_at: datetime
    handoff: Handoff | None
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


# Derived from the fields once (server/domain/shapes.py): a new field needs no edit here.
_HANDOFF_TO_JSON = shapes.json_encoder(Handoff)
_HANDOFF_FROM_JSON = shapes.json_decoder(Handoff)
_DETAIL_TO_JSON = shapes.json_encoder(EventDetail)
_DETAIL_FROM_JSON = shapes.json_decoder(EventDetail)
