"""The live queue's guarantees (DESIGN §3 invariants 1-5): a real server, real streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from resolutionflow.v1 import escalation_pb2, handoff_pb2
from sqlalchemy import delete

from server.db.schema import EventRecord
from server.domain.types import Role
from server.runtime import ServerRuntime
from server.settings import Settings
from tests.support import (
    Client,
    StreamReader,
    stream_escalations,
    wait_until,
    watch_handoffs,
)

pb = handoff_pb2
esc = escalation_pb2


async def pick_up(engineer: Client, handoff_id: str) -> None:
    await engineer.call(
        "escalations", "PickUpEscalation", esc.PickUpEscalationRequest(handoff_id=handoff_id)
    )


async def resolve(engineer: Client, handoff_id: str) -> None:
    await engineer.call(
        "escalations",
        "ResolveEscalation",
        esc.ResolveEscalationRequest(handoff_id=handoff_id, resolution_note="done"),
    )


async def test_snapshot_then_live_events(technician: Client, engineer: Client) -> None:
    first = await technician.create(problem_summary="already waiting")
    reader = stream_escalations(engineer)
    await reader.wait_for(lambda r: len(r.events) >= 1)
    snapshot = reader.events[0]
    assert snapshot.type == pb.EVENT_TYPE_SNAPSHOT
    assert [h.id for h in snapshot.snapshot] == [first.id]
    assert snapshot.sequence == first.sequence

    second = await technician.create(problem_summary="new one")
    await pick_up(engineer, second.id)
    await reader.wait_for(lambda r: len(r.events) >= 3)
    created, picked = reader.events[1:3]
    assert (created.type, created.handoff.id, created.sequence) == (
        pb.EVENT_TYPE_CREATED,
        second.id,
        2,
    )
    assert (picked.type, picked.sequence) == (pb.EVENT_TYPE_PICKED_UP, 3)
    assert picked.handoff.picked_up_by.id == engineer.user
    reader.cancel()


async def test_gap_free_in_commit_order_under_concurrent_writers(
    client_for: Callable[..., Client], server: ServerRuntime
) -> None:
    readers = [stream_escalations(client_for(Role.ENGINEER)) for _ in range(5)]
    for r in readers:
        await r.wait_for(lambda r: len(r.events) >= 1)

    async def writer(n: int) -> None:
        tech = client_for(Role.TECHNICIAN)
        eng = client_for(Role.ENGINEER)
        ops = 0
        while ops < 50:
            h = await tech.create(problem_summary=f"writer {n} op {ops}")
            ops += 1
            if ops < 50:
                await pick_up(eng, h.id)
                ops += 1
            if ops < 50:
                await resolve(eng, h.id)
                ops += 1

    await asyncio.gather(*(writer(n) for n in range(10)))
    total = 10 * 50
    for r in readers:
        await r.wait_for(lambda r: len(r.sequences) >= total, timeout=60)
        assert r.sequences == list(range(1, total + 1))
    # Every handoff's final state on the stream is its state in the database.
    last_state: dict[str, pb.Handoff] = {}
    for event in readers[0].events[1:]:
        last_state[event.handoff.id] = event.handoff
    viewer = client_for(Role.ENGINEER)
    for handoff_id, streamed in last_state.items():
        stored = (
            await viewer.call("handoffs", "GetHandoff", pb.GetHandoffRequest(handoff_id=handoff_id))
        ).handoff
        assert stored == streamed
    for r in readers:
        r.cancel()


async def test_snapshot_and_deltas_never_miss_or_repeat(
    technician: Client, client_for: Callable[..., Client]
) -> None:
    created: list[str] = []

    async def create_many() -> None:
        for i in range(60):
            created.append((await technician.create(problem_summary=f"c{i}")).id)

    async def open_streams() -> list[StreamReader]:
        readers = []
        for _ in range(12):
            readers.append(stream_escalations(client_for(Role.ENGINEER)))
            await asyncio.sleep(0)  # interleave with the writer; not a synchronization
            await readers[-1].wait_for(lambda r: len(r.events) >= 1)
        return readers

    _, readers = await asyncio.gather(create_many(), open_streams())
    for r in readers:
        await r.wait_for(
            lambda r: (
                {h.id for h in r.events[0].snapshot} | {e.handoff.id for e in r.events[1:]}
                >= set(created)
            )
        )
        seen = [h.id for h in r.events[0].snapshot] + [e.handoff.id for e in r.events[1:]]
        assert sorted(seen) == sorted(created), "each escalation exactly once"
        assert all(e.sequence > r.events[0].sequence for e in r.events[1:])
        r.cancel()


async def test_resume_replays_exactly_the_missed_events(
    technician: Client, engineer: Client
) -> None:
    for i in range(3):
        await technician.create(problem_summary=f"before {i}")
    reader = stream_escalations(engineer, after=0)
    await reader.wait_for(lambda r: len(r.sequences) >= 3)
    assert reader.sequences == [1, 2, 3]
    reader.cancel()
    await reader.wait_done()

    for i in range(4):
        await technician.create(problem_summary=f"while away {i}")
    resumed = stream_escalations(engineer, after=3)
    await resumed.wait_for(lambda r: len(r.sequences) >= 4)
    assert resumed.sequences == [4, 5, 6, 7]
    assert resumed.events[0].type == pb.EVENT_TYPE_CREATED
    await technician.create(problem_summary="live again")
    await resumed.wait_for(lambda r: len(r.sequences) >= 5)
    assert resumed.sequences == [4, 5, 6, 7, 8]
    resumed.cancel()


async def test_cursor_ahead_of_the_log_gets_a_reset(technician: Client, engineer: Client) -> None:
    h = await technician.create()
    reader = stream_escalations(engineer, after=99)
    await reader.wait_for(lambda r: len(r.events) >= 1)
    reset = reader.events[0]
    assert reset.type == pb.EVENT_TYPE_RESET
    assert "ahead" in reset.reset_reason
    assert (reset.sequence, [x.id for x in reset.snapshot]) == (1, [h.id])
    await technician.create()
    await reader.wait_for(lambda r: len(r.sequences) >= 1)
    assert reader.sequences == [2]
    reader.cancel()


async def test_cursor_past_retention_gets_a_reset(
    technician: Client, engineer: Client, server: ServerRuntime, account: str
) -> None:
    for _ in range(3):
        await technician.create()
    async with server.db.write() as s:  # what the retention task does to old events
        await s.execute(
            delete(EventRecord).where(EventRecord.account_id == account, EventRecord.sequence <= 2)
        )
    reader = stream_escalations(engineer, after=1)
    await reader.wait_for(lambda r: len(r.events) >= 1)
    assert reader.events[0].type == pb.EVENT_TYPE_RESET
    assert "retention" in reader.events[0].reset_reason
    assert len(reader.events[0].snapshot) == 3
    reader.cancel()
    # A cursor at the oldest kept boundary still resumes normally.
    ok = stream_escalations(engineer, after=2)
    await ok.wait_for(lambda r: len(r.sequences) >= 1)
    assert ok.sequences == [3]
    ok.cancel()


async def test_retention_task_prunes_old_events(server: ServerRuntime, technician: Client) -> None:
    await technician.create()
    later = server.core.clock() + timedelta(seconds=server.settings.event_retention_seconds + 1)
    original = server.core.clock
    server.core.clock = lambda: later
    try:
        await server.prune_events()
    finally:
        server.core.clock = original
    async with server.db.read() as s:
        from server.models import events

        assert await events.oldest(s, technician.account) is None
        assert await events.head(s, technician.account) == 1


@pytest.fixture
async def small_buffer_server(settings: Settings) -> AsyncIterator[ServerRuntime]:
    runtime = ServerRuntime(
        settings.model_copy(update={"stream_buffer": 2, "heartbeat_seconds": 0.3})
    )
    await runtime.start()
    yield runtime
    await runtime.stop(0)


async def test_slow_consumer_neither_slows_others_nor_loses_events(
    small_buffer_server: ServerRuntime, account: str
) -> None:
    import grpc

    from tests.support import token

    # Without BDP probing the transport window stays small, so the stalled reader really
    # backs up into the server's buffer.
    options = [("grpc.http2.bdp_probe", 0)]
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{small_buffer_server.port}", options=options
    ) as ch:

        def client(role: Role, user: str) -> Client:
            return Client(ch, token(account, user, role), account, user)

        tech = client(Role.TECHNICIAN, "t")
        fast = [stream_escalations(client(Role.ENGINEER, f"fast{i}")) for i in range(3)]
        slow_call = client(Role.ENGINEER, "slow").escalations.StreamEscalations(
            esc.StreamEscalationsRequest(after_sequence=0),
            metadata=client(Role.ENGINEER, "slow").metadata,
        )
        for r in fast:
            await r.wait_for(lambda r: len(r.events) >= 1)
        big = "x" * 1900
        total = 300
        for i in range(total):
            await tech.create(problem_summary=f"{i} {big}", notes="n" * 9000)
        for r in fast:
            await r.wait_for(lambda r: len(r.sequences) >= total, timeout=60)
            assert r.sequences == list(range(1, total + 1))
        # The slow stream has read nothing so far; its buffer overflowed on the server.
        subs = [sub for f in small_buffer_server.hub.feeds.values() for sub in f.subscribers]
        assert sum(sub.overflows for sub in subs) >= 1
        slow = StreamReader(slow_call)
        await slow.wait_for(lambda r: len(r.sequences) >= total, timeout=60)
        assert slow.sequences == list(range(1, total + 1))
        for r in [*fast, slow]:
            r.cancel()


async def test_heartbeats_carry_the_latest_sequence(
    small_buffer_server: ServerRuntime, account: str
) -> None:
    import grpc

    from tests.support import token

    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_buffer_server.port}") as ch:
        tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
        eng = Client(ch, token(account, "e", Role.ENGINEER), account, "e")
        await tech.create()
        await tech.create(intent=pb.HANDOFF_INTENT_REASSIGN)
        reader = stream_escalations(eng)
        await reader.wait_for(lambda r: any(m.type == pb.EVENT_TYPE_HEARTBEAT for m in r.messages))
        beat = next(m for m in reader.messages if m.type == pb.EVENT_TYPE_HEARTBEAT)
        assert beat.sequence == 2
        reader.cancel()


async def test_streams_are_isolated_by_account(
    client_for: Callable[..., Client], technician: Client
) -> None:
    other_eng = client_for(Role.ENGINEER, "eng-other", acct="other-" + technician.account)
    other_tech = client_for(Role.TECHNICIAN, "tech-other", acct=other_eng.account)
    mine = stream_escalations(client_for(Role.ENGINEER))
    theirs = stream_escalations(other_eng, after=0)
    await mine.wait_for(lambda r: len(r.events) >= 1)
    await technician.create(problem_summary="secret of A")
    await other_tech.create(problem_summary="B's own")
    await theirs.wait_for(lambda r: len(r.sequences) >= 1)
    await mine.wait_for(lambda r: len(r.sequences) >= 1)
    assert [e.handoff.problem_summary for e in theirs.events] == ["B's own"]
    assert all(e.handoff.account_id == other_eng.account for e in theirs.events)
    assert [e.handoff.problem_summary for e in mine.events[1:]] == ["secret of A"]
    mine.cancel()
    theirs.cancel()


async def test_technician_watch_carries_only_their_own(client_for: Callable[..., Client]) -> None:
    alice = client_for(Role.TECHNICIAN, "alice")
    bob = client_for(Role.TECHNICIAN, "bob")
    await bob.create(problem_summary="bob before")
    watch = watch_handoffs(alice)
    await watch.wait_for(lambda r: len(r.events) >= 1)
    assert list(watch.events[0].snapshot) == []
    await bob.create(problem_summary="bob's")
    mine = await alice.create(problem_summary="alice's", intent=pb.HANDOFF_INTENT_REASSIGN)
    await watch.wait_for(lambda r: len(r.events) >= 2)
    assert [e.handoff.id for e in watch.events[1:]] == [mine.id]
    assert watch.events[1].sequence == 3
    engineer_watch = watch_handoffs(client_for(Role.ENGINEER), after=0)
    await engineer_watch.wait_for(lambda r: len(r.sequences) >= 3)
    assert engineer_watch.sequences == [1, 2, 3]
    watch.cancel()
    engineer_watch.cancel()


async def test_cancelled_stream_frees_its_subscriber(
    server: ServerRuntime, engineer: Client
) -> None:
    def mine() -> int:
        feed = server.hub.feeds.get(engineer.account)
        return len(feed.subscribers) if feed else 0

    readers = [stream_escalations(engineer) for _ in range(5)]
    for r in readers:
        await r.wait_for(lambda r: len(r.events) >= 1)
    assert mine() == 5
    for r in readers:
        r.cancel()
    await wait_until(lambda: mine() == 0, timeout=5, what="subscribers freed")
    assert engineer.account not in server.hub.feeds
