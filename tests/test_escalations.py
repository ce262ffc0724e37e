"""EscalationService over a real channel: the queue, pickup, release, resolve, sequences."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from resolutionflow.v1 import escalation_pb2 as esc
from resolutionflow.v1 import handoff_pb2 as pb
from sqlalchemy import select

from server.db.schema import EventRecord
from server.domain.types import Role
from server.runtime import ServerRuntime
from server.settings import Settings
from tests.support import Client, fails, settled, stream_escalations, token


async def queue(engineer: Client) -> esc.ListEscalationsResponse:
    reply: esc.ListEscalationsResponse = await engineer.call(
        "escalations", "ListEscalations", esc.ListEscalationsRequest()
    )
    return reply


async def pick_up(engineer: Client, handoff_id: str) -> esc.HandoffContext:
    reply = await engineer.call(
        "escalations", "PickUpEscalation", esc.PickUpEscalationRequest(handoff_id=handoff_id)
    )
    return reply.context


async def context_of(engineer: Client, handoff_id: str) -> esc.HandoffContext:
    reply = await engineer.call(
        "escalations", "GetHandoffContext", esc.GetHandoffContextRequest(handoff_id=handoff_id)
    )
    return reply.context


async def release(engineer: Client, handoff_id: str) -> pb.Handoff:
    reply = await engineer.call(
        "escalations", "ReleaseEscalation", esc.ReleaseEscalationRequest(handoff_id=handoff_id)
    )
    return reply.handoff


async def resolve(engineer: Client, handoff_id: str, note: str = "fixed") -> pb.Handoff:
    reply = await engineer.call(
        "escalations",
        "ResolveEscalation",
        esc.ResolveEscalationRequest(handoff_id=handoff_id, resolution_note=note),
    )
    return reply.handoff


async def get(client: Client, handoff_id: str) -> pb.Handoff:
    reply = await client.call("handoffs", "GetHandoff", pb.GetHandoffRequest(handoff_id=handoff_id))
    return reply.handoff


async def cancel(client: Client, handoff_id: str) -> pb.Handoff:
    reply = await client.call(
        "handoffs", "CancelHandoff", pb.CancelHandoffRequest(handoff_id=handoff_id)
    )
    return reply.handoff


async def logged_events(server: ServerRuntime, account: str) -> list[tuple[int, str, str]]:
    """The account's event log as (sequence, type, handoff id), in sequence order."""
    async with server.db.read() as s:
        rows = await s.execute(
            select(EventRecord.sequence, EventRecord.type, EventRecord.handoff_id)
            .where(EventRecord.account_id == account)
            .order_by(EventRecord.sequence)
        )
        return [(int(seq), str(kind), str(handoff_id)) for seq, kind, handoff_id in rows]


# --- the queue ------------------------------------------------------------------------


# In the future, so no real-time SLA clock touches it.
T0 = (datetime.now(UTC) + timedelta(days=40)).replace(microsecond=0)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def clocked(own_settings: Settings) -> AsyncIterator[tuple[ServerRuntime, Clock]]:
    # The SLA clock never ticks by itself here; the test fires due timers at chosen times.
    # On a database of its own: firing the timers due weeks ahead would otherwise fire
    # every open handoff's that other tests left in the session's database.
    runtime = ServerRuntime(own_settings.model_copy(update={"sla_check_seconds": 3600}))
    clock = Clock()
    runtime.core.clock = clock
    await runtime.start()
    yield runtime, clock
    await runtime.stop(0)


async def test_queue_is_by_sla_due_time_so_breached_first_then_oldest(
    clocked: tuple[ServerRuntime, Clock], account: str
) -> None:
    runtime, clock = clocked
    s = timedelta(seconds=1)
    # (name, priority, created at); default targets URGENT 300 s, HIGH 900, NORMAL 3600,
    # LOW 14400. Due times in brackets, relative to T0.
    plan = [
        ("low-breached", pb.PRIORITY_LOW, T0 - 14400 * s),  # [0]: breached at T0 + 10
        ("high-early", pb.PRIORITY_HIGH, T0 - 800 * s),  # [100]: warned, not breached
        ("low-old", pb.PRIORITY_LOW, T0),  # [14400]
        ("normal-1", pb.PRIORITY_NORMAL, T0 + 1 * s),  # [3601]
        ("urgent-1", pb.PRIORITY_URGENT, T0 + 2 * s),  # [302]
        ("high-1", pb.PRIORITY_HIGH, T0 + 3 * s),  # [903]
        ("urgent-2", pb.PRIORITY_URGENT, T0 + 4 * s),  # [304]
        ("normal-2", pb.PRIORITY_NORMAL, T0 + 1 * s),  # [3601]: a tie, broken by age then id
        ("low-2", pb.PRIORITY_LOW, T0 + 5 * s),  # [14405]
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
        tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
        eng = Client(ch, token(account, "e", Role.ENGINEER), account, "e")
        made = {}
        for name, priority, at in plan:
            clock.now = at
            made[name] = await tech.create(priority=priority, problem_summary=name)
        # Picked up before its due time and released after it: its SLA timers fired while
        # it was held, so no breach is recorded, yet it is the most overdue of all.
        clock.now = T0 - 400 * s
        late = made["released-late"] = await tech.create(
            priority=pb.PRIORITY_URGENT, problem_summary="released-late"
        )  # [-100]
        await pick_up(eng, late.id)
        await settled(eng, *(h.id for h in made.values()))
        clock.now = T0 - 50 * s
        await runtime.fire_due_sla_timers()
        clock.now = T0 + 5 * s
        await release(eng, late.id)
        clock.now = T0 + 10 * s
        await runtime.fire_due_sla_timers()
        normal_tie = sorted([made["normal-1"], made["normal-2"]], key=lambda h: h.id)
        expected = [
            "released-late",
            "low-breached",
            "high-early",
            "urgent-1",
            "urgent-2",
            "high-1",
            *(h.problem_summary for h in normal_tie),
            "low-old",
            "low-2",
        ]
        reply = await queue(eng)
        assert [h.problem_summary for h in reply.escalations] == expected
        assert all(h.status == pb.HANDOFF_STATUS_OPEN for h in reply.escalations)
        events = await logged_events(runtime, account)
        assert reply.sequence == events[-1][0] == len(events)
        fired = [(kind, handoff_id) for _, kind, handoff_id in events if kind.startswith("SLA")]
        assert sorted(fired) == sorted(
            [
                ("SLA_WARNING", made["low-breached"].id),
                ("SLA_BREACHED", made["low-breached"].id),
                ("SLA_WARNING", made["high-early"].id),
            ]
        )
        # The stream's opening snapshot is the same queue in the same order.
        reader = stream_escalations(eng)
        await reader.wait_for(lambda r: bool(r.events))
        first = reader.events[0]
        assert first.type == pb.EVENT_TYPE_SNAPSHOT
        assert [h.problem_summary for h in first.snapshot] == expected
        assert first.sequence == reply.sequence
        reader.cancel()


async def test_queue_holds_only_open_escalations(
    technician: Client, engineer: Client, client_for: Callable[..., Client], account: str
) -> None:
    waiting = await technician.create(priority=pb.PRIORITY_LOW)
    reassign = await technician.create(intent=pb.HANDOFF_INTENT_REASSIGN)
    cancelled = await technician.create(priority=pb.PRIORITY_URGENT)
    await cancel(technician, cancelled.id)
    picked = await technician.create(priority=pb.PRIORITY_URGENT)
    await pick_up(engineer, picked.id)
    resolved = await technician.create(priority=pb.PRIORITY_URGENT)
    await pick_up(engineer, resolved.id)
    await resolve(engineer, resolved.id)
    all_ids = [waiting.id, reassign.id, cancelled.id, picked.id, resolved.id]
    await settled(engineer, *all_ids)

    reply = await queue(engineer)
    assert [h.id for h in reply.escalations] == [waiting.id]
    # The cursor is the account's latest sequence: the highest any handoff carries.
    latest = max([(await get(engineer, i)).sequence for i in all_ids])
    assert reply.sequence == latest
    # Every engineer (and admin) of the account reads the same queue.
    admin = client_for(Role.ADMIN)
    assert [h.id for h in (await queue(admin)).escalations] == [waiting.id]


async def test_queue_of_a_new_account_is_empty_at_sequence_zero(engineer: Client) -> None:
    reply = await queue(engineer)
    assert list(reply.escalations) == []
    assert reply.sequence == 0


# --- pickup ---------------------------------------------------------------------------


async def test_pickup_returns_the_four_context_sections(
    technician: Client, engineer: Client
) -> None:
    steps = [
        pb.Step(description="Restarted the VPN client", outcome="failed"),
        pb.Step(description="Reinstalled the VPN client", outcome="no change"),
    ]
    created = await technician.create(
        problem_summary="Customer's laptop cannot reach the VPN since this morning",
        steps_tried=steps,
    )
    await settled(engineer, created.id)
    ctx = await pick_up(engineer, created.id)

    assert ctx.problem_summary == "Customer's laptop cannot reach the VPN since this morning"
    assert list(ctx.whats_been_tried) == steps
    assert ctx.ai_assessment.status == pb.ASSESSMENT_STATUS_READY
    assert ctx.ai_assessment.summary.strip()
    assert ctx.ai_assessment.suggested_first_step.strip()
    assert ctx.ai_assessment.provider
    assert ctx.start_here.strip()
    assert ctx.start_here == ctx.ai_assessment.suggested_first_step

    h = ctx.handoff
    assert h.id == created.id
    assert h.status == pb.HANDOFF_STATUS_PICKED_UP
    assert (h.picked_up_by.id, h.picked_up_by.name) == ("eng-1", "Erin Engineer")
    assert h.HasField("picked_up_at")
    # The technician sees who has it.
    seen_by_tech = await get(technician, created.id)
    assert seen_by_tech.status == pb.HANDOFF_STATUS_PICKED_UP
    assert seen_by_tech.picked_up_by.id == "eng-1"


async def test_context_carries_the_technicians_notes(technician: Client, engineer: Client) -> None:
    created = await technician.create(
        notes="Customer is on the 3rd floor; only reachable by phone after 2 pm.",
        session_id="sess-notes",
    )
    picked = await pick_up(engineer, created.id)
    read = await context_of(engineer, created.id)
    for ctx in (picked, read):
        assert ctx.notes == "Customer is on the 3rd floor; only reachable by phone after 2 pm."
        # What else the context screen shows travels in the handoff.
        assert ctx.handoff.session_id == "sess-notes"
        assert (ctx.handoff.created_by.id, ctx.handoff.created_by.name) == ("tech-1", "Tina Tech")
        assert ctx.handoff.HasField("created_at") and ctx.handoff.HasField("sla_due_at")


async def test_picking_up_what_you_hold_returns_its_context_again(
    technician: Client, engineer: Client, server: ServerRuntime, account: str
) -> None:
    created = await technician.create(notes="call back first")
    # The assessment's own event would move the sequence between the two pickups.
    await settled(technician, created.id)
    first = await pick_up(engineer, created.id)
    again = await pick_up(engineer, created.id)
    assert again.handoff.id == created.id
    assert again.handoff.picked_up_by.id == "eng-1"
    assert again.handoff.sequence == first.handoff.sequence  # nothing changed
    assert again.handoff.picked_up_at == first.handoff.picked_up_at
    assert again.notes == "call back first"
    pickups = [e for e in await logged_events(server, account) if e[1] == "PICKED_UP"]
    assert len(pickups) == 1


async def test_one_engineer_picking_up_twice_at_once_gets_the_context_twice(
    technician: Client, engineer: Client, server: ServerRuntime, account: str
) -> None:
    """A double click: both requests race, both answer with the context, one event."""
    created = await technician.create()
    results = await asyncio.gather(*(pick_up(engineer, created.id) for _ in range(10)))
    assert {r.handoff.picked_up_by.id for r in results} == {"eng-1"}
    pickups = [e for e in await logged_events(server, account) if e[1] == "PICKED_UP"]
    assert len(pickups) == 1


async def test_context_has_a_start_here_even_when_nothing_was_tried(
    technician: Client, engineer: Client
) -> None:
    created = await technician.create(steps_tried=[])
    ctx = await pick_up(engineer, created.id)
    assert ctx.problem_summary == created.problem_summary
    assert ctx.start_here.strip()


async def test_fifty_engineers_pick_up_at_once_exactly_one_wins(
    technician: Client,
    engineer: Client,
    client_for: Callable[..., Client],
    server: ServerRuntime,
    account: str,
) -> None:
    created = await technician.create(priority=pb.PRIORITY_URGENT)
    engineers = [client_for(Role.ENGINEER, f"eng-{uuid.uuid4().hex[:8]}") for _ in range(50)]
    request = esc.PickUpEscalationRequest(handoff_id=created.id)
    results = await asyncio.gather(
        *(
            e.escalations.PickUpEscalation(request, metadata=e.metadata, timeout=60)
            for e in engineers
        ),
        return_exceptions=True,
    )
    winners = [
        e.user
        for e, r in zip(engineers, results, strict=True)
        if isinstance(r, esc.PickUpEscalationResponse)
    ]
    assert len(winners) == 1, results
    (winner,) = winners
    losers = [r for r in results if not isinstance(r, esc.PickUpEscalationResponse)]
    assert len(losers) == 49
    for error in losers:
        assert isinstance(error, grpc.aio.AioRpcError), error
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert winner in (error.details() or "")
    after = await get(engineer, created.id)
    assert after.status == pb.HANDOFF_STATUS_PICKED_UP
    assert after.picked_up_by.id == winner
    pickups = [e for e in await logged_events(server, account) if e[1] == "PICKED_UP"]
    assert len(pickups) == 1


async def test_reassign_handoff_cannot_be_picked_up(technician: Client, engineer: Client) -> None:
    created = await technician.create(intent=pb.HANDOFF_INTENT_REASSIGN)
    await fails(pick_up(engineer, created.id), grpc.StatusCode.FAILED_PRECONDITION)
    await fails(context_of(engineer, created.id), grpc.StatusCode.FAILED_PRECONDITION)
    after = await get(engineer, created.id)
    assert after.status == pb.HANDOFF_STATUS_OPEN
    assert not after.HasField("picked_up_by")


async def test_cancelled_or_resolved_escalation_cannot_be_picked_up(
    technician: Client, engineer: Client
) -> None:
    cancelled = await technician.create()
    await cancel(technician, cancelled.id)
    done = await technician.create()
    await pick_up(engineer, done.id)
    await resolve(engineer, done.id)
    for handoff_id, status in (
        (cancelled.id, pb.HANDOFF_STATUS_CANCELLED),
        (done.id, pb.HANDOFF_STATUS_RESOLVED),
    ):
        await fails(pick_up(engineer, handoff_id), grpc.StatusCode.FAILED_PRECONDITION)
        assert (await get(engineer, handoff_id)).status == status


async def test_picked_up_escalation_can_no_longer_be_cancelled(
    technician: Client, engineer: Client
) -> None:
    created = await technician.create()
    await pick_up(engineer, created.id)
    await fails(cancel(technician, created.id), grpc.StatusCode.FAILED_PRECONDITION)
    assert (await get(technician, created.id)).status == pb.HANDOFF_STATUS_PICKED_UP


async def test_get_handoff_context_for_an_engineer(
    technician: Client, engineer: Client, client_for: Callable[..., Client]
) -> None:
    created = await technician.create(
        problem_summary="Outlook crashes on start",
        steps_tried=[pb.Step(description="Safe mode", outcome="works")],
    )
    await settled(engineer, created.id)
    for reader in (engineer, client_for(Role.ADMIN)):
        ctx = await context_of(reader, created.id)
        assert ctx.handoff.id == created.id
        assert ctx.problem_summary == "Outlook crashes on start"
        assert [s.description for s in ctx.whats_been_tried] == ["Safe mode"]
        assert ctx.ai_assessment.status == pb.ASSESSMENT_STATUS_READY
        assert ctx.start_here.strip()
    # Reading the context picks nothing up.
    assert (await get(engineer, created.id)).status == pb.HANDOFF_STATUS_OPEN
    assert [h.id for h in (await queue(engineer)).escalations] == [created.id]


# --- release --------------------------------------------------------------------------


async def test_holder_releases_back_to_the_queue(
    technician: Client, engineer: Client, client_for: Callable[..., Client]
) -> None:
    created = await technician.create()
    await pick_up(engineer, created.id)
    assert (await queue(engineer)).escalations == []

    released = await release(engineer, created.id)
    assert released.status == pb.HANDOFF_STATUS_OPEN
    assert not released.HasField("picked_up_by")
    assert not released.HasField("picked_up_at")
    assert [h.id for h in (await queue(engineer)).escalations] == [created.id]

    other = client_for(Role.ENGINEER, "eng-2")
    ctx = await pick_up(other, created.id)
    assert ctx.handoff.picked_up_by.id == "eng-2"
    assert (await get(engineer, created.id)).picked_up_by.id == "eng-2"


async def test_release_by_a_non_holder_is_refused(
    technician: Client, engineer: Client, client_for: Callable[..., Client]
) -> None:
    created = await technician.create()
    await pick_up(engineer, created.id)
    error = await fails(
        release(client_for(Role.ENGINEER, "eng-2"), created.id),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "only its holder, Erin Engineer (eng-1) or an admin" in (error.details() or "")
    assert "already picked up" not in (error.details() or "")
    after = await get(engineer, created.id)
    assert after.status == pb.HANDOFF_STATUS_PICKED_UP
    assert after.picked_up_by.id == "eng-1"


async def test_release_of_an_open_escalation_is_refused(
    technician: Client, engineer: Client
) -> None:
    created = await technician.create()
    await fails(release(engineer, created.id), grpc.StatusCode.FAILED_PRECONDITION)
    assert (await get(engineer, created.id)).status == pb.HANDOFF_STATUS_OPEN


async def test_admin_releases_someone_elses_escalation(
    technician: Client, engineer: Client, client_for: Callable[..., Client]
) -> None:
    created = await technician.create()
    await pick_up(engineer, created.id)
    released = await release(client_for(Role.ADMIN, "admin-1"), created.id)
    assert released.status == pb.HANDOFF_STATUS_OPEN
    assert not released.HasField("picked_up_by")
    assert [h.id for h in (await queue(engineer)).escalations] == [created.id]


# --- resolve --------------------------------------------------------------------------


async def test_holder_resolves_with_a_note(technician: Client, engineer: Client) -> None:
    created = await technician.create()
    await pick_up(engineer, created.id)
    resolved = await resolve(engineer, created.id, "Replaced the VPN profile; works now.")
    assert resolved.status == pb.HANDOFF_STATUS_RESOLVED
    assert resolved.resolution_note == "Replaced the VPN profile; works now."
    assert resolved.HasField("resolved_at")
    assert resolved.resolved_at.ToDatetime() >= resolved.picked_up_at.ToDatetime()
    assert resolved.picked_up_by.id == "eng-1"
    stored = await get(technician, created.id)
    assert stored.status == pb.HANDOFF_STATUS_RESOLVED
    assert stored.resolution_note == "Replaced the VPN profile; works now."
    # Finished: it cannot be resolved or released again.
    await fails(resolve(engineer, created.id), grpc.StatusCode.FAILED_PRECONDITION)
    await fails(release(engineer, created.id), grpc.StatusCode.FAILED_PRECONDITION)


@pytest.mark.parametrize("note", ["", "   ", "\n\t "])
async def test_resolve_needs_a_resolution_note(
    technician: Client, engineer: Client, note: str
) -> None:
    created = await technician.create()
    await pick_up(engineer, created.id)
    error = await fails(resolve(engineer, created.id, note), grpc.StatusCode.INVALID_ARGUMENT)
    assert "resolution_note" in (error.details() or "")
    after = await get(engineer, created.id)
    assert after.status == pb.HANDOFF_STATUS_PICKED_UP
    assert after.resolution_note == ""


async def test_resolve_of_an_open_escalation_is_refused(
    technician: Client, engineer: Client
) -> None:
    created = await technician.create()
    await fails(resolve(engineer, created.id), grpc.StatusCode.FAILED_PRECONDITION)
    after = await get(engineer, created.id)
    assert after.status == pb.HANDOFF_STATUS_OPEN
    assert after.resolution_note == ""


async def test_resolve_by_a_non_holder_is_refused(
    technician: Client, engineer: Client, client_for: Callable[..., Client]
) -> None:
    created = await technician.create()
    await pick_up(engineer, created.id)
    for other in (client_for(Role.ENGINEER, "eng-2"), client_for(Role.ADMIN, "admin-1")):
        error = await fails(resolve(other, created.id), grpc.StatusCode.PERMISSION_DENIED)
        assert "only its holder, Erin Engineer (eng-1), may" in (error.details() or "")
    after = await get(engineer, created.id)
    assert after.status == pb.HANDOFF_STATUS_PICKED_UP
    assert after.resolution_note == ""


# --- sequences ------------------------------------------------------------------------


async def test_every_change_takes_the_next_sequence_of_its_own_account(
    technician: Client,
    engineer: Client,
    client_for: Callable[..., Client],
    server: ServerRuntime,
    account: str,
) -> None:
    other_account = f"acct-{uuid.uuid4().hex[:10]}"
    tech_b = client_for(Role.TECHNICIAN, "tech-1", acct=other_account)
    eng_b = client_for(Role.ENGINEER, "eng-1", acct=other_account)
    eng_2 = client_for(Role.ENGINEER, "eng-2")

    a = await technician.create()
    assert a.sequence == 1
    b = await tech_b.create()
    assert b.sequence == 1  # independent of account A
    await settled(engineer, a.id)
    await settled(eng_b, b.id)
    # The background assessment is a change too.
    assert (await get(engineer, a.id)).sequence == 2
    assert (await get(eng_b, b.id)).sequence == 2

    assert (await pick_up(engineer, a.id)).handoff.sequence == 3
    assert (await pick_up(eng_b, b.id)).handoff.sequence == 3
    assert (await release(engineer, a.id)).sequence == 4
    assert (await pick_up(eng_2, a.id)).handoff.sequence == 5
    # A refused change takes no sequence.
    await fails(pick_up(engineer, a.id), grpc.StatusCode.FAILED_PRECONDITION)
    assert (await resolve(eng_2, a.id)).sequence == 6
    assert (await release(eng_b, b.id)).sequence == 4
    a2 = await technician.create(intent=pb.HANDOFF_INTENT_REASSIGN)
    assert a2.sequence == 7
    await settled(engineer, a2.id)
    assert (await cancel(technician, a2.id)).sequence == 9

    assert (await queue(engineer)).sequence == 9
    assert (await queue(eng_b)).sequence == 4
    assert await logged_events(server, account) == [
        (1, "CREATED", a.id),
        (2, "ASSESSMENT_READY", a.id),
        (3, "PICKED_UP", a.id),
        (4, "RELEASED", a.id),
        (5, "PICKED_UP", a.id),
        (6, "RESOLVED", a.id),
        (7, "CREATED", a2.id),
        (8, "ASSESSMENT_READY", a2.id),
        (9, "CANCELLED", a2.id),
    ]
    assert await logged_events(server, other_account) == [
        (1, "CREATED", b.id),
        (2, "ASSESSMENT_READY", b.id),
        (3, "PICKED_UP", b.id),
        (4, "RELEASED", b.id),
    ]
