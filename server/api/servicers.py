"""Thin gRPC servicers: parse the request, call the core, convert the result."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from resolutionflow.v1 import escalation_pb2 as esc_pb
from resolutionflow.v1 import escalation_pb2_grpc as esc_grpc
from resolutionflow.v1 import handoff_pb2 as pb
from resolutionflow.v1 import handoff_pb2_grpc as pb_grpc

from server.api import convert
from server.api.interceptors import current_caller
from server.core import Core
from server.domain import rules
from server.errors import FieldViolation, InvalidArgument
from server.models import handoffs
from server.streaming.streams import StreamKind, Streams


def _enum_or_none(value: int, mapping: dict[int, Any], field: str, names: tuple[str, ...]) -> Any:
    """0 (unspecified) means "not given"; an unknown number is an error, not a default.

    The error lists the valid names, so the caller can fix the request from it alone.
    """
    if value == 0:
        return None
    if value not in mapping:
        raise InvalidArgument(
            [FieldViolation(field, f"unknown value {value}; {rules.one_of(names)}")]
        )
    return mapping[value]


# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59.999999999Z, nanos in [0, 1e9). The wire accepts any int64/int32, and
# converting a value outside it fails deep inside protobuf; it is the caller's mistake.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


def _times(message: Any, *fields: str) -> list[datetime | None]:
    """The given Timestamp fields as datetimes (None when absent), every bad one named."""
    values: list[datetime | None] = []
    violations: list[FieldViolation] = []
    for field in fields:
        ts: Timestamp = getattr(message, field)
        if not message.HasField(field):
            values.append(None)
        elif not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS:
            violations.append(FieldViolation(field, "out of range: years 0001 to 9999 (UTC) only"))
        elif not 0 <= ts.nanos < 1_000_000_000:
            violations.append(FieldViolation(field, "nanos must be between 0 and 999999999"))
        else:
            values.append(ts.ToDatetime(UTC))
    if violations:
        raise InvalidArgument(violations)
    return values


def _cursor(request: pb.WatchHandoffsRequest | esc_pb.StreamEscalationsRequest) -> int | None:
    return request.after_sequence if request.HasField("after_sequence") else None


class HandoffService(pb_grpc.HandoffServiceServicer):
    def __init__(self, core: Core, streams: Streams) -> None:
        self.core = core
        self.streams = streams

    async def CreateHandoff(
        self, request: pb.CreateHandoffRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateHandoffResponse:
        new = rules.validate_new_handoff(
            request_id=request.request_id,
            session_id=request.session_id,
            intent=convert.INTENT_FROM.get(request.intent),
            priority=_enum_or_none(
                request.priority, convert.PRIORITY_FROM, "priority", rules.PRIORITY_NAMES
            ),
            problem_summary=request.problem_summary,
            steps_tried=convert.steps_from(request.steps_tried),
            notes=request.notes,
        )
        handoff, _created = await self.core.create_handoff(current_caller(), new)
        return pb.CreateHandoffResponse(handoff=convert.handoff(handoff))

    async def GetHandoff(
        self, request: pb.GetHandoffRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetHandoffResponse:
        handoff_id = rules.validate_handoff_id(request.handoff_id)
        handoff = await self.core.get_handoff(current_caller(), handoff_id)
        return pb.GetHandoffResponse(handoff=convert.handoff(handoff))

    async def ListHandoffs(
        self, request: pb.ListHandoffsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListHandoffsResponse:
        page, token = await self.core.list_handoffs(
            current_caller(),
            status=_enum_or_none(request.status, convert.STATUS_FROM, "status", rules.STATUS_NAMES),
            intent=_enum_or_none(request.intent, convert.INTENT_FROM, "intent", rules.INTENT_NAMES),
            priority=_enum_or_none(
                request.priority, convert.PRIORITY_FROM, "priority", rules.PRIORITY_NAMES
            ),
            page_size=rules.validate_page_size(request.page_size),
            page_token=request.page_token,
        )
        items = [convert.handoff(h) for h in page]
        count = convert.fitting(items)
        if count < len(items):  # over the message bound: the next page starts where it stopped
            items, token = items[:count], handoffs.page_token_after(page[count - 1])
        return pb.ListHandoffsResponse(handoffs=items, next_page_token=token)

    async def CancelHandoff(
        self, request: pb.CancelHandoffRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelHandoffResponse:
        handoff_id = rules.validate_handoff_id(request.handoff_id)
        handoff = await self.core.cancel_handoff(current_caller(), handoff_id)
        return pb.CancelHandoffResponse(handoff=convert.handoff(handoff))

    def WatchHandoffs(
        self, request: pb.WatchHandoffsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        # Encoded HandoffEvent bytes (registered without a serializer: sent as they are),
        # returned rather than re-yielded: one generator fewer for every event sent.
        return self.streams.open(StreamKind.HANDOFFS, current_caller(), _cursor(request), context)


class EscalationService(esc_grpc.EscalationServiceServicer):
    def __init__(self, core: Core, streams: Streams) -> None:
        self.core = core
        self.streams = streams

    def StreamEscalations(
        self, request: esc_pb.StreamEscalationsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        return self.streams.open(
            StreamKind.ESCALATIONS, current_caller(), _cursor(request), context
        )

    async def ListEscalations(
        self, request: esc_pb.ListEscalationsRequest, context: grpc.aio.ServicerContext
    ) -> esc_pb.ListEscalationsResponse:
        snapshot = await self.core.list_escalations(current_caller(), request.page_token)
        items = [convert.handoff(h) for h in snapshot.handoffs]
        count = convert.fitting(items)
        token = ""
        if count < len(items):
            token = handoffs.queue_page_token(snapshot.sequence, snapshot.handoffs[count - 1])
        return esc_pb.ListEscalationsResponse(
            escalations=items[:count], sequence=snapshot.sequence, next_page_token=token
        )

    async def PickUpEscalation(
        self, request: esc_pb.PickUpEscalationRequest, context: grpc.aio.ServicerContext
    ) -> esc_pb.PickUpEscalationResponse:
        handoff_id = rules.validate_handoff_id(request.handoff_id)
        ctx = await self.core.pick_up(current_caller(), handoff_id)
        return esc_pb.PickUpEscalationResponse(context=convert.context(ctx))

    async def GetHandoffContext(
        self, request: esc_pb.GetHandoffContextRequest, context: grpc.aio.ServicerContext
    ) -> esc_pb.GetHandoffContextResponse:
        handoff_id = rules.validate_handoff_id(request.handoff_id)
        ctx = await self.core.get_context(current_caller(), handoff_id)
        return esc_pb.GetHandoffContextResponse(context=convert.context(ctx))

    async def ReleaseEscalation(
        self, request: esc_pb.ReleaseEscalationRequest, context: grpc.aio.ServicerContext
    ) -> esc_pb.ReleaseEscalationResponse:
        handoff_id = rules.validate_handoff_id(request.handoff_id)
        handoff = await self.core.release(current_caller(), handoff_id)
        return esc_pb.ReleaseEscalationResponse(handoff=convert.handoff(handoff))

    async def ResolveEscalation(
        self, request: esc_pb.ResolveEscalationRequest, context: grpc.aio.ServicerContext
    ) -> esc_pb.ResolveEscalationResponse:
        handoff_id = rules.validate_handoff_id(request.handoff_id)
        note = rules.validate_resolution_note(request.resolution_note)
        handoff = await self.core.resolve(current_caller(), handoff_id, note)
        return esc_pb.ResolveEscalationResponse(handoff=convert.handoff(handoff))

    async def GetEscalationMetrics(
        self, request: esc_pb.GetEscalationMetricsRequest, context: grpc.aio.ServicerContext
    ) -> esc_pb.GetEscalationMetricsResponse:
        start, end = _times(request, "start_time", "end_time")
        result = await self.core.metrics(current_caller(), start, end)
        return esc_pb.GetEscalationMetricsResponse(metrics=convert.metrics(result))
