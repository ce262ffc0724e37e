"""The live queue's guarantees (docs/design.md §3, invariants 1-5): a real server, real streams.

Every create is followed by a background ASSESSMENT_READY event, so a create accounts for
two sequences once its assessment is recorded (``settled``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import grpc
import pytest
from resolutionflow.v1 import escalation_pb2, handoff_pb2
from sqlalchemy import delete

from server.db.schema import EventRecord
from server.domain.types import Role
from server.models import events
from server.runtime import ServerRuntime
from server.settings import Settings
from tests.support import (
    Client,
    StreamReader,
    of_type,
    settled,
    stream_escalations,
    token,
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
    await settled(technician, first.id)
    reader = stream_escalations(engineer)
    await reader.wait_for(lambda r: len(r.events) >= 1)
    snapshot = reader.events[0]
    assert snapshot.type == pb.EVENT_TYPE_SNAPSHOT
    assert [h.id for h in snapshot.snapshot] == [first.id]
    assert snapshot.sequence == 2
    assert snapshot.snapshot[0].assessment.status == pb.ASSESSMENT_STATUS_READY

    second = await technician.create(problem_summary="new one")
    await pick_up(engineer, second.id)
    await reader.wait_for(lambda r: len(of_type(r, pb.EVENT_TYPE_PICKED_UP)) >= 1)
    (created,) = of_type(reader, pb.EVENT_TYPE_CREATED)
    (picked,) = of_type(reader, pb.EVENT_TYPE_PICKED_UP)
    assert (created.handoff.id, created.sequence) == (second.id, 3)
    assert picked.sequence > created.sequence
    assert picked.handoff.picked_up_by.id == engineer.user
    assert reader.sequences == list(range(3, reader.sequences[-1] + 1))
    reader.cancel()


async def test_gap_free_in_commit_order_under_concurrent_writers(
    client_for: Callable[..., Client],
) -> None:
    readers = [stream_escalations(client_for(Role.ENGINEER)) for _ in range(5)]
    for r in readers:
        await r.wait_for(lambda r: len(r.events) >= 1)
    created: list[str] = []

    async def writer(n: int) -> None:
        tech = client_for(Role.TECHNICIAN)
        eng = client_for(Role.ENGINEER)
        ops = 0
        while ops < 50:
            h = await tech.create(problem_summary=f"writer {n} op {ops}")
            created.append(h.id)
            ops += 1
            if ops < 50:
                await pick_up(eng, h.id)
                ops += 1
            if ops < 50:
                await resolve(eng, h.id)
                ops += 1

    await asyncio.gather(*(writer(n) for n in range(10)))
    total = 10 * 50 + len(created)  # plus one assessment per create
    for r in readers:
        await r.wait_for(lambda r: len(r.sequences) >= total, timeout=60)
        assert r.sequences == list(range(1, total + 1))
    # Every handoff's final state on the stream is its state in the database.
    last_state: dict[str, pb.Handoff] = {}
    for event in readers[0].events[1:]:
        last_state[event.handoff.id] = event.handoff
    assert sorted(last_state) == sorted(created)
    viewer = client_for(Role.ENGINEER)
    for handoff_id, streamed in last_state.items():
        reply = await viewer.call(
            "handoffs", "GetHandoff", pb.GetHandoffRequest(handoff_id=handoff_id)
        )
        assert reply.handoff == streamed
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
            await readers[-1].wait_for(lambda r: len(r.events) >= 1)
        return readers

    _, readers = await asyncio.gather(create_many(), open_streams())

    def seen(r: StreamReader) -> list[str]:
        in_snapshot = [h.id for h in r.events[0].snapshot]
        return in_snapshot + [e.handoff.id for e in of_type(r, pb.EVENT_TYPE_CREATED)]

    for r in readers:
        await r.wait_for(lambda r: set(seen(r)) >= set(created))
        assert sorted(seen(r)) == sorted(created), "each escalation exactly once"
        assert all(e.sequence > r.events[0].sequence for e in r.events[1:])
        r.cancel()


async def test_streams_opened_together_share_a_snapshot_and_miss_nothing(
    technician: Client, client_for: Callable[..., Client]
) -> None:
    """A reconnect storm: 40 streams open at once while escalations keep arriving (the
    path where openers share snapshot reads); each sees every escalation exactly once."""
    created = [(await technician.create()).id for _ in range(3)]

    async def create_many() -> None:
        for _ in range(15):
            created.append((await technician.create()).id)

    readers = [stream_escalations(client_for(Role.ENGINEER)) for _ in range(40)]
    await create_many()

    def seen(r: StreamReader) -> list[str]:
        in_snapshot = [h.id for h in r.events[0].snapshot]
        return in_snapshot + [e.handoff.id for e in of_type(r, pb.EVENT_TYPE_CREATED)]

    for r in readers:
        await r.wait_for(lambda r: bool(r.events) and set(seen(r)) >= set(created))
        assert r.events[0].type == pb.EVENT_TYPE_SNAPSHOT
        assert sorted(seen(r)) == sorted(created), "each escalation exactly once"
        assert all(e.sequence > r.events[0].sequence for e in r.events[1:])
        r.cancel()


async def test_resume_replays_exactly_the_missed_events(
    technician: Client, engineer: Client
) -> None:
    for i in range(3):
        await technician.create(problem_summary=f"before {i}")
    reader = stream_escalations(engineer, after=0)
    await reader.wait_for(lambda r: len(r.sequences) >= 6)
    assert reader.sequences == [1, 2, 3, 4, 5, 6]
    reader.cancel()
    await reader.wait_done()

    away = [await technician.create(problem_summary=f"while away {i}") for i in range(4)]
    await settled(technician, *(h.id for h in away))
    resumed = stream_escalations(engineer, after=6)
    await resumed.wait_for(lambda r: len(r.sequences) >= 8)
    assert resumed.sequences == list(range(7, 15))
    assert [e.handoff.id for e in of_type(resumed, pb.EVENT_TYPE_CREATED)] == [h.id for h in away]
    await technician.create(problem_summary="live again")
    await resumed.wait_for(lambda r: len(r.sequences) >= 10)
    assert resumed.sequences == list(range(7, 17))
    resumed.cancel()


async def test_cursor_ahead_of_the_log_gets_a_reset(technician: Client, engineer: Client) -> None:
    h = await technician.create()
    await settled(technician, h.id)
    reader = stream_escalations(engineer, after=99)
    await reader.wait_for(lambda r: len(r.events) >= 1)
    reset = reader.events[0]
    assert reset.type == pb.EVENT_TYPE_RESET
    assert "ahead" in reset.reset_reason
    assert (reset.sequence, [x.id for x in reset.snapshot]) == (2, [h.id])
    await technician.create()
    await reader.wait_for(lambda r: len(r.sequences) >= 2)
    assert reader.sequences == [3, 4]
    reader.cancel()


async def test_cursor_past_retention_gets_a_reset(
    technician: Client, engineer: Client, server: ServerRuntime, account: str
) -> None:
    created = [await technician.create() for _ in range(3)]
    await settled(technician, *(h.id for h in created))
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
    await ok.wait_for(lambda r: len(r.sequences) >= 4)
    assert ok.sequences == [3, 4, 5, 6]
    ok.cancel()


async def test_retention_task_prunes_old_events(server: ServerRuntime, technician: Client) -> None:
    h = await technician.create()
    await settled(technician, h.id)
    later = server.core.clock() + timedelta(seconds=server.settings.event_retention_seconds + 1)
    original = server.core.clock
    server.core.clock = lambda: later
    try:
        await server.prune_events()
    finally:
        server.core.clock = original
    async with server.db.read() as s:
        assert await events.oldest(s, technician.account) is None
        assert await events.head(s, technician.account) == 2


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
    # Without BDP probing the transport window stays small, so the stalled reader really
    # backs up into the server's buffer.
    options = [("grpc.http2.bdp_probe", 0)]
    address = f"127.0.0.1:{small_buffer_server.port}"
    async with grpc.aio.insecure_channel(address, options=options) as ch:

        def client(role: Role, user: str) -> Client:
            return Client(ch, token(account, user, role), account, user)

        tech = client(Role.TECHNICIAN, "t")
        fast = [stream_escalations(client(Role.ENGINEER, f"fast{i}")) for i in range(3)]
        slow_client = client(Role.ENGINEER, "slow")
        slow_call = slow_client.escalations.StreamEscalations(
            esc.StreamEscalationsRequest(after_sequence=0), metadata=slow_client.metadata
        )
        for r in fast:
            await r.wait_for(lambda r: len(r.events) >= 1)
        big = "x" * 1900
        creates = 150
        total = 2 * creates
        for i in range(creates):
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


async def test_heartbeats_carry_the_stream_position(
    small_buffer_server: ServerRuntime, account: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_buffer_server.port}") as ch:
        tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
        eng = Client(ch, token(account, "e", Role.ENGINEER), account, "e")
        first = await tech.create()
        await settled(tech, first.id)
        reader = stream_escalations(eng)
        await reader.wait_for(lambda r: len(r.events) >= 1)
        # Events this stream does not carry still move its position.
        other = await tech.create(intent=pb.HANDOFF_INTENT_REASSIGN)
        await settled(tech, other.id)
        await reader.wait_for(
            lambda r: any(m.type == pb.EVENT_TYPE_HEARTBEAT and m.sequence == 4 for m in r.messages)
        )
        assert reader.sequences == []
        reader.cancel()


async def test_an_idle_stream_hears_its_unchanged_position_after_the_idle_interval(
    settings: Settings, account: str
) -> None:
    runtime = ServerRuntime(
        settings.model_copy(update={"heartbeat_seconds": 0.2, "idle_heartbeat_seconds": 0.6})
    )
    await runtime.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
            tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
            eng = Client(ch, token(account, "e", Role.ENGINEER), account, "e")
            first = await tech.create()
            await settled(tech, first.id)
            reader = stream_escalations(eng)
            await reader.wait_for(lambda r: len(r.events) >= 1)
            snapshot = reader.messages[0].sequence
            await reader.wait_for(
                lambda r: any(m.type == pb.EVENT_TYPE_HEARTBEAT for m in r.messages)
            )
            beats = [m for m in reader.messages if m.type == pb.EVENT_TYPE_HEARTBEAT]
            assert beats[0].sequence == snapshot
            reader.cancel()
    finally:
        await runtime.stop(0)


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
    await theirs.wait_for(lambda r: len(r.sequences) >= 2)
    await mine.wait_for(lambda r: len(r.sequences) >= 2)
    assert {e.handoff.problem_summary for e in theirs.events} == {"B's own"}
    assert all(e.handoff.account_id == other_eng.account for e in theirs.events)
    assert {e.handoff.problem_summary for e in mine.events[1:]} == {"secret of A"}
    mine.cancel()
    theirs.cancel()


async def test_technician_watch_carries_only_their_own(client_for: Callable[..., Client]) -> None:
    alice = client_for(Role.TECHNICIAN, "alice")
    bob = client_for(Role.TECHNICIAN, "bob")
    before = await bob.create(problem_summary="bob before")
    await settled(bob, before.id)
    watch = watch_handoffs(alice)
    await watch.wait_for(lambda r: len(r.events) >= 1)
    assert list(watch.events[0].snapshot) == []
    theirs = await bob.create(problem_summary="bob's")
    await settled(bob, theirs.id)
    mine = await alice.create(problem_summary="alice's", intent=pb.HANDOFF_INTENT_REASSIGN)
    await settled(alice, mine.id)
    await watch.wait_for(lambda r: len(r.events) >= 3)
    assert [e.type for e in watch.events[1:]] == [
        pb.EVENT_TYPE_CREATED,
        pb.EVENT_TYPE_ASSESSMENT_READY,
    ]
    assert {e.handoff.id for e in watch.events[1:]} == {mine.id}
    assert watch.events[1].sequence == 5
    engineer_watch = watch_handoffs(client_for(Role.ENGINEER), after=0)
    await engineer_watch.wait_for(lambda r: len(r.sequences) >= 6)
    assert engineer_watch.sequences == [1, 2, 3, 4, 5, 6]
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
