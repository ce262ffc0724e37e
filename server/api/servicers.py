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
from server.auth import TokenVerifier
from server.core import Core
from server.domain import collab as collab_rules
from server.domain import policy, rules
from server.domain.types import Caller, Role
from server.errors import FieldViolation, InvalidArgument, Unauthenticated
from server.models import handoffs
from server.streaming.presence import REPORTER_KEY
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
    def __init__(self, core: Core, streams: Streams, verifier: TokenVerifier) -> None:
        self.core = core
        self.streams = streams
        # The tokens of edges' presence reports (the same ones every few seconds: the
        # verifier remembers them).
        self.watchers = verifier

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

    async def AddComment(
        self, request: pb.AddCommentRequest, context: grpc.aio.ServicerContext
    ) -> pb.AddCommentResponse:
        handoff_id = rules.validate_handoff_id(request.handoff_id)
        body, request_id = collab_rules.validate_comment(request.body, request.request_id)
        comment = await self.core.add_comment(current_caller(), handoff_id, body, request_id)
        return pb.AddCommentResponse(comment=convert.comment(comment))

    async def ReopenHandoff(
        self, request: pb.ReopenHandoffRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReopenHandoffResponse:
        handoff_id = rules.validate_handoff_id(request.handoff_id)
        reason = collab_rules.validate_reopen_reason(request.reason)
        handoff = await self.core.reopen(current_caller(), handoff_id, reason)
        return pb.ReopenHandoffResponse(handoff=convert.handoff(handoff))

    async def ReportPresence(
        self, request: pb.ReportPresenceRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportPresenceResponse:
        groups = request.accounts
        reporter = rules.validate_presence_report(
            request.reporter_id, len(groups), sum(len(g.tokens) for g in groups)
        )
        presence = self.streams.presence
        assert presence is not None
        # Each browser is vouched for by its own token, verified here: the edge only
        # carries them, and a token of another account or role records nothing.
        accepted: list[Caller] = []
        refused: list[pb.RefusedToken] = []
        for group in groups:
            for index, token in enumerate(group.tokens):
                try:
                    watcher = await self.watchers.verify(token)
                except Unauthenticated as e:
                    reason = e.message
                else:
                    reason = policy.presence_refusal(watcher, group.account_id)
                if reason:
                    refused.append(
                        pb.RefusedToken(account_id=group.account_id, index=index, reason=reason)
                    )
                else:
                    accepted.append(watcher)
        resync = await presence.report(reporter, [g.account_id for g in groups], accepted)
        return pb.ReportPresenceResponse(
            accepted=len(accepted),
            refused=refused,
            report_every_seconds=presence.ttl / 3,
            resync=resync,
        )

    async def GetPresence(
        self, request: pb.GetPresenceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPresenceResponse:
        caller = current_caller()
        assert self.streams.presence is not None
        online = await self.streams.presence.online(caller.account_id)
        shown = [] if caller.role is Role.TECHNICIAN else online
        return pb.GetPresenceResponse(
            engineers_online=len(online),
            engineers=[pb.UserRef(id=u.id, name=u.name) for u in shown],
        )

    async def GetHandoffHistory(
        self, request: pb.GetHandoffHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetHandoffHistoryResponse:
        handoff_id = rules.validate_handoff_id(request.handoff_id)
        after = _history_after(request.page_token)
        events = await self.core.history(current_caller(), handoff_id, after, HISTORY_PAGE)
        items = [convert.handoff_event(e) for e in events]
        count = convert.fitting(items)
        token = ""
        if count < len(items) or len(events) == HISTORY_PAGE:
            token = str(events[count - 1].sequence)
        return pb.GetHandoffHistoryResponse(events=items[:count], next_page_token=token)


# Events per GetHandoffHistory page at most (fewer when they pass the message bound).
HISTORY_PAGE = 500


def _history_after(token: str) -> int:
    """A history page token is the sequence of the last event of the page before."""
    if not token:
        return 0
    if not token.isdigit() or len(token) > 20:
        raise InvalidArgument(
            [FieldViolation("page_token", "is not a token returned by GetHandoffHistory")]
        )
    return int(token)


class EscalationService(esc_grpc.EscalationServiceServicer):
    def __init__(self, core: Core, streams: Streams) -> None:
        self.core = core
        self.streams = streams

    def StreamEscalations(
        self, request: esc_pb.StreamEscalationsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        narrowed = collab_rules.QueueFilter(
            priorities=frozenset(
                _enum_or_none(p, convert.PRIORITY_FROM, "priorities", rules.PRIORITY_NAMES)
                for p in request.priorities
                if p
            ),
            held_by_me=request.held_by_me,
        )
        # An edge that reports its browsers' presence itself (ReportPresence) says so: its
        # stream stands for many engineers, not for the one whose token opened it.
        metadata = context.invocation_metadata() or ()
        counted = not any(key == REPORTER_KEY for key, _ in metadata)
        return self.streams.open(
            StreamKind.ESCALATIONS, current_caller(), _cursor(request), context, narrowed, counted
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

    async def TransferEscalation(
        self, request: esc_pb.TransferEscalationRequest, context: grpc.aio.ServicerContext
    ) -> esc_pb.TransferEscalationResponse:
        handoff_id = rules.validate_handoff_id(request.handoff_id)
        to_user_id, note = collab_rules.validate_transfer(request.to_user_id, request.note)
        handoff = await self.core.transfer(current_caller(), handoff_id, to_user_id, note)
        return esc_pb.TransferEscalationResponse(handoff=convert.handoff(handoff))

    async def ListAccountUsers(
        self, request: esc_pb.ListAccountUsersRequest, context: grpc.aio.ServicerContext
    ) -> esc_pb.ListAccountUsersResponse:
        users = await self.core.list_account_users(current_caller())
        return esc_pb.ListAccountUsersResponse(users=[convert.account_user(u) for u in users])
