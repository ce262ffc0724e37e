"""Domain values ⇄ protobuf messages. The only place that knows both.

The Handoff and its parts map by field name (``_to_message``, ARCHITECTURE.md): a new
field is the dataclass field plus the proto field of the same name, nothing here.

It also keeps every response message within ``MAX_MESSAGE_BYTES``: gRPC clients refuse
messages over their receive limit (4 MiB by default), and a queue of escalations at their
input limits passes that after about 58. Lists are cut into pages and snapshots into
parts here, where the encoded sizes are known.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from resolutionflow.v1 import escalation_pb2 as esc_pb
from resolutionflow.v1 import handoff_pb2 as pb

from server.domain import shapes
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
    WebhookEndpointRef,
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


# The message of each domain dataclass, and the number of each enum value: the explicit
# part of the mapping. Everything else is derived by field name (``_to_message``).
MESSAGES: dict[type, Any] = {
    UserRef: pb.UserRef,
    Step: pb.Step,
    Assessment: pb.Assessment,
    Handoff: pb.Handoff,
    WebhookEndpointRef: pb.WebhookEndpointRef,
}
ENUMS: dict[type, dict[Any, int]] = {
    Intent: INTENT,
    Status: STATUS,
    Priority: PRIORITY,
    AssessmentStatus: ASSESSMENT,
    EventType: EVENT,
}


@functools.cache
def _to_message(cls: type) -> Callable[[Any], Any]:
    """``value -> message`` for dataclass ``cls``, compiled once from its fields by name: a
    field of the same name in the message gets the value; enums become their numbers,
    datetimes Timestamps, nested dataclasses their messages (None leaves a field unset)."""
    src = shapes.Source()
    args = []
    for field in shapes.shape(cls):
        leaf: shapes.Leaf = None
        if field.nested:
            leaf = src.call(_to_message(field.type))
        elif field.type in ENUMS:
            leaf = (src.ref(ENUMS[field.type]) + "[{}]").format
        elif field.type is datetime:
            leaf = src.call(timestamp)
        args.append(f"{field.name}={shapes.apply(field, 'v.' + field.name, leaf)}")
    return src.compile(f"{cls.__name__}_to_proto", f"{src.ref(MESSAGES[cls])}({', '.join(args)})")


_USER_REF = _to_message(UserRef)
_STEP = _to_message(Step)
assessment: Callable[[Assessment], pb.Assessment] = _to_message(Assessment)
handoff: Callable[[Handoff], pb.Handoff] = _to_message(Handoff)
_ENDPOINT_REF = _to_message(WebhookEndpointRef)


def user_ref(value: UserRef | None) -> pb.UserRef | None:
    return _USER_REF(value) if value else None


def steps(values: tuple[Step, ...]) -> list[pb.Step]:
    return [_STEP(s) for s in values]


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
        handoff=handoff(event.handoff) if event.handoff is not None else None,
        actor=user_ref(d.actor) if d else None,
        note=d.note if d else "",
        comment=comment(d.comment) if d and d.comment else None,
        previous_holder=user_ref(d.previous_holder) if d else None,
        webhook_endpoint=_ENDPOINT_REF(d.webhook_endpoint) if d and d.webhook_endpoint else None,
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
