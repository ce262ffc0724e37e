"""A blocking client for scripts and synchronous services: the async client on its own
event loop, method for method."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from resolutionflow.v1 import escalation_pb2 as esc
from resolutionflow.v1 import handoff_pb2 as pb

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

    def transfer(self, handoff_id: str, to_user_id: str, note: str = "") -> pb.Handoff:
        return self._run(self._client.transfer(handoff_id, to_user_id, note))

    def list_account_users(self) -> list[esc.AccountUser]:
        return self._run(self._client.list_account_users())

    def add_comment(self, handoff_id: str, body: str, request_id: str = "") -> pb.Comment:
        return self._run(self._client.add_comment(handoff_id, body, request_id))

    def reopen(self, handoff_id: str, reason: str) -> pb.Handoff:
        return self._run(self._client.reopen(handoff_id, reason))

    def history(self, handoff_id: str) -> list[pb.HandoffEvent]:
        return self._run(self._client.history(handoff_id))

    def presence(self) -> pb.GetPresenceResponse:
        return self._run(self._client.presence())

    def stream_escalations(
        self, after: int | None = None, **filters: Any
    ) -> Iterator[pb.HandoffEvent]:
        return self._iterate(self._client.stream_escalations(after, **filters))

    def watch_handoffs(self, after: int | None = None) -> Iterator[pb.HandoffEvent]:
        return self._iterate(self._client.watch_handoffs(after))
