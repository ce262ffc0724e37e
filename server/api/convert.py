"""Domain values ⇄ protobuf messages. The only place that knows both.

It also keeps every response message within ``MAX_MESSAGE_BYTES``: gRPC clients refuse
messages over their receive limit (4 MiB by default), and a queue of escalations at their
input limits passes that after about 58. Lists are cut into pages and snapshots into
parts here, where the encoded sizes are known.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from resolutionflow.v1 import escalation_pb2 as esc_pb
from resolutionflow.v1 import handoff_pb2 as pb

from server.domain.context import HandoffContext
from server.domain.metrics import DurationStats, EscalationMetrics
from server.domain.types import (
    AccountUser,
    Assessment,
    AssessmentStatus,
    Comment,
    Event,
    EventType,
    Handoff,
    Intent,
    Priority,
    Role,
    Status,
    Step,
    UserRef,
)

E = TypeVar("E", bound=enum.Enum)

# The most any message the server sends may weigh, whatever the data: a quarter of the
# smallest default receive limit of the usual gRPC clients (4 MiB).
MAX_MESSAGE_BYTES = 1024 * 1024
# Room for what a list or snapshot message holds besides its handoffs (sequence, type,
# time, page token, reset reason): far less than this.
_ENVELOPE_BYTES = 8 * 1024


def _pairs(proto_enum: Any, prefix: str, domain: type[E]) -> tuple[dict[E, int], dict[int, E]]:
    """Proto enum value names are the domain names with the buf prefix in front."""
    to_proto = {d: proto_enum.Value(prefix + str(d.value)) for d in domain}
    return to_proto, {v: k for k, v in to_proto.items()}


INTENT, INTENT_FROM = _pairs(pb.HandoffIntent, "HANDOFF_INTENT_", Intent)
STATUS, STATUS_FROM = _pairs(pb.HandoffStatus, "HANDOFF_STATUS_", Status)
PRIORITY, PRIORITY_FROM = _pairs(pb.Priority, "PRIORITY_", Priority)
ASSESSMENT, _ASSESSMENT_FROM = _pairs(pb.AssessmentStatus, "ASSESSMENT_STATUS_", AssessmentStatus)
EVENT, _EVENT_FROM = _pairs(pb.EventType, "EVENT_TYPE_", EventType)


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def user_ref(value: UserRef | None) -> pb.UserRef | None:
    return pb.UserRef(id=value.id, name=value.name) if value else None


def steps(values: tuple[Step, ...]) -> list[pb.Step]:
    return [pb.Step(description=s.description, outcome=s.outcome) for s in values]


def assessment(a: Assessment) -> pb.Assessment:
    return pb.Assessment(
        status=ASSESSMENT[a.status],  # type: ignore[arg-type]
        summary=a.summary,
        suggested_first_step=a.suggested_first_step,
        provider=a.provider,
        failure_reason=a.failure_reason,
        completed_at=timestamp(a.completed_at),
    )


def handoff(h: Handoff) -> pb.Handoff:
    return pb.Handoff(
        id=h.id,
        account_id=h.account_id,
        session_id=h.session_id,
        intent=INTENT[h.intent],  # type: ignore[arg-type]
        status=STATUS[h.status],  # type: ignore[arg-type]
        priority=PRIORITY[h.priority],  # type: ignore[arg-type]
        problem_summary=h.problem_summary,
        steps_tried=steps(h.steps_tried),
        notes=h.notes,
        created_by=user_ref(h.created_by),
        picked_up_by=user_ref(h.picked_up_by),
        resolution_note=h.resolution_note,
        assessment=assessment(h.assessment),
        sla_due_at=timestamp(h.sla_due_at),
        created_at=timestamp(h.created_at),
        picked_up_at=timestamp(h.picked_up_at),
        resolved_at=timestamp(h.resolved_at),
        cancelled_at=timestamp(h.cancelled_at),
        updated_at=timestamp(h.updated_at),
        sequence=h.sequence,
    )


ROLE: dict[Role, int] = {
    Role.TECHNICIAN: pb.ROLE_TECHNICIAN,
    Role.ENGINEER: pb.ROLE_ENGINEER,
    Role.ADMIN: pb.ROLE_ADMIN,
}


def comment(c: Comment) -> pb.Comment:
    return pb.Comment(
        id=c.id,
        handoff_id=c.handoff_id,
        author=user_ref(c.author),
        author_role=ROLE[c.author_role],  # type: ignore[arg-type]
        body=c.body,
        created_at=timestamp(c.created_at),
    )


def account_user(u: AccountUser) -> esc_pb.AccountUser:
    return esc_pb.AccountUser(
        id=u.id,
        name=u.name,
        role=ROLE[u.role],  # type: ignore[arg-type]
        last_seen_at=timestamp(u.last_seen_at),
    )


def handoff_event(event: Event) -> pb.HandoffEvent:
    """One logged change as sent on the streams and in GetHandoffHistory."""
    d = event.detail
    return pb.HandoffEvent(
        sequence=event.sequence,
        type=EVENT[event.type],  # type: ignore[arg-type]
        occurred_at=timestamp(event.occurred_at),
        handoff=handoff(event.handoff),
        actor=user_ref(d.actor) if d else None,
        note=d.note if d else "",
        comment=comment(d.comment) if d and d.comment else None,
        previous_holder=user_ref(d.previous_holder) if d else None,
    )


def context(c: HandoffContext) -> esc_pb.HandoffContext:
    return esc_pb.HandoffContext(
        handoff=handoff(c.handoff),
        problem_summary=c.problem_summary,
        whats_been_tried=steps(c.whats_been_tried),
        ai_assessment=assessment(c.ai_assessment),
        start_here=c.start_here,
        notes=c.notes,
        similar_resolved=[handoff(h) for h in c.similar_resolved],
    )


def duration_stats(d: DurationStats) -> esc_pb.DurationStats:
    return esc_pb.DurationStats(
        count=d.count,
        p50_seconds=d.p50_seconds,
        p90_seconds=d.p90_seconds,
        max_seconds=d.max_seconds,
    )


def metrics(m: EscalationMetrics) -> esc_pb.EscalationMetrics:
    return esc_pb.EscalationMetrics(
        start_time=timestamp(m.start_time),
        end_time=timestamp(m.end_time),
        created=m.created,
        picked_up=m.picked_up,
        resolved=m.resolved,
        cancelled=m.cancelled,
        open_now=m.open_now,
        oldest_waiting_seconds=m.oldest_waiting_seconds,
        time_to_pickup=duration_stats(m.time_to_pickup),
        time_to_resolve=duration_stats(m.time_to_resolve),
        sla_breached=m.sla_breached,
        by_priority=[
            esc_pb.PriorityMetrics(
                priority=PRIORITY[p.priority],  # type: ignore[arg-type]
                created=p.created,
                picked_up=p.picked_up,
                resolved=p.resolved,
                open_now=p.open_now,
                sla_breached=p.sla_breached,
                time_to_pickup=duration_stats(p.time_to_pickup),
            )
            for p in m.by_priority
        ],
        collaboration=esc_pb.CollaborationMetrics(
            transfers=m.collaboration.transfers,
            comments=m.collaboration.comments,
            reopened=m.collaboration.reopened,
            reopen_rate=m.collaboration.reopen_rate,
            comments_per_escalation=m.collaboration.comments_per_escalation,
        ),
        by_day=[
            esc_pb.DayMetrics(
                date=d.date, created=d.created, picked_up=d.picked_up, resolved=d.resolved
            )
            for d in m.by_day
        ],
    )


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def fitting(items: list[Any], budget: int = MAX_MESSAGE_BYTES - _ENVELOPE_BYTES) -> int:
    """How many of ``items``, from the first, fit in one repeated field within ``budget``
    bytes (at least one, so a page always moves on; one handoff at its input limits is
    far below the budget)."""
    used = 0
    for count, item in enumerate(items):
        size = item.ByteSize()
        used += 1 + _varint_size(size) + size  # tag, length, message
        if used > budget and count:
            return count
    return len(items)


def steps_from(values: Any) -> list[Step]:
    return [Step(description=s.description, outcome=s.outcome) for s in values]


class ProtoEncoder:
    """Encodes stream messages once; the same bytes go to every subscriber."""

    def event(self, event: Event) -> bytes:
        return handoff_event(event).SerializeToString()

    def control(self, type: EventType, sequence: int) -> bytes:
        """A message without handoffs (a HEARTBEAT)."""
        return pb.HandoffEvent(
            sequence=sequence,
            type=EVENT[type],  # type: ignore[arg-type]
            occurred_at=timestamp(datetime.now(UTC)),
        ).SerializeToString()

    def snapshot(
        self, type: EventType, sequence: int, handoffs: list[Handoff], reason: str = ""
    ) -> list[bytes]:
        """A SNAPSHOT or RESET as one message, or as several parts of at most
        ``MAX_MESSAGE_BYTES`` each, all but the last with ``snapshot_continues`` set."""
        items = [handoff(h) for h in handoffs]
        now = timestamp(datetime.now(UTC))
        parts: list[bytes] = []
        while True:
            count = fitting(items)
            parts.append(
                pb.HandoffEvent(
                    sequence=sequence,
                    type=EVENT[type],  # type: ignore[arg-type]
                    occurred_at=now,
                    snapshot=items[:count],
                    reset_reason=reason,
                    snapshot_continues=count < len(items),
                ).SerializeToString()
            )
            items = items[count:]
            if not items:
                return parts
