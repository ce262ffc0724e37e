"""The breach policy: an unpicked escalation past its SLA gets louder, once per step."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from resolutionflow.v1 import (
    escalation_pb2,
    escalation_policy_pb2,
    escalation_policy_pb2_grpc,
    handoff_pb2,
)
from sqlalchemy import select

from clients import AsyncClient
from clients import Client as SyncClient
from server.db.schema import SlaTimerRecord
from server.domain.types import Role
from server.models.sla import RENOTIFY
from server.runtime import ServerRuntime
from tests.processes import ServerProcess
from tests.support import Client, stream_escalations, token, wait_until

pb = handoff_pb2
FAST_SLA = {
    "RF_SLA_NORMAL_SECONDS": "1",
    "RF_SLA_CHECK_SECONDS": "0.1",
    "RF_LOG_POLL_SECONDS": "0.2",
}


def policies(client: Client) -> escalation_policy_pb2_grpc.EscalationPolicyServiceStub:
    return escalation_policy_pb2_grpc.EscalationPolicyServiceStub(client.channel)


async def test_admins_read_and_change_the_policy(channel: grpc.aio.Channel, account: str) -> None:
    admin = Client(channel, token(account, "a", Role.ADMIN), account, "a")
    engineer = Client(channel, token(account, "e", Role.ENGINEER), account, "e")
    stub = policies(admin)
    got: Any = await stub.GetEscalationPolicy(
        escalation_policy_pb2.GetEscalationPolicyRequest(), metadata=admin.metadata
    )
    assert (got.policy.raise_priority, got.policy.renotify_seconds) == (False, 900)
    changed: Any = await stub.UpdateEscalationPolicy(
        escalation_policy_pb2.UpdateEscalationPolicyRequest(
            raise_priority=True, renotify_seconds=0
        ),
        metadata=admin.metadata,
    )
    assert (changed.policy.raise_priority, changed.policy.renotify_seconds) == (True, 0)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await policies(engineer).GetEscalationPolicy(
            escalation_policy_pb2.GetEscalationPolicyRequest(), metadata=engineer.metadata
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.UpdateEscalationPolicy(
            escalation_policy_pb2.UpdateEscalationPolicyRequest(renotify_seconds=10**7),
            metadata=admin.metadata,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_breach_raises_priority_and_renotifies_once_per_step_until_picked_up(
    database_url: str, tmp_path: Path, account: str, server: ServerRuntime
) -> None:
    replicas = [ServerProcess(database_url, tmp_path, **FAST_SLA) for _ in range(2)]
    await asyncio.gather(*(r.start() for r in replicas))
    try:
        async with (
            grpc.aio.insecure_channel(replicas[0].address) as ch_a,
            grpc.aio.insecure_channel(replicas[1].address) as ch_b,
        ):
            admin = Client(ch_a, token(account, "a", Role.ADMIN), account, "a")
            tech = Client(ch_a, token(account, "t", Role.TECHNICIAN), account, "t")
            eng = Client(ch_b, token(account, "e", Role.ENGINEER), account, "e")
            await policies(admin).UpdateEscalationPolicy(
                escalation_policy_pb2.UpdateEscalationPolicyRequest(
                    raise_priority=True, renotify_seconds=1
                ),
                metadata=admin.metadata,
            )
            reader = stream_escalations(eng, after=0)
            late = await tech.create(priority=pb.PRIORITY_NORMAL)

            def breaches() -> list[pb.HandoffEvent]:
                return [e for e in reader.events if e.type == pb.EVENT_TYPE_SLA_BREACHED]

            await reader.wait_for(lambda r: len(breaches()) >= 3, timeout=30)
            await eng.call(
                "escalations",
                "PickUpEscalation",
                escalation_pb2.PickUpEscalationRequest(handoff_id=late.id),
            )

            async def renotify_fired_after_pickup() -> bool:
                async with server.db.read() as s:
                    timer = await s.scalar(
                        select(SlaTimerRecord).where(
                            SlaTimerRecord.handoff_id == late.id, SlaTimerRecord.kind == RENOTIFY
                        )
                    )
                now = datetime.now(UTC)
                return timer is not None and timer.fired_at is not None and timer.due_at < now

            await wait_until(renotify_fired_after_pickup, timeout=20, what="last renotify due")
            marker = await tech.create()
            await reader.wait_for(lambda r: any(e.handoff.id == marker.id for e in r.events))
            reader.cancel()
            history = await eng.call(
                "handoffs", "GetHandoffHistory", pb.GetHandoffHistoryRequest(handoff_id=late.id)
            )
            told = [e.type for e in history.events]
            breached = told.index(pb.EVENT_TYPE_SLA_BREACHED)
            assert told[breached + 1] == pb.EVENT_TYPE_PRIORITY_RAISED
            assert told.count(pb.EVENT_TYPE_PRIORITY_RAISED) == 1

        picked = next(e.sequence for e in reader.events if e.type == pb.EVENT_TYPE_PICKED_UP)
        steps = breaches()
        assert all(e.handoff.id == late.id for e in steps)
        assert all(e.sequence < picked for e in steps), "renotified after the pickup"
        # Raised one step, once (not again on each re-notification): the breach at the
        # priority it happened at, then its own PRIORITY_RAISED event, then HIGH.
        assert [e.handoff.priority for e in steps] == [pb.PRIORITY_NORMAL] + [pb.PRIORITY_HIGH] * (
            len(steps) - 1
        )
        (raised,) = [e for e in reader.events if e.type == pb.EVENT_TYPE_PRIORITY_RAISED]
        assert raised.sequence == steps[0].sequence + 1 and raised.handoff.id == late.id
        assert raised.handoff.priority == pb.PRIORITY_HIGH
        assert raised.note.startswith("raised from NORMAL to HIGH")
        # Each step once across the replicas: a second stays between two of them.
        times = [e.occurred_at.ToDatetime() for e in steps]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert all(gap >= 0.9 for gap in gaps), gaps
        assert reader.sequences == list(range(1, len(reader.sequences) + 1))
    finally:
        await asyncio.gather(*(r.stop() for r in replicas))


async def test_the_python_clients_read_and_change_the_policy(
    server: ServerRuntime, account: str
) -> None:
    target = f"127.0.0.1:{server.port}"
    async with AsyncClient(target, token=token(account, "a", Role.ADMIN)) as admin:
        assert (await admin.get_escalation_policy()).renotify_seconds == 900
        changed = await admin.update_escalation_policy(renotify_seconds=120)
        assert (changed.raise_priority, changed.renotify_seconds) == (False, 120)

    def script() -> bool:
        with SyncClient(target, token=token(account, "a", Role.ADMIN)) as blocking:
            return bool(blocking.update_escalation_policy(raise_priority=True).raise_priority)

    assert await asyncio.to_thread(script)
