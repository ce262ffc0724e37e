"""Reaching people who are not looking: admins manage their account's webhook endpoints
and deliveries (WebhookService) and its breach policy (EscalationPolicyService)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import grpc
from resolutionflow.v1 import escalation_policy_pb2 as policy_pb
from resolutionflow.v1 import escalation_policy_pb2_grpc as policy_grpc
from resolutionflow.v1 import webhook_pb2 as pb
from resolutionflow.v1 import webhook_pb2_grpc as pb_grpc

from server.api import convert
from server.api.interceptors import current_caller
from server.db.database import Database
from server.db.schema import (
    EscalationPolicyRecord,
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
)
from server.errors import FieldViolation, InvalidArgument
from server.models import sla
from server.webhooks import store
from server.webhooks.safety import Policy, Refused

FORMAT_FROM = {pb.WEBHOOK_FORMAT_STANDARD: store.STANDARD, pb.WEBHOOK_FORMAT_SLACK: store.SLACK}
FORMAT_TO = {v: k for k, v in FORMAT_FROM.items()}
STATUS_FROM = {
    pb.WEBHOOK_DELIVERY_STATUS_PENDING: store.PENDING,
    pb.WEBHOOK_DELIVERY_STATUS_SUCCEEDED: store.SUCCEEDED,
    pb.WEBHOOK_DELIVERY_STATUS_FAILED: store.FAILED,
}
STATUS_TO = {v: k for k, v in STATUS_FROM.items()}


def endpoint_message(r: WebhookEndpointRecord) -> pb.WebhookEndpoint:
    if not r.enabled:
        state = pb.WEBHOOK_ENDPOINT_STATE_DISABLED
    elif r.failing:
        state = pb.WEBHOOK_ENDPOINT_STATE_FAILING
    else:
        state = pb.WEBHOOK_ENDPOINT_STATE_ACTIVE
    return pb.WebhookEndpoint(
        id=r.id,
        url=r.url,
        event_types=r.event_types,
        description=r.description,
        format=FORMAT_TO[r.format],
        enabled=r.enabled,
        state=state,
        created_at=convert.timestamp(r.created_at),
        cursor_sequence=r.cursor_sequence,
    )


def delivery_message(r: WebhookDeliveryRecord) -> pb.WebhookDelivery:
    return pb.WebhookDelivery(
        id=r.id,
        endpoint_id=r.endpoint_id,
        sequence=r.sequence,
        event_type=r.event_type,
        status=STATUS_TO[r.status],
        attempts=r.attempts,
        last_response_code=r.last_response_code or 0,
        last_latency_ms=r.last_latency_ms or 0,
        last_error=r.last_error,
        next_attempt_at=convert.timestamp(r.next_attempt_at),
        created_at=convert.timestamp(r.created_at),
        delivered_at=convert.timestamp(r.delivered_at),
    )


def _id(value: str, field: str) -> str:
    if not value or len(value) > 64:
        raise InvalidArgument([FieldViolation(field, "required, at most 64 characters")])
    return value


class WebhookService(pb_grpc.WebhookServiceServicer):
    def __init__(self, db: Database, policy: Policy, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.policy = policy
        self.clock = clock

    def _url(self, url: str) -> str:
        """Checked when saved (scheme, IP literals) and again on every attempt (the
        addresses the name resolves to then)."""
        if store.has_control(url):
            raise InvalidArgument([FieldViolation("url", "must not contain control characters")])
        try:
            self.policy.check_url(url)
        except Refused as e:
            raise InvalidArgument([FieldViolation("url", str(e))]) from None
        return url

    def _format(self, value: int, default: str | None) -> str | None:
        if value == 0:
            return default
        if value not in FORMAT_FROM:
            raise InvalidArgument([FieldViolation("format", f"unknown value {value}")])
        return FORMAT_FROM[value]

    async def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateWebhookEndpointResponse:
        url = self._url(request.url)
        event_types = store.validate_event_types(list(request.event_types))
        description = store.validate_description(request.description)
        fmt = self._format(request.format, store.STANDARD)
        assert fmt is not None
        async with self.db.write() as s:
            record, secret = await store.create_endpoint(
                s,
                current_caller().account_id,
                url=url,
                event_types=event_types,
                description=description,
                format=fmt,
                now=self.clock(),
            )
        return pb.CreateWebhookEndpointResponse(endpoint=endpoint_message(record), secret=secret)

    async def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWebhookEndpointsResponse:
        async with self.db.read() as s:
            records = await store.list_endpoints(s, current_caller().account_id)
        return pb.ListWebhookEndpointsResponse(endpoints=[endpoint_message(r) for r in records])

    async def UpdateWebhookEndpoint(
        self, request: pb.UpdateWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateWebhookEndpointResponse:
        endpoint_id = _id(request.endpoint_id, "endpoint_id")
        url = self._url(request.url) if request.HasField("url") else None
        types = (
            store.validate_event_types(list(request.event_types))
            if request.update_event_types
            else None
        )
        description = (
            store.validate_description(request.description)
            if request.HasField("description")
            else None
        )
        fmt = self._format(request.format, None)
        async with self.db.write() as s:
            record = await store.get_endpoint(s, current_caller().account_id, endpoint_id)
            if url is not None:
                record.url = url
            if types is not None:
                record.event_types = types
            if description is not None:
                record.description = description
            if fmt is not None:
                record.format = fmt
            if request.HasField("enabled"):
                record.enabled = request.enabled
                if request.enabled:
                    record.failing = False
            record.updated_at = self.clock()
            await s.flush()
        return pb.UpdateWebhookEndpointResponse(endpoint=endpoint_message(record))

    async def DeleteWebhookEndpoint(
        self, request: pb.DeleteWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteWebhookEndpointResponse:
        endpoint_id = _id(request.endpoint_id, "endpoint_id")
        async with self.db.write() as s:
            await store.delete_endpoint(s, current_caller().account_id, endpoint_id)
        return pb.DeleteWebhookEndpointResponse()

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateWebhookSecretResponse:
        endpoint_id = _id(request.endpoint_id, "endpoint_id")
        async with self.db.write() as s:
            record = await store.get_endpoint(s, current_caller().account_id, endpoint_id)
            record.secret = store.new_secret()
            record.updated_at = self.clock()
            secret = record.secret
        return pb.RotateWebhookSecretResponse(secret=secret)

    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWebhookDeliveriesResponse:
        endpoint_id = _id(request.endpoint_id, "endpoint_id")
        if request.status and request.status not in STATUS_FROM:
            raise InvalidArgument([FieldViolation("status", f"unknown value {request.status}")])
        if not 0 <= request.page_size <= 500:
            raise InvalidArgument([FieldViolation("page_size", "between 1 and 500")])
        async with self.db.read() as s:
            records = await store.list_deliveries(
                s,
                current_caller().account_id,
                endpoint_id,
                STATUS_FROM.get(request.status),
                request.page_size or 100,
            )
        return pb.ListWebhookDeliveriesResponse(deliveries=[delivery_message(r) for r in records])

    async def RedeliverWebhook(
        self, request: pb.RedeliverWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedeliverWebhookResponse:
        endpoint_id = _id(request.endpoint_id, "endpoint_id")
        delivery_id = _id(request.delivery_id, "delivery_id")
        async with self.db.write() as s:
            record = await store.redeliver(
                s, current_caller().account_id, endpoint_id, delivery_id, self.clock()
            )
        return pb.RedeliverWebhookResponse(delivery=delivery_message(record))


MAX_RENOTIFY_SECONDS = 7 * 24 * 3600


class EscalationPolicyService(policy_grpc.EscalationPolicyServiceServicer):
    """Admins set what a breach of an unpicked escalation sets off in their account."""

    def __init__(
        self, db: Database, default: sla.BreachPolicy, clock: Callable[[], datetime]
    ) -> None:
        self.db = db
        self.default = default
        self.clock = clock

    async def GetEscalationPolicy(
        self, request: policy_pb.GetEscalationPolicyRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.GetEscalationPolicyResponse:
        async with self.db.read() as s:
            policy = await sla.policy_of(s, current_caller().account_id, self.default)
        return policy_pb.GetEscalationPolicyResponse(policy=_policy(policy))

    async def UpdateEscalationPolicy(
        self, request: policy_pb.UpdateEscalationPolicyRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.UpdateEscalationPolicyResponse:
        if request.HasField("renotify_seconds") and request.renotify_seconds > MAX_RENOTIFY_SECONDS:
            raise InvalidArgument(
                [FieldViolation("renotify_seconds", f"0 (never) to {MAX_RENOTIFY_SECONDS}")]
            )
        account = current_caller().account_id
        async with self.db.write() as s:
            current = await sla.policy_of(s, account, self.default)
            row = await s.get(EscalationPolicyRecord, account)
            if row is None:
                row = EscalationPolicyRecord(account_id=account)
                s.add(row)
            row.raise_priority = (
                request.raise_priority
                if request.HasField("raise_priority")
                else current.raise_priority
            )
            row.renotify_seconds = (
                request.renotify_seconds
                if request.HasField("renotify_seconds")
                else current.renotify_seconds
            )
            row.updated_at = self.clock()
            policy = sla.BreachPolicy(row.raise_priority, row.renotify_seconds)
        return policy_pb.UpdateEscalationPolicyResponse(policy=_policy(policy))


def _policy(policy: sla.BreachPolicy) -> policy_pb.EscalationPolicy:
    return policy_pb.EscalationPolicy(
        raise_priority=policy.raise_priority, renotify_seconds=policy.renotify_seconds
    )
