"""Guarantees that need real server processes: crash, shutdown, replicas, the SLA clock."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest
from resolutionflow.v1 import escalation_pb2, handoff_pb2
from sqlalchemy import func, select

from server.db.schema import EventRecord
from server.domain.types import Role
from server.models import events
from server.runtime import ServerRuntime
from server.streaming.pg_listener import APPLICATION_NAME
from tests.processes import ServerProcess
from tests.support import Client, of_type, settled, stream_escalations, token, wait_until

pb = handoff_pb2


@pytest.fixture
async def processes(
    database_url: str, tmp_path: Path
) -> AsyncIterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(**env: str) -> ServerProcess:
        process = ServerProcess(database_url, tmp_path, **env)
        started.append(process)
        return process

    yield make
    for p in started:
        await p.stop()


def clients(channel: grpc.aio.Channel, account: str) -> tuple[Client, Client]:
    tech = Client(channel, token(account, "tech", Role.TECHNICIAN), account, "tech")
    eng = Client(channel, token(account, "eng", Role.ENGINEER), account, "eng")
    return tech, eng


async def test_sigkill_then_restart_loses_nothing(
    processes: Callable[..., ServerProcess], account: str, server: ServerRuntime
) -> None:
    replica = processes()
    await replica.start()
    async with grpc.aio.insecure_channel(replica.address) as ch:
        tech, eng = clients(ch, account)
        reader = stream_escalations(eng, after=0)
        for _ in range(2):
            await tech.create()
        await reader.wait_for(lambda r: len(r.sequences) >= 2)
        for _ in range(3):
            await tech.create()  # acknowledged: committed, whatever the stream got
        await replica.kill()  # assessments may still be pending: they survive too
        await reader.wait_done()
        assert reader.error is not None
        seen = reader.sequences
    await replica.start()
    async with grpc.aio.insecure_channel(replica.address) as ch:
        tech, eng = clients(ch, account)
        resumed = stream_escalations(eng, after=seen[-1])
        last = await tech.create()
        await settled(tech, last.id)
        # 6 creates, each with its assessment: 12 events, all of them exactly once.
        await resumed.wait_for(lambda r: len(seen) + len(r.sequences) >= 12)
        assert seen + resumed.sequences == list(range(1, 13))
        resumed.cancel()
    async with server.db.read() as s:
        assert await events.head(s, account) == 12


async def test_sigterm_ends_streams_resumably_and_exits(
    processes: Callable[..., ServerProcess], account: str
) -> None:
    server = processes()
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as ch:
        tech, eng = clients(ch, account)
        h = await tech.create()
        await settled(tech, h.id)
        readers = [stream_escalations(eng, after=0) for _ in range(3)]
        for r in readers:
            await r.wait_for(lambda r: len(r.sequences) >= 2)
        code = await server.signal_and_wait(signal.SIGTERM, timeout=10)
        assert code == 0
        for r in readers:
            await r.wait_done()
            assert r.error is not None
            assert r.error.code() == grpc.StatusCode.UNAVAILABLE
            assert "after_sequence=2" in (r.error.details() or "")


async def test_event_committed_on_one_replica_reaches_a_stream_on_another(
    processes: Callable[..., ServerProcess], account: str, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("cross-replica wake-ups use PostgreSQL LISTEN/NOTIFY")
    # A long log check interval: delivery must come from NOTIFY, not from polling.
    a = processes(RF_LOG_POLL_SECONDS="120")
    b = processes(RF_LOG_POLL_SECONDS="120")
    await a.start()
    await b.start()
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")

    async def listeners() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = $1 AND datname = current_database()",
                    APPLICATION_NAME,
                )
            )
        finally:
            await conn.close()

    async def listeners_back(expected: int) -> bool:
        return await listeners() == expected

    await wait_until(lambda: listeners(), what="LISTEN connections")
    baseline = await listeners()  # a, b, and the in-process server if it is running
    async with (
        grpc.aio.insecure_channel(a.address) as ch_a,
        grpc.aio.insecure_channel(b.address) as ch_b,
    ):
        tech_a, _ = clients(ch_a, account)
        _, eng_b = clients(ch_b, account)
        reader = stream_escalations(eng_b, after=0)
        first = await tech_a.create()
        await reader.wait_for(lambda r: len(of_type(r, pb.EVENT_TYPE_CREATED)) >= 1, timeout=10)
        assert of_type(reader, pb.EVENT_TYPE_CREATED)[0].handoff.id == first.id

        conn = await asyncpg.connect(dsn)
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1 AND datname = current_database()",
                APPLICATION_NAME,
            )
        finally:
            await conn.close()
        assert killed == baseline
        await wait_until(lambda: listeners(), timeout=15, what="LISTEN reconnect")
        await wait_until(
            lambda: listeners_back(baseline), timeout=15, what="every replica re-listening"
        )
        second = await tech_a.create()
        await reader.wait_for(lambda r: len(of_type(r, pb.EVENT_TYPE_CREATED)) >= 2, timeout=10)
        assert [e.handoff.id for e in of_type(reader, pb.EVENT_TYPE_CREATED)] == [
            first.id,
            second.id,
        ]
        reader.cancel()


async def test_sla_warning_and_breach_fire_once_each_with_two_replicas(
    processes: Callable[..., ServerProcess], server: ServerRuntime
) -> None:
    account = f"sla-{uuid.uuid4().hex[:8]}"
    fast_sla = {
        # The warning comes at 80 % (3.2 s): room for two creates and a pick-up on a busy
        # machine before the second escalation's own warning would be due.
        "RF_SLA_URGENT_SECONDS": "4",
        "RF_SLA_CHECK_SECONDS": "0.1",
        "RF_LOG_POLL_SECONDS": "0.2",
    }
    a = processes(**fast_sla)
    b = processes(**fast_sla)
    await a.start()
    await b.start()
    async with (
        grpc.aio.insecure_channel(a.address) as ch_a,
        grpc.aio.insecure_channel(b.address) as ch_b,
    ):
        tech, _ = clients(ch_a, account)
        _, eng = clients(ch_b, account)
        reader = stream_escalations(eng, after=0)
        urgent = await tech.create(priority=pb.PRIORITY_URGENT)
        picked_in_time = await tech.create(priority=pb.PRIORITY_URGENT)
        await eng.call(
            "escalations",
            "PickUpEscalation",
            escalation_pb2.PickUpEscalationRequest(handoff_id=picked_in_time.id),
        )
        sla_types = {pb.EVENT_TYPE_SLA_WARNING, pb.EVENT_TYPE_SLA_BREACHED}
        await reader.wait_for(lambda r: {e.type for e in r.events} >= sla_types, timeout=20)
        # A marker written after both timers fired: every replica has had its chance.
        marker = await tech.create()
        await reader.wait_for(lambda r: any(e.handoff.id == marker.id for e in r.events))
        sla_events = [e for e in reader.events if e.type in sla_types]
        assert [(e.type, e.handoff.id) for e in sla_events] == [
            (pb.EVENT_TYPE_SLA_WARNING, urgent.id),
            (pb.EVENT_TYPE_SLA_BREACHED, urgent.id),
        ]
        assert reader.sequences == list(range(1, len(reader.sequences) + 1))
        reader.cancel()
    async with server.db.read() as s:
        stored = await s.scalar(
            select(func.count())
            .select_from(EventRecord)
            .where(EventRecord.account_id == account, EventRecord.type.like("SLA_%"))
        )
    assert stored == 2
