"""GetEscalationMetrics on a fixed data set whose figures are worked out by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from resolutionflow.v1 import escalation_pb2, handoff_pb2

from server.domain.types import Role
from server.runtime import ServerRuntime
from server.settings import Settings
from tests.support import Client, token

pb = handoff_pb2
esc = escalation_pb2

# In the future, so no real-time SLA clock of another server in this database touches it.
DAY0 = (datetime.now(UTC) + timedelta(days=30)).replace(hour=10, minute=0, second=0, microsecond=0)
DAY1 = DAY0 + timedelta(days=1)


class Clock:
    def __init__(self) -> None:
        self.now = DAY0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def clocked(own_settings: Settings) -> AsyncIterator[tuple[ServerRuntime, Clock]]:
    # This server's own SLA clock never ticks by itself; the test fires it at chosen times.
    # On a database of its own: firing the timers due weeks ahead would otherwise fire
    # every open handoff's that other tests left in the session's database.
    runtime = ServerRuntime(own_settings.model_copy(update={"sla_check_seconds": 3600}))
    clock = Clock()
    runtime.core.clock = clock
    await runtime.start()
    yield runtime, clock
    await runtime.stop(0)


def ts(value: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(value)
    return t


async def test_metrics_on_a_known_data_set(
    clocked: tuple[ServerRuntime, Clock], account: str
) -> None:
    runtime, clock = clocked
    async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
        tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
        eng1 = Client(ch, token(account, "e1", Role.ENGINEER), account, "e1")
        eng2 = Client(ch, token(account, "e2", Role.ENGINEER), account, "e2")
        stranger = Client(ch, token("x" + account, "t", Role.TECHNICIAN), "x" + account, "t")

        async def at(moment: datetime, coro_factory):
            clock.now = moment
            return await coro_factory()

        def create(priority: int, intent: int = pb.HANDOFF_INTENT_ESCALATE):
            return lambda: tech.create(priority=priority, intent=intent)

        def act(client: Client, rpc: str, handoff_id: str):
            request = getattr(esc, f"{rpc}Request")(handoff_id=handoff_id)
            if rpc == "ResolveEscalation":
                request.resolution_note = "fixed"
            return lambda: client.call("escalations", rpc, request)

        s = timedelta(seconds=1)
        u1 = await at(DAY0, create(pb.PRIORITY_URGENT))
        await at(DAY0 + 60 * s, act(eng1, "PickUpEscalation", u1.id))
        await at(DAY0 + 600 * s, act(eng1, "ResolveEscalation", u1.id))
        u2 = await at(DAY0 + 100 * s, create(pb.PRIORITY_URGENT))
        await at(DAY0 + 220 * s, act(eng1, "PickUpEscalation", u2.id))
        await at(DAY0 + 300 * s, act(eng1, "ReleaseEscalation", u2.id))
        await at(DAY0 + 400 * s, act(eng2, "PickUpEscalation", u2.id))  # first pickup counts
        h3 = await at(DAY0 + 200 * s, create(pb.PRIORITY_HIGH))
        await at(DAY0 + 500 * s, act(eng2, "PickUpEscalation", h3.id))
        await at(DAY0 + 1400 * s, act(eng2, "ResolveEscalation", h3.id))
        n4 = await at(DAY1, create(pb.PRIORITY_NORMAL))
        await at(DAY1 + 30 * s, act(eng1, "PickUpEscalation", n4.id))
        await at(DAY1 + 50 * s, create(pb.PRIORITY_NORMAL))  # never picked up
        low = await at(DAY1 + 80 * s, create(pb.PRIORITY_LOW))
        clock.now = DAY1 + 90 * s
        await tech.call("handoffs", "CancelHandoff", pb.CancelHandoffRequest(handoff_id=low.id))
        await at(DAY1 + 100 * s, create(pb.PRIORITY_URGENT, pb.HANDOFF_INTENT_REASSIGN))
        await at(DAY1 + 110 * s, lambda: stranger.create(priority=pb.PRIORITY_URGENT))
        # NORMAL's target is 3600 s: only n5 is still open when its timers come due.
        clock.now = DAY1 + 3700 * s
        await runtime.fire_due_sla_timers()

        clock.now = DAY1 + 7200 * s
        reply = await eng1.call(
            "escalations",
            "GetEscalationMetrics",
            esc.GetEscalationMetricsRequest(start_time=ts(DAY0), end_time=ts(DAY1 + 86399 * s)),
        )
    m = reply.metrics
    assert (m.created, m.picked_up, m.resolved, m.cancelled) == (6, 4, 2, 1)
    assert (m.open_now, m.sla_breached) == (1, 1)
    assert m.oldest_waiting_seconds == pytest.approx(7150, abs=0.01)
    # Pickup waits 60, 120, 300, 30 -> sorted 30 60 120 300: p50 = 2nd, p90 = 4th.
    assert (m.time_to_pickup.count, m.time_to_pickup.p50_seconds) == (4, pytest.approx(60))
    assert m.time_to_pickup.p90_seconds == pytest.approx(300)
    assert m.time_to_pickup.max_seconds == pytest.approx(300)
    # Resolve times 600 and 1200: p50 = 1st, p90 = 2nd.
    assert m.time_to_resolve.count == 2
    assert m.time_to_resolve.p50_seconds == pytest.approx(600)
    assert m.time_to_resolve.p90_seconds == pytest.approx(1200)
    by_priority = {p.priority: p for p in m.by_priority}
    urgent = by_priority[pb.PRIORITY_URGENT]
    assert (urgent.created, urgent.picked_up, urgent.resolved, urgent.open_now) == (2, 2, 1, 0)
    assert (urgent.time_to_pickup.p50_seconds, urgent.time_to_pickup.p90_seconds) == (
        pytest.approx(60),
        pytest.approx(120),
    )
    normal = by_priority[pb.PRIORITY_NORMAL]
    assert (normal.created, normal.open_now, normal.sla_breached) == (2, 1, 1)
    assert by_priority[pb.PRIORITY_LOW].created == 1
    days = [(d.date, d.created, d.picked_up, d.resolved) for d in m.by_day]
    assert days == [
        (DAY0.date().isoformat(), 3, 3, 2),
        (DAY1.date().isoformat(), 3, 1, 0),
    ]


async def test_empty_and_inverted_windows(engineer: Client) -> None:
    far = datetime(2001, 1, 1, tzinfo=UTC)
    empty = await engineer.call(
        "escalations",
        "GetEscalationMetrics",
        esc.GetEscalationMetricsRequest(start_time=ts(far), end_time=ts(far + timedelta(days=1))),
    )
    assert empty.metrics.created == 0
    assert empty.metrics.time_to_pickup.count == 0
    assert list(empty.metrics.by_day) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await engineer.call(
            "escalations",
            "GetEscalationMetrics",
            esc.GetEscalationMetricsRequest(
                start_time=ts(far + timedelta(days=1)), end_time=ts(far)
            ),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "start_time" in (caught.value.details() or "")


async def test_technicians_cannot_read_metrics(technician: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await technician.call(
            "escalations", "GetEscalationMetrics", esc.GetEscalationMetricsRequest()
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
