import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from resolutionflow.v1 import handoff_pb2 as _handoff_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamEscalationsRequest(_message.Message):
    __slots__ = ("after_sequence",)
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    def __init__(self, after_sequence: _Optional[int] = ...) -> None: ...

class ListEscalationsRequest(_message.Message):
    __slots__ = ("page_token",)
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_token: str
    def __init__(self, page_token: _Optional[str] = ...) -> None: ...

class ListEscalationsResponse(_message.Message):
    __slots__ = ("escalations", "sequence", "next_page_token")
    ESCALATIONS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    escalations: _containers.RepeatedCompositeFieldContainer[_handoff_pb2.Handoff]
    sequence: int
    next_page_token: str
    def __init__(self, escalations: _Optional[_Iterable[_Union[_handoff_pb2.Handoff, _Mapping]]] = ..., sequence: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class HandoffContext(_message.Message):
    __slots__ = ("handoff", "problem_summary", "whats_been_tried", "ai_assessment", "start_here", "notes")
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    WHATS_BEEN_TRIED_FIELD_NUMBER: _ClassVar[int]
    AI_ASSESSMENT_FIELD_NUMBER: _ClassVar[int]
    START_HERE_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    handoff: _handoff_pb2.Handoff
    problem_summary: str
    whats_been_tried: _containers.RepeatedCompositeFieldContainer[_handoff_pb2.Step]
    ai_assessment: _handoff_pb2.Assessment
    start_here: str
    notes: str
    def __init__(self, handoff: _Optional[_Union[_handoff_pb2.Handoff, _Mapping]] = ..., problem_summary: _Optional[str] = ..., whats_been_tried: _Optional[_Iterable[_Union[_handoff_pb2.Step, _Mapping]]] = ..., ai_assessment: _Optional[_Union[_handoff_pb2.Assessment, _Mapping]] = ..., start_here: _Optional[str] = ..., notes: _Optional[str] = ...) -> None: ...

class PickUpEscalationRequest(_message.Message):
    __slots__ = ("handoff_id",)
    HANDOFF_ID_FIELD_NUMBER: _ClassVar[int]
    handoff_id: str
    def __init__(self, handoff_id: _Optional[str] = ...) -> None: ...

class PickUpEscalationResponse(_message.Message):
    __slots__ = ("context",)
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    context: HandoffContext
    def __init__(self, context: _Optional[_Union[HandoffContext, _Mapping]] = ...) -> None: ...

class GetHandoffContextRequest(_message.Message):
    __slots__ = ("handoff_id",)
    HANDOFF_ID_FIELD_NUMBER: _ClassVar[int]
    handoff_id: str
    def __init__(self, handoff_id: _Optional[str] = ...) -> None: ...

class GetHandoffContextResponse(_message.Message):
    __slots__ = ("context",)
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    context: HandoffContext
    def __init__(self, context: _Optional[_Union[HandoffContext, _Mapping]] = ...) -> None: ...

class ReleaseEscalationRequest(_message.Message):
    __slots__ = ("handoff_id",)
    HANDOFF_ID_FIELD_NUMBER: _ClassVar[int]
    handoff_id: str
    def __init__(self, handoff_id: _Optional[str] = ...) -> None: ...

class ReleaseEscalationResponse(_message.Message):
    __slots__ = ("handoff",)
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    handoff: _handoff_pb2.Handoff
    def __init__(self, handoff: _Optional[_Union[_handoff_pb2.Handoff, _Mapping]] = ...) -> None: ...

class ResolveEscalationRequest(_message.Message):
    __slots__ = ("handoff_id", "resolution_note")
    HANDOFF_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_NOTE_FIELD_NUMBER: _ClassVar[int]
    handoff_id: str
    resolution_note: str
    def __init__(self, handoff_id: _Optional[str] = ..., resolution_note: _Optional[str] = ...) -> None: ...

class ResolveEscalationResponse(_message.Message):
    __slots__ = ("handoff",)
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    handoff: _handoff_pb2.Handoff
    def __init__(self, handoff: _Optional[_Union[_handoff_pb2.Handoff, _Mapping]] = ...) -> None: ...

class GetEscalationMetricsRequest(_message.Message):
    __slots__ = ("start_time", "end_time")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetEscalationMetricsResponse(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: EscalationMetrics
    def __init__(self, metrics: _Optional[_Union[EscalationMetrics, _Mapping]] = ...) -> None: ...

class DurationStats(_message.Message):
    __slots__ = ("count", "p50_seconds", "p90_seconds", "max_seconds")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P90_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    count: int
    p50_seconds: float
    p90_seconds: float
    max_seconds: float
    def __init__(self, count: _Optional[int] = ..., p50_seconds: _Optional[float] = ..., p90_seconds: _Optional[float] = ..., max_seconds: _Optional[float] = ...) -> None: ...

class PriorityMetrics(_message.Message):
    __slots__ = ("priority", "created", "picked_up", "resolved", "open_now", "sla_breached", "time_to_pickup")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    PICKED_UP_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    OPEN_NOW_FIELD_NUMBER: _ClassVar[int]
    SLA_BREACHED_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_PICKUP_FIELD_NUMBER: _ClassVar[int]
    priority: _handoff_pb2.Priority
    created: int
    picked_up: int
    resolved: int
    open_now: int
    sla_breached: int
    time_to_pickup: DurationStats
    def __init__(self, priority: _Optional[_Union[_handoff_pb2.Priority, str]] = ..., created: _Optional[int] = ..., picked_up: _Optional[int] = ..., resolved: _Optional[int] = ..., open_now: _Optional[int] = ..., sla_breached: _Optional[int] = ..., time_to_pickup: _Optional[_Union[DurationStats, _Mapping]] = ...) -> None: ...

class DayMetrics(_message.Message):
    __slots__ = ("date", "created", "picked_up", "resolved")
    DATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    PICKED_UP_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    date: str
    created: int
    picked_up: int
    resolved: int
    def __init__(self, date: _Optional[str] = ..., created: _Optional[int] = ..., picked_up: _Optional[int] = ..., resolved: _Optional[int] = ...) -> None: ...

class EscalationMetrics(_message.Message):
    __slots__ = ("start_time", "end_time", "created", "picked_up", "resolved", "cancelled", "open_now", "oldest_waiting_seconds", "time_to_pickup", "time_to_resolve", "sla_breached", "by_priority", "by_day")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    PICKED_UP_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    OPEN_NOW_FIELD_NUMBER: _ClassVar[int]
    OLDEST_WAITING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_PICKUP_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_RESOLVE_FIELD_NUMBER: _ClassVar[int]
    SLA_BREACHED_FIELD_NUMBER: _ClassVar[int]
    BY_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    BY_DAY_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    created: int
    picked_up: int
    resolved: int
    cancelled: int
    open_now: int
    oldest_waiting_seconds: float
    time_to_pickup: DurationStats
    time_to_resolve: DurationStats
    sla_breached: int
    by_priority: _containers.RepeatedCompositeFieldContainer[PriorityMetrics]
    by_day: _containers.RepeatedCompositeFieldContainer[DayMetrics]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created: _Optional[int] = ..., picked_up: _Optional[int] = ..., resolved: _Optional[int] = ..., cancelled: _Optional[int] = ..., open_now: _Optional[int] = ..., oldest_waiting_seconds: _Optional[float] = ..., time_to_pickup: _Optional[_Union[DurationStats, _Mapping]] = ..., time_to_resolve: _Optional[_Union[DurationStats, _Mapping]] = ..., sla_breached: _Optional[int] = ..., by_priority: _Optional[_Iterable[_Union[PriorityMetrics, _Mapping]]] = ..., by_day: _Optional[_Iterable[_Union[DayMetrics, _Mapping]]] = ...) -> None: ...
