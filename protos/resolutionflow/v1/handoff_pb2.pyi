import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandoffIntent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HANDOFF_INTENT_UNSPECIFIED: _ClassVar[HandoffIntent]
    HANDOFF_INTENT_ESCALATE: _ClassVar[HandoffIntent]
    HANDOFF_INTENT_REASSIGN: _ClassVar[HandoffIntent]

class HandoffStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HANDOFF_STATUS_UNSPECIFIED: _ClassVar[HandoffStatus]
    HANDOFF_STATUS_OPEN: _ClassVar[HandoffStatus]
    HANDOFF_STATUS_PICKED_UP: _ClassVar[HandoffStatus]
    HANDOFF_STATUS_RESOLVED: _ClassVar[HandoffStatus]
    HANDOFF_STATUS_CANCELLED: _ClassVar[HandoffStatus]

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_URGENT: _ClassVar[Priority]

class AssessmentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSESSMENT_STATUS_UNSPECIFIED: _ClassVar[AssessmentStatus]
    ASSESSMENT_STATUS_PENDING: _ClassVar[AssessmentStatus]
    ASSESSMENT_STATUS_READY: _ClassVar[AssessmentStatus]
    ASSESSMENT_STATUS_FAILED: _ClassVar[AssessmentStatus]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_SNAPSHOT: _ClassVar[EventType]
    EVENT_TYPE_RESET: _ClassVar[EventType]
    EVENT_TYPE_CREATED: _ClassVar[EventType]
    EVENT_TYPE_PICKED_UP: _ClassVar[EventType]
    EVENT_TYPE_RELEASED: _ClassVar[EventType]
    EVENT_TYPE_RESOLVED: _ClassVar[EventType]
    EVENT_TYPE_CANCELLED: _ClassVar[EventType]
    EVENT_TYPE_ASSESSMENT_READY: _ClassVar[EventType]
    EVENT_TYPE_SLA_WARNING: _ClassVar[EventType]
    EVENT_TYPE_SLA_BREACHED: _ClassVar[EventType]
    EVENT_TYPE_HEARTBEAT: _ClassVar[EventType]
    EVENT_TYPE_TRANSFERRED: _ClassVar[EventType]
    EVENT_TYPE_COMMENTED: _ClassVar[EventType]
    EVENT_TYPE_REOPENED: _ClassVar[EventType]
    EVENT_TYPE_PRIORITY_RAISED: _ClassVar[EventType]
    EVENT_TYPE_WEBHOOK_FAILING: _ClassVar[EventType]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_TECHNICIAN: _ClassVar[Role]
    ROLE_ENGINEER: _ClassVar[Role]
    ROLE_ADMIN: _ClassVar[Role]
HANDOFF_INTENT_UNSPECIFIED: HandoffIntent
HANDOFF_INTENT_ESCALATE: HandoffIntent
HANDOFF_INTENT_REASSIGN: HandoffIntent
HANDOFF_STATUS_UNSPECIFIED: HandoffStatus
HANDOFF_STATUS_OPEN: HandoffStatus
HANDOFF_STATUS_PICKED_UP: HandoffStatus
HANDOFF_STATUS_RESOLVED: HandoffStatus
HANDOFF_STATUS_CANCELLED: HandoffStatus
PRIORITY_UNSPECIFIED: Priority
PRIORITY_LOW: Priority
PRIORITY_NORMAL: Priority
PRIORITY_HIGH: Priority
PRIORITY_URGENT: Priority
ASSESSMENT_STATUS_UNSPECIFIED: AssessmentStatus
ASSESSMENT_STATUS_PENDING: AssessmentStatus
ASSESSMENT_STATUS_READY: AssessmentStatus
ASSESSMENT_STATUS_FAILED: AssessmentStatus
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_SNAPSHOT: EventType
EVENT_TYPE_RESET: EventType
EVENT_TYPE_CREATED: EventType
EVENT_TYPE_PICKED_UP: EventType
EVENT_TYPE_RELEASED: EventType
EVENT_TYPE_RESOLVED: EventType
EVENT_TYPE_CANCELLED: EventType
EVENT_TYPE_ASSESSMENT_READY: EventType
EVENT_TYPE_SLA_WARNING: EventType
EVENT_TYPE_SLA_BREACHED: EventType
EVENT_TYPE_HEARTBEAT: EventType
EVENT_TYPE_TRANSFERRED: EventType
EVENT_TYPE_COMMENTED: EventType
EVENT_TYPE_REOPENED: EventType
EVENT_TYPE_PRIORITY_RAISED: EventType
EVENT_TYPE_WEBHOOK_FAILING: EventType
ROLE_UNSPECIFIED: Role
ROLE_TECHNICIAN: Role
ROLE_ENGINEER: Role
ROLE_ADMIN: Role

class Step(_message.Message):
    __slots__ = ("description", "outcome")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    description: str
    outcome: str
    def __init__(self, description: _Optional[str] = ..., outcome: _Optional[str] = ...) -> None: ...

class UserRef(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Assessment(_message.Message):
    __slots__ = ("status", "summary", "suggested_first_step", "provider", "failure_reason", "completed_at")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_FIRST_STEP_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    status: AssessmentStatus
    summary: str
    suggested_first_step: str
    provider: str
    failure_reason: str
    completed_at: _timestamp_pb2.Timestamp
    def __init__(self, status: _Optional[_Union[AssessmentStatus, str]] = ..., summary: _Optional[str] = ..., suggested_first_step: _Optional[str] = ..., provider: _Optional[str] = ..., failure_reason: _Optional[str] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Handoff(_message.Message):
    __slots__ = ("id", "account_id", "session_id", "intent", "status", "priority", "problem_summary", "steps_tried", "notes", "created_by", "picked_up_by", "resolution_note", "assessment", "sla_due_at", "created_at", "picked_up_at", "resolved_at", "cancelled_at", "updated_at", "sequence")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    STEPS_TRIED_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    PICKED_UP_BY_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_NOTE_FIELD_NUMBER: _ClassVar[int]
    ASSESSMENT_FIELD_NUMBER: _ClassVar[int]
    SLA_DUE_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PICKED_UP_AT_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    account_id: str
    session_id: str
    intent: HandoffIntent
    status: HandoffStatus
    priority: Priority
    problem_summary: str
    steps_tried: _containers.RepeatedCompositeFieldContainer[Step]
    notes: str
    created_by: UserRef
    picked_up_by: UserRef
    resolution_note: str
    assessment: Assessment
    sla_due_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    picked_up_at: _timestamp_pb2.Timestamp
    resolved_at: _timestamp_pb2.Timestamp
    cancelled_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    sequence: int
    def __init__(self, id: _Optional[str] = ..., account_id: _Optional[str] = ..., session_id: _Optional[str] = ..., intent: _Optional[_Union[HandoffIntent, str]] = ..., status: _Optional[_Union[HandoffStatus, str]] = ..., priority: _Optional[_Union[Priority, str]] = ..., problem_summary: _Optional[str] = ..., steps_tried: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., notes: _Optional[str] = ..., created_by: _Optional[_Union[UserRef, _Mapping]] = ..., picked_up_by: _Optional[_Union[UserRef, _Mapping]] = ..., resolution_note: _Optional[str] = ..., assessment: _Optional[_Union[Assessment, _Mapping]] = ..., sla_due_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., picked_up_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resolved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancelled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...

class Comment(_message.Message):
    __slots__ = ("id", "handoff_id", "author", "author_role", "body", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ROLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    handoff_id: str
    author: UserRef
    author_role: Role
    body: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., handoff_id: _Optional[str] = ..., author: _Optional[_Union[UserRef, _Mapping]] = ..., author_role: _Optional[_Union[Role, str]] = ..., body: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class HandoffEvent(_message.Message):
    __slots__ = ("sequence", "type", "occurred_at", "handoff", "snapshot", "reset_reason", "snapshot_continues", "actor", "note", "comment", "previous_holder", "webhook_endpoint")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    RESET_REASON_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_CONTINUES_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_HOLDER_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    type: EventType
    occurred_at: _timestamp_pb2.Timestamp
    handoff: Handoff
    snapshot: _containers.RepeatedCompositeFieldContainer[Handoff]
    reset_reason: str
    snapshot_continues: bool
    actor: UserRef
    note: str
    comment: Comment
    previous_holder: UserRef
    webhook_endpoint: WebhookEndpointRef
    def __init__(self, sequence: _Optional[int] = ..., type: _Optional[_Union[EventType, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., handoff: _Optional[_Union[Handoff, _Mapping]] = ..., snapshot: _Optional[_Iterable[_Union[Handoff, _Mapping]]] = ..., reset_reason: _Optional[str] = ..., snapshot_continues: _Optional[bool] = ..., actor: _Optional[_Union[UserRef, _Mapping]] = ..., note: _Optional[str] = ..., comment: _Optional[_Union[Comment, _Mapping]] = ..., previous_holder: _Optional[_Union[UserRef, _Mapping]] = ..., webhook_endpoint: _Optional[_Union[WebhookEndpointRef, _Mapping]] = ...) -> None: ...

class WebhookEndpointRef(_message.Message):
    __slots__ = ("id", "host", "description", "last_error")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    host: str
    description: str
    last_error: str
    def __init__(self, id: _Optional[str] = ..., host: _Optional[str] = ..., description: _Optional[str] = ..., last_error: _Optional[str] = ...) -> None: ...

class CreateHandoffRequest(_message.Message):
    __slots__ = ("request_id", "session_id", "intent", "priority", "problem_summary", "steps_tried", "notes")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    STEPS_TRIED_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    session_id: str
    intent: HandoffIntent
    priority: Priority
    problem_summary: str
    steps_tried: _containers.RepeatedCompositeFieldContainer[Step]
    notes: str
    def __init__(self, request_id: _Optional[str] = ..., session_id: _Optional[str] = ..., intent: _Optional[_Union[HandoffIntent, str]] = ..., priority: _Optional[_Union[Priority, str]] = ..., problem_summary: _Optional[str] = ..., steps_tried: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., notes: _Optional[str] = ...) -> None: ...

class CreateHandoffResponse(_message.Message):
    __slots__ = ("handoff",)
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    handoff: Handoff
    def __init__(self, handoff: _Optional[_Union[Handoff, _Mapping]] = ...) -> None: ...

class GetHandoffRequest(_message.Message):
    __slots__ = ("handoff_id",)
    HANDOFF_ID_FIELD_NUMBER: _ClassVar[int]
    handoff_id: str
    def __init__(self, handoff_id: _Optional[str] = ...) -> None: ...

class GetHandoffResponse(_message.Message):
    __slots__ = ("handoff",)
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    handoff: Handoff
    def __init__(self, handoff: _Optional[_Union[Handoff, _Mapping]] = ...) -> None: ...

class ListHandoffsRequest(_message.Message):
    __slots__ = ("status", "intent", "priority", "page_size", "page_token")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: HandoffStatus
    intent: HandoffIntent
    priority: Priority
    page_size: int
    page_token: str
    def __init__(self, status: _Optional[_Union[HandoffStatus, str]] = ..., intent: _Optional[_Union[HandoffIntent, str]] = ..., priority: _Optional[_Union[Priority, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListHandoffsResponse(_message.Message):
    __slots__ = ("handoffs", "next_page_token")
    HANDOFFS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    handoffs: _containers.RepeatedCompositeFieldContainer[Handoff]
    next_page_token: str
    def __init__(self, handoffs: _Optional[_Iterable[_Union[Handoff, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelHandoffRequest(_message.Message):
    __slots__ = ("handoff_id",)
    HANDOFF_ID_FIELD_NUMBER: _ClassVar[int]
    handoff_id: str
    def __init__(self, handoff_id: _Optional[str] = ...) -> None: ...

class CancelHandoffResponse(_message.Message):
    __slots__ = ("handoff",)
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    handoff: Handoff
    def __init__(self, handoff: _Optional[_Union[Handoff, _Mapping]] = ...) -> None: ...

class WatchHandoffsRequest(_message.Message):
    __slots__ = ("after_sequence",)
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    def __init__(self, after_sequence: _Optional[int] = ...) -> None: ...

class AddCommentRequest(_message.Message):
    __slots__ = ("handoff_id", "body", "request_id")
    HANDOFF_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    handoff_id: str
    body: str
    request_id: str
    def __init__(self, handoff_id: _Optional[str] = ..., body: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class AddCommentResponse(_message.Message):
    __slots__ = ("comment",)
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    comment: Comment
    def __init__(self, comment: _Optional[_Union[Comment, _Mapping]] = ...) -> None: ...

class ReopenHandoffRequest(_message.Message):
    __slots__ = ("handoff_id", "reason")
    HANDOFF_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    handoff_id: str
    reason: str
    def __init__(self, handoff_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReopenHandoffResponse(_message.Message):
    __slots__ = ("handoff",)
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    handoff: Handoff
    def __init__(self, handoff: _Optional[_Union[Handoff, _Mapping]] = ...) -> None: ...

class GetHandoffHistoryRequest(_message.Message):
    __slots__ = ("handoff_id", "page_token")
    HANDOFF_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    handoff_id: str
    page_token: str
    def __init__(self, handoff_id: _Optional[str] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetHandoffHistoryResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[HandoffEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[HandoffEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetPresenceRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPresenceResponse(_message.Message):
    __slots__ = ("engineers_online", "engineers")
    ENGINEERS_ONLINE_FIELD_NUMBER: _ClassVar[int]
    ENGINEERS_FIELD_NUMBER: _ClassVar[int]
    engineers_online: int
    engineers: _containers.RepeatedCompositeFieldContainer[UserRef]
    def __init__(self, engineers_online: _Optional[int] = ..., engineers: _Optional[_Iterable[_Union[UserRef, _Mapping]]] = ...) -> None: ...

class ReportPresenceRequest(_message.Message):
    __slots__ = ("reporter_id", "accounts")
    REPORTER_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    reporter_id: str
    accounts: _containers.RepeatedCompositeFieldContainer[PresenceGroup]
    def __init__(self, reporter_id: _Optional[str] = ..., accounts: _Optional[_Iterable[_Union[PresenceGroup, _Mapping]]] = ...) -> None: ...

class PresenceGroup(_message.Message):
    __slots__ = ("account_id", "tokens")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, account_id: _Optional[str] = ..., tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class ReportPresenceResponse(_message.Message):
    __slots__ = ("accepted", "refused", "report_every_seconds", "resync")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    REPORT_EVERY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    refused: _containers.RepeatedCompositeFieldContainer[RefusedToken]
    report_every_seconds: float
    resync: bool
    def __init__(self, accepted: _Optional[int] = ..., refused: _Optional[_Iterable[_Union[RefusedToken, _Mapping]]] = ..., report_every_seconds: _Optional[float] = ..., resync: _Optional[bool] = ...) -> None: ...

class RefusedToken(_message.Message):
    __slots__ = ("account_id", "index", "reason")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    index: int
    reason: str
    def __init__(self, account_id: _Optional[str] = ..., index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...
