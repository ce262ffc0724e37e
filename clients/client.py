"""The async Python client: one method per RPC, typed errors, streams that resume.

``CreateHandoff`` is idempotent by ``request_id``, so ``create_handoff`` retries a
transient failure with the same id without risk of a duplicate; other calls are not
retried. A token provider (called for each call and each reconnect) lets long-lived
clients follow token expiry: on UNAUTHENTICATED the client asks it once more and retries.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from resolutionflow.v1 import escalation_pb2 as esc
from resolutionflow.v1 import (
    escalation_pb2_grpc,
    escalation_policy_pb2_grpc,
    handoff_pb2_grpc,
    webhook_pb2_grpc,
)
from resolutionflow.v1 import escalation_policy_pb2 as ep
from resolutionflow.v1 import handoff_pb2 as pb
from resolutionflow.v1 import webhook_pb2 as wh

from clients.errors import Unavailable, from_rpc_error
from clients.streams import resuming_stream

TokenProvider = Callable[[], str | Awaitable[str]]
R = TypeVar("R", bound=Message)
F = TypeVar("F", bound=Callable[..., Any])


def rpc(name: str) -> Callable[[F], F]:
    """Marks the client method of the RPC ``name``.

    A test holds the clients to the API: every RPC has a method marked with its name
    (the blocking ``Client`` derives its methods from these).
    """

    def mark(method: F) -> F:
        method.__rpc__ = name  # type: ignore[attr-defined]
        return method

    return mark


class AsyncClient:
    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        timeout: float = 10.0,
        keepalive_seconds: float = 30.0,
        create_attempts: int = 3,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if (token is None) == (token_provider is None):
            raise ValueError("give exactly one of token and token_provider")
        options = [
            ("grpc.keepalive_time_ms", int(keepalive_seconds * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=options)
            if credentials
            else grpc.aio.insecure_channel(target, options=options)
        )
        self._handoffs = handoff_pb2_grpc.HandoffServiceStub(self._channel)
        self._escalations = escalation_pb2_grpc.EscalationServiceStub(self._channel)
        self._webhooks = webhook_pb2_grpc.WebhookServiceStub(self._channel)
        self._policies = escalation_policy_pb2_grpc.EscalationPolicyServiceStub(self._channel)
        self._token = token
        self._provider = token_provider
        self.timeout = timeout
        self.create_attempts = create_attempts

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def _metadata(self, refresh: bool = False) -> tuple[tuple[str, str], ...]:
        if self._provider is not None and (refresh or self._token is None):
            value = self._provider()
            self._token = await value if inspect.isawaitable(value) else value
        return (("authorization", f"Bearer {self._token}"),)

    async def _call(self, rpc: Callable[..., Awaitable[R]], request: Message) -> R:
        for attempt in range(2):
            metadata = await self._metadata(refresh=attempt > 0)
            try:
                return await rpc(request, metadata=metadata, timeout=self.timeout)
            except grpc.aio.AioRpcError as e:
                expired = e.code() == grpc.StatusCode.UNAUTHENTICATED
                if expired and attempt == 0 and self._provider is not None:
                    continue
                raise from_rpc_error(e) from None
        raise AssertionError("unreachable")

    # ---- handoffs -----------------------------------------------------------------------

    @rpc("CreateHandoff")
    async def create_handoff(
        self,
        problem_summary: str,
        *,
        session_id: str,
        intent: str = "ESCALATE",
        priority: str = "NORMAL",
        steps_tried: Iterable[tuple[str, str]] = (),
        notes: str = "",
        request_id: str | None = None,
    ) -> pb.Handoff:
        """``intent``: ESCALATE or REASSIGN; ``priority``: LOW, NORMAL, HIGH or URGENT;
        ``steps_tried``: (description, outcome) pairs."""
        request = pb.CreateHandoffRequest(
            request_id=request_id or str(uuid.uuid4()),
            session_id=session_id,
            intent=f"HANDOFF_INTENT_{intent.upper()}",
            priority=f"PRIORITY_{priority.upper()}",
            problem_summary=problem_summary,
            steps_tried=[pb.Step(description=d, outcome=o) for d, o in steps_tried],
            notes=notes,
        )
        for attempt in range(1, self.create_attempts + 1):
            try:
                return (await self._call(self._handoffs.CreateHandoff, request)).handoff
            except Unavailable:
                if attempt == self.create_attempts:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)  # same request_id: no duplicate
        raise AssertionError("unreachable")

    @rpc("GetHandoff")
    async def get_handoff(self, handoff_id: str) -> pb.Handoff:
        request = pb.GetHandoffRequest(handoff_id=handoff_id)
        return (await self._call(self._handoffs.GetHandoff, request)).handoff

    @rpc("ListHandoffs")
    async def list_handoffs(
        self,
        *,
        status: str | None = None,
        intent: str | None = None,
        priority: str | None = None,
        page_size: int = 50,
    ) -> AsyncIterator[pb.Handoff]:
        """Every matching handoff, newest first, following page tokens."""
        request = pb.ListHandoffsRequest(
            status=f"HANDOFF_STATUS_{status.upper()}" if status else None,
            intent=f"HANDOFF_INTENT_{intent.upper()}" if intent else None,
            priority=f"PRIORITY_{priority.upper()}" if priority else None,
            page_size=page_size,
        )
        while True:
            page = await self._call(self._handoffs.ListHandoffs, request)
            for handoff in page.handoffs:
                yield handoff
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    @rpc("CancelHandoff")
    async def cancel_handoff(self, handoff_id: str) -> pb.Handoff:
        request = pb.CancelHandoffRequest(handoff_id=handoff_id)
        return (await self._call(self._handoffs.CancelHandoff, request)).handoff

    # ---- escalations --------------------------------------------------------------------

    @rpc("ListEscalations")
    async def list_escalations(self) -> esc.ListEscalationsResponse:
        """The open queue (``.escalations``) and the cursor it was read at (``.sequence``).

        A queue over one response (1 MiB) comes in pages; they are joined here. Pages after
        the first are read when asked for, so a handoff that changed in between may show
        its newer state: streaming with ``after=.sequence`` brings every change after the
        cursor, which, applied by handoff id, gives the exact queue.
        """
        request = esc.ListEscalationsRequest()
        whole = await self._call(self._escalations.ListEscalations, request)
        seen = {h.id for h in whole.escalations}
        while whole.next_page_token:
            request.page_token = whole.next_page_token
            page = await self._call(self._escalations.ListEscalations, request)
            whole.escalations.extend(h for h in page.escalations if h.id not in seen)
            seen.update(h.id for h in page.escalations)
            whole.next_page_token = page.next_page_token
        return whole

    @rpc("PickUpEscalation")
    async def pick_up(self, handoff_id: str) -> esc.HandoffContext:
        """Raises ``AlreadyPickedUp`` (with the holder) when someone else was faster; an
        escalation the caller already holds answers with its context again."""
        request = esc.PickUpEscalationRequest(handoff_id=handoff_id)
        return (await self._call(self._escalations.PickUpEscalation, request)).context

    @rpc("GetHandoffContext")
    async def get_context(self, handoff_id: str) -> esc.HandoffContext:
        request = esc.GetHandoffContextRequest(handoff_id=handoff_id)
        return (await self._call(self._escalations.GetHandoffContext, request)).context

    @rpc("ReleaseEscalation")
    async def release(self, handoff_id: str) -> pb.Handoff:
        request = esc.ReleaseEscalationRequest(handoff_id=handoff_id)
        return (await self._call(self._escalations.ReleaseEscalation, request)).handoff

    @rpc("ResolveEscalation")
    async def resolve(self, handoff_id: str, resolution_note: str) -> pb.Handoff:
        """The note is required: what fixed it, for the next technician."""
        request = esc.ResolveEscalationRequest(
            handoff_id=handoff_id, resolution_note=resolution_note
        )
        return (await self._call(self._escalations.ResolveEscalation, request)).handoff

    @rpc("GetEscalationMetrics")
    async def metrics(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> esc.EscalationMetrics:
        request = esc.GetEscalationMetricsRequest(
            start_time=_timestamp(start), end_time=_timestamp(end)
        )
        return (await self._call(self._escalations.GetEscalationMetrics, request)).metrics

    # ---- working together ---------------------------------------------------------------

    @rpc("TransferEscalation")
    async def transfer(self, handoff_id: str, to_user_id: str, note: str = "") -> pb.Handoff:
        """Hand an escalation you hold (or, as an admin, any) to another engineer or admin
        of the account; ``list_account_users`` names the candidates."""
        request = esc.TransferEscalationRequest(
            handoff_id=handoff_id, to_user_id=to_user_id, note=note
        )
        return (await self._call(self._escalations.TransferEscalation, request)).handoff

    @rpc("ListAccountUsers")
    async def list_account_users(self) -> list[esc.AccountUser]:
        request = esc.ListAccountUsersRequest()
        return list((await self._call(self._escalations.ListAccountUsers, request)).users)

    @rpc("AddComment")
    async def add_comment(self, handoff_id: str, body: str, request_id: str = "") -> pb.Comment:
        """A comment with a ``request_id`` (a fresh one per call when not given) is added
        once however often the call is retried."""
        request = pb.AddCommentRequest(
            handoff_id=handoff_id, body=body, request_id=request_id or str(uuid.uuid4())
        )
        return (await self._call(self._handoffs.AddComment, request)).comment

    @rpc("ReopenHandoff")
    async def reopen(self, handoff_id: str, reason: str) -> pb.Handoff:
        request = pb.ReopenHandoffRequest(handoff_id=handoff_id, reason=reason)
        return (await self._call(self._handoffs.ReopenHandoff, request)).handoff

    @rpc("GetHandoffHistory")
    async def history(self, handoff_id: str) -> list[pb.HandoffEvent]:
        """Every event of the handoff, oldest first (pages joined)."""
        request = pb.GetHandoffHistoryRequest(handoff_id=handoff_id)
        events: list[pb.HandoffEvent] = []
        while True:
            page = await self._call(self._handoffs.GetHandoffHistory, request)
            events.extend(page.events)
            if not page.next_page_token:
                return events
            request.page_token = page.next_page_token

    @rpc("GetPresence")
    async def presence(self) -> pb.GetPresenceResponse:
        """How many engineers watch the queue now (and, for engineers and admins, who)."""
        return await self._call(self._handoffs.GetPresence, pb.GetPresenceRequest())

    @rpc("ReportPresence")
    async def report_presence(
        self, reporter_id: str, tokens_by_account: Mapping[str, Sequence[str]]
    ) -> pb.ReportPresenceResponse:
        """For an edge serving the queue from shared streams: the tokens of the browsers
        it serves now, by account (an account listed empty: nobody there any more)."""
        request = pb.ReportPresenceRequest(
            reporter_id=reporter_id,
            accounts=[
                pb.PresenceGroup(account_id=account, tokens=list(tokens))
                for account, tokens in tokens_by_account.items()
            ],
        )
        return await self._call(self._handoffs.ReportPresence, request)

    # ---- webhooks (admins) ---------------------------------------------------------------

    @rpc("CreateWebhookEndpoint")
    async def create_webhook_endpoint(
        self,
        url: str,
        *,
        event_types: Iterable[str] = (),
        description: str = "",
        format: str = "STANDARD",
    ) -> wh.CreateWebhookEndpointResponse:
        """``.endpoint`` and ``.secret`` (``whsec_...``, shown only here: store it).
        ``event_types`` such as ``escalation.created`` (none: every type); ``format``:
        STANDARD or SLACK."""
        request = wh.CreateWebhookEndpointRequest(
            url=url,
            event_types=list(event_types),
            description=description,
            format=f"WEBHOOK_FORMAT_{format.upper()}",
        )
        return await self._call(self._webhooks.CreateWebhookEndpoint, request)

    @rpc("ListWebhookEndpoints")
    async def list_webhook_endpoints(self) -> list[wh.WebhookEndpoint]:
        request = wh.ListWebhookEndpointsRequest()
        return list((await self._call(self._webhooks.ListWebhookEndpoints, request)).endpoints)

    @rpc("UpdateWebhookEndpoint")
    async def update_webhook_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: Iterable[str] | None = None,
        description: str | None = None,
        format: str | None = None,
        enabled: bool | None = None,
    ) -> wh.WebhookEndpoint:
        """Changes what is given; ``enabled=True`` also clears a failing state."""
        request = wh.UpdateWebhookEndpointRequest(
            endpoint_id=endpoint_id,
            url=url,
            description=description,
            enabled=enabled,
            format=f"WEBHOOK_FORMAT_{format.upper()}" if format else None,
        )
        if event_types is not None:
            request.event_types.extend(event_types)
            request.update_event_types = True
        return (await self._call(self._webhooks.UpdateWebhookEndpoint, request)).endpoint

    @rpc("DeleteWebhookEndpoint")
    async def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        request = wh.DeleteWebhookEndpointRequest(endpoint_id=endpoint_id)
        await self._call(self._webhooks.DeleteWebhookEndpoint, request)

    @rpc("RotateWebhookSecret")
    async def rotate_webhook_secret(self, endpoint_id: str) -> str:
        """The new secret (shown only here); the old one stops signing at once."""
        request = wh.RotateWebhookSecretRequest(endpoint_id=endpoint_id)
        return (await self._call(self._webhooks.RotateWebhookSecret, request)).secret

    @rpc("ListWebhookDeliveries")
    async def list_webhook_deliveries(
        self, endpoint_id: str, *, status: str | None = None, page_size: int = 100
    ) -> list[wh.WebhookDelivery]:
        """Newest first; ``status``: PENDING, SUCCEEDED or FAILED."""
        request = wh.ListWebhookDeliveriesRequest(
            endpoint_id=endpoint_id,
            status=f"WEBHOOK_DELIVERY_STATUS_{status.upper()}" if status else None,
            page_size=page_size,
        )
        return list((await self._call(self._webhooks.ListWebhookDeliveries, request)).deliveries)

    @rpc("RedeliverWebhook")
    async def redeliver_webhook(self, endpoint_id: str, delivery_id: str) -> wh.WebhookDelivery:
        request = wh.RedeliverWebhookRequest(endpoint_id=endpoint_id, delivery_id=delivery_id)
        return (await self._call(self._webhooks.RedeliverWebhook, request)).delivery

    @rpc("GetEscalationPolicy")
    async def get_escalation_policy(self) -> ep.EscalationPolicy:
        """What a breach of an unpicked escalation sets off in the account (admins)."""
        request = ep.GetEscalationPolicyRequest()
        return (await self._call(self._policies.GetEscalationPolicy, request)).policy

    @rpc("UpdateEscalationPolicy")
    async def update_escalation_policy(
        self, *, raise_priority: bool | None = None, renotify_seconds: int | None = None
    ) -> ep.EscalationPolicy:
        """Changes what is given; ``renotify_seconds=0`` stops re-notifications."""
        request = ep.UpdateEscalationPolicyRequest(
            raise_priority=raise_priority, renotify_seconds=renotify_seconds
        )
        return (await self._call(self._policies.UpdateEscalationPolicy, request)).policy

    # ---- streams ------------------------------------------------------------------------

    @rpc("StreamEscalations")
    def stream_escalations(
        self,
        after: int | None = None,
        *,
        max_backoff: float = 10.0,
        priorities: Sequence[pb.Priority] = (),
        held_by_me: bool = False,
    ) -> AsyncIterator[pb.HandoffEvent]:
        """The live queue, forever: SNAPSHOT (or replay after ``after``), then events.

        Reconnects with backoff and jitter, resumes after the last event yielded and never
        yields one twice. RESET events (cursor too old or ahead) are passed on: rebuild from
        their ``snapshot``. Heartbeats are passed on too (their sequence is a safe cursor).
        """

        def request() -> esc.StreamEscalationsRequest:
            return esc.StreamEscalationsRequest(priorities=priorities, held_by_me=held_by_me)

        return self._stream(self._escalations.StreamEscalations, request, after, max_backoff)

    @rpc("WatchHandoffs")
    def watch_handoffs(
        self, after: int | None = None, *, max_backoff: float = 10.0
    ) -> AsyncIterator[pb.HandoffEvent]:
        """The account's handoffs of every intent (a technician's own), like the queue."""
        return self._stream(
            self._handoffs.WatchHandoffs, pb.WatchHandoffsRequest, after, max_backoff
        )

    async def _stream(
        self,
        method: Callable[..., Any],
        request_type: Callable[[], Any],
        after: int | None,
        max_backoff: float,
    ) -> AsyncIterator[pb.HandoffEvent]:
        async def open_stream(cursor: int | None) -> AsyncIterator[pb.HandoffEvent]:
            request = request_type()
            if cursor is not None:
                request.after_sequence = cursor
            async for event in method(request, metadata=await self._metadata()):
                yield event

        async def renew_token() -> None:
            await self._metadata(refresh=True)

        try:
            async for event in resuming_stream(
                open_stream,
                after,
                max_backoff=max_backoff,
                renew_token=renew_token if self._provider is not None else None,
            ):
                yield event
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


__all__: Sequence[str] = ["AsyncClient", "TokenProvider", "rpc"]
