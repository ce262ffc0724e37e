"""Helpers shared by the tests: tokens, clients and common requests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import grpc

from resolutionflow.v1 import escalation_pb2_grpc, handoff_pb2
from resolutionflow.v1 import handoff_pb2_grpc
from server.auth import TokenCodec
from server.domain.types import Role

JWT_SECRET = "test-only-secret-" + "0123456789abcdef" * 3
codec = TokenCodec(JWT_SECRET)


def token(account: str, user: str, role: Role | str, name: str = "", ttl: int = 3600) -> str:
    return codec.issue(account=account, user=user, role=Role(role), name=name, ttl_seconds=ttl)


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
