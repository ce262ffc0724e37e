"""Helpers shared by the tests: tokens, clients, common requests, expected failures, ports.

One home for what several test modules need, so a change of shape (a status check, a
port) is one edit here rather than a copy per module drifting apart.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import httpx
import pytest
from resolutionflow.v1 import escalation_pb2, escalation_pb2_grpc, handoff_pb2, handoff_pb2_grpc

from server.auth import TokenCodec
from server.domain.types import Role

T = TypeVar("T")

JWT_SECRET = "test-only-secret-" + "0123456789abcdef" * 3
codec = TokenCodec(JWT_SECRET)


def token(account: str, user: str, role: Role | str, name: str = "", ttl: int = 3600) -> str:
    return codec.issue(account=account, user=user, role=Role(role), name=name, ttl_seconds=ttl)


# httpx builds a TLS context (loading the CA bundle, about 30 ms of CPU) for every client
# it makes; the tests' clients speak plain HTTP to loopback, so the per-test ones share one.
TLS = httpx.create_ssl_context()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a process that must be told its port up front.

    Where the listener is ours (uvicorn, grpc.aio), bind port 0 and read the port back
    instead: nothing can take it in between.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def within(seconds: float, awaitable: Awaitable[T], what: str) -> T:
    """Await with a deadline that is part of the behaviour under test (not a hang guard):
    past it, the test fails saying what was late, rather than timing the call afterwards."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {seconds:g} s") from None


async def fails(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Await a call that must fail with ``code``; the error, for further checks."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value


@dataclass
class Client:
    """Stubs on a real channel, with one user's token attached to every call."""

    channel: grpc.aio.Channel
    token: str
    account: str
    user: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    @property
    def handoffs(self) -> handoff_pb2_grpc.HandoffServiceStub:
        return handoff_pb2_grpc.HandoffServiceStub(self.channel)

    @property
    def escalations(self) -> escalation_pb2_grpc.EscalationServiceStub:
        return escalation_pb2_grpc.EscalationServiceStub(self.channel)

    async def create(self, **fields: Any) -> handoff_pb2.Handoff:
        response = await self.handoffs.CreateHandoff(
            create_request(**fields), metadata=self.metadata, timeout=30
        )
        return response.handoff

    async def call(self, service: str, rpc: str, request: Any) -> Any:
        stub = getattr(self, service)
        return await getattr(stub, rpc)(request, metadata=self.metadata, timeout=30)


def create_request(**fields: Any) -> handoff_pb2.CreateHandoffRequest:
    values: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "session_id": "session-1",
        "intent": handoff_pb2.HANDOFF_INTENT_ESCALATE,
        "priority": handoff_pb2.PRIORITY_NORMAL,
        "problem_summary": "Customer's laptop cannot reach the VPN",
        "steps_tried": [
            handoff_pb2.Step(description="Restarted the VPN client", outcome="failed"),
        ],
        "notes": "",
    }
    values.update(fields)
    return handoff_pb2.CreateHandoffRequest(**values)


class StreamReader:
    """Consumes a server stream in the background, keeping every message in order."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.messages: list[handoff_pb2.HandoffEvent] = []
        self.error: grpc.aio.AioRpcError | None = None
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for message in self.call:
                self.messages.append(message)
                self._changed.set()
        except grpc.aio.AioRpcError as e:
            self.error = e
        except asyncio.CancelledError:
            # Our own cancel() ends the call this way; anything else is a real cancellation.
            if not self.call.cancelled():
                raise
        finally:
            self._changed.set()

    @property
    def events(self) -> list[handoff_pb2.HandoffEvent]:
        """Everything but heartbeats."""
        return [m for m in self.messages if m.type != handoff_pb2.EVENT_TYPE_HEARTBEAT]

    @property
    def sequences(self) -> list[int]:
        return [
            m.sequence
            for m in self.events
            if m.type not in (handoff_pb2.EVENT_TYPE_SNAPSHOT, handoff_pb2.EVENT_TYPE_RESET)
        ]

    async def wait_for(
        self, predicate: Callable[[StreamReader], bool], timeout: float = 15
    ) -> None:
        async def until() -> None:
            while not predicate(self):
                if self.task.done():
                    raise AssertionError(f"stream ended early: {self.error}")
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def wait_done(self, timeout: float = 15) -> None:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)

    def cancel(self) -> None:
        self.call.cancel()


def stream_escalations(client: Client, after: int | None = None) -> StreamReader:
    request = escalation_pb2.StreamEscalationsRequest()
    if after is not None:
        request.after_sequence = after
    return StreamReader(client.escalations.StreamEscalations(request, metadata=client.metadata))


def watch_handoffs(client: Client, after: int | None = None) -> StreamReader:
    request = handoff_pb2.WatchHandoffsRequest()
    if after is not None:
        request.after_sequence = after
    return StreamReader(client.handoffs.WatchHandoffs(request, metadata=client.metadata))


async def wait_until(predicate: Callable[[], Any], timeout: float = 15, what: str = "") -> None:
    """Poll a condition that has no event to wait on, up to a deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await _value(predicate()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


async def _value(v: Any) -> Any:
    return await v if asyncio.iscoroutine(v) else v


async def settled(client: Client, *handoff_ids: str, timeout: float = 15) -> None:
    """Wait until the background assessment of each handoff has been recorded."""

    async def done() -> bool:
        for handoff_id in handoff_ids:
            reply = await client.handoffs.GetHandoff(
                handoff_pb2.GetHandoffRequest(handoff_id=handoff_id),
                metadata=client.metadata,
                timeout=10,
            )
            if reply.handoff.assessment.status == handoff_pb2.ASSESSMENT_STATUS_PENDING:
                return False
        return True

    await wait_until(done, timeout=timeout, what="assessments recorded")


def of_type(reader: StreamReader, *types: int) -> list[handoff_pb2.HandoffEvent]:
    return [e for e in reader.events if e.type in types]
