"""A blocking client for scripts and synchronous services: the async client on its own
event loop, method for method."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from resolutionflow.v1 import escalation_pb2 as esc
from resolutionflow.v1 import handoff_pb2 as pb
from resolutionflow.v1 import webhook_pb2 as wh

from clients.client import AsyncClient

T = TypeVar("T")


class Client:
    """Same arguments and methods as ``AsyncClient``; streams are plain iterators."""

    def __init__(self, target: str, **options: Any) -> None:
        self._runner = asyncio.Runner()

        async def build() -> AsyncClient:
            # The channel belongs to the loop it is created on: create it on ours.
            return AsyncClient(target, **options)

        self._client = self._runner.run(build())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()

    def _run(self, coroutine: Awaitable[T]) -> T:
        return self._runner.run(coroutine)  # type: ignore[arg-type]

    def _iterate(self, events: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._run(events.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(events.aclose())  # type: ignore[attr-defined]

    def create_handoff(self, problem_summary: str, **fields: Any) -> pb.Handoff:
        return self._run(self._client.create_handoff(problem_summary, **fields))

    def get_handoff(self, handoff_id: str) -> pb.Handoff:
        return self._run(self._client.get_handoff(handoff_id))

    def list_handoffs(self, **filters: Any) -> Iterator[pb.Handoff]:
        return self._iterate(self._client.list_handoffs(**filters))

    def cancel_handoff(self, handoff_id: str) -> pb.Handoff:
        return self._run(self._client.cancel_handoff(handoff_id))

    def list_escalations(self) -> esc.ListEscalationsResponse:
        return self._run(self._client.list_escalations())

    def pick_up(self, handoff_id: str) -> esc.HandoffContext:
        return self._run(self._client.pick_up(handoff_id))

    def get_context(self, handoff_id: str) -> esc.HandoffContext:
        return self._run(self._client.get_context(handoff_id))

    def release(self, handoff_id: str) -> pb.Handoff:
        return self._run(self._client.release(handoff_id))

    def resolve(self, handoff_id: str, resolution_note: str) -> pb.Handoff:
        return self._run(self._client.resolve(handoff_id, resolution_note))

    def metrics(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> esc.EscalationMetrics:
        return self._run(self._client.metrics(start, end))

    def create_webhook_endpoint(self, url: str, **fields: Any) -> wh.CreateWebhookEndpointResponse:
        return self._run(self._client.create_webhook_endpoint(url, **fields))

    def list_webhook_endpoints(self) -> list[wh.WebhookEndpoint]:
        return self._run(self._client.list_webhook_endpoints())

    def update_webhook_endpoint(self, endpoint_id: str, **fields: Any) -> wh.WebhookEndpoint:
        return self._run(self._client.update_webhook_endpoint(endpoint_id, **fields))

    def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        self._run(self._client.delete_webhook_endpoint(endpoint_id))

    def rotate_webhook_secret(self, endpoint_id: str) -> str:
        return self._run(self._client.rotate_webhook_secret(endpoint_id))

    def list_webhook_deliveries(self, endpoint_id: str, **filters: Any) -> list[wh.WebhookDelivery]:
        return self._run(self._client.list_webhook_deliveries(endpoint_id, **filters))

    def redeliver_webhook(self, endpoint_id: str, delivery_id: str) -> wh.WebhookDelivery:
        return self._run(self._client.redeliver_webhook(endpoint_id, delivery_id))

    def stream_escalations(self, after: int | None = None) -> Iterator[pb.HandoffEvent]:
        return self._iterate(self._client.stream_escalations(after))

    def watch_handoffs(self, after: int | None = None) -> Iterator[pb.HandoffEvent]:
        return self._iterate(self._client.watch_handoffs(after))
