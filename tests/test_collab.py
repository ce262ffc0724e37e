"""Working an escalation together: known users, transfer, comments, history, reopen.

Every test runs on SQLite and PostgreSQL against the real server; each uses its own
account, and the isolation checks call from a second account with the same user ids.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from resolutionflow.v1 import escalation_pb2 as esc
from resolutionflow.v1 import handoff_pb2 as pb

from server.domain.policy import Scope
from server.domain.types import Role
from server.models import handoffs, search
from server.runtime import ServerRuntime
from tests.support import Client, StreamReader, settled, stream_escalations, watch_handoffs


async def fails(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value


async def users(client: Client) -> list[esc.AccountUser]:
    reply = await client.call("escalations", "ListAccountUsers", esc.ListAccountUsersRequest())
    return list(reply.users)


async def pick_up(client: Client, handoff_id: str) -> esc.HandoffContext:
    reply = await client.call(
        "escalations", "PickUpEscalation", esc.PickUpEscalationRequest(handoff_id=handoff_id)
    )
    return reply.context


async def transfer(client: Client, handoff_id: str, to: str, note: str = "") -> pb.Handoff:
    reply = await client.call(
        "escalations",
        "TransferEscalation",
        esc.TransferEscalationRequest(handoff_id=handoff_id, to_user_id=to, note=note),
    )
    return reply.handoff


async def comment(client: Client, handoff_id: str, body: str, request_id: str = "") -> pb.Comment:
    reply = await client.call(
        "handoffs",
        "AddComment",
        pb.AddCommentRequest(handoff_id=handoff_id, body=body, request_id=request_id),
    )
    return reply.comment


async def history(client: Client, handoff_id: str) -> list[pb.HandoffEvent]:
    events: list[pb.HandoffEvent] = []
    token = ""
    while True:
        reply = await client.call(
            "handoffs",
            "GetHandoffHistory",
            pb.GetHandoffHistoryRequest(handoff_id=handoff_id, page_token=token),
        )
        events.extend(reply.events)
        token = reply.next_page_token
        if not token:
            return events


async def resolve(client: Client, handoff_id: str, note: str = "fixed") -> pb.Handoff:
    reply = await client.call(
        "escalations",
        "ResolveEscalation",
        esc.ResolveEscalationRequest(handoff_id=handoff_id, resolution_note=note),
    )
    return reply.handoff


async def reopen(client: Client, handoff_id: str, reason: str = "it came back") -> pb.Handoff:
    reply = await client.call(
        "handoffs", "ReopenHandoff", pb.ReopenHandoffRequest(handoff_id=handoff_id, reason=reason)
    )
    return reply.handoff


async def started(*readers: StreamReader) -> None:
    """Until each stream has its snapshot: later changes then arrive as events."""
    for r in readers:
        await r.wait_for(lambda r: bool(r.events))


@pytest.fixture
def other_account() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


# --- known users ----------------------------------------------------------------------


async def test_known_users_are_the_accounts_engineers_and_admins(
    client_for: Callable[..., Client], technician: Client, other_account: str
) -> None:
    sam = client_for(Role.ENGINEER, "sam", name="Sam Vpn")
    ada = client_for(Role.ADMIN, "ada", name="Ada Admin")
    await technician.call("handoffs", "ListHandoffs", pb.ListHandoffsRequest())
    listed = await users(sam)  # the caller is recorded before the call is served
    await users(ada)
    listed = await users(sam)
    assert [(u.id, u.name, u.role) for u in listed] == [
        ("ada", "Ada Admin", pb.ROLE_ADMIN),
        ("sam", "Sam Vpn", pb.ROLE_ENGINEER),
    ]
    assert all(u.last_seen_at.seconds > 0 for u in listed)
    # The same user ids in another account know nobody of this one.
    stranger = client_for(Role.ADMIN, "ada", acct=other_account, name="Other Ada")
    assert [(u.id, u.name) for u in await users(stranger)] == [("ada", "Other Ada")]


async def test_a_changed_name_is_recorded_at_once(client_for: Callable[..., Client]) -> None:
    await users(client_for(Role.ENGINEER, "sam", name="Sam"))
    listed = await users(client_for(Role.ENGINEER, "sam", name="Sam Vpn"))
    assert [(u.id, u.name) for u in listed] == [("sam", "Sam Vpn")]


# --- transfer -------------------------------------------------------------------------


async def test_transfer_hands_the_escalation_to_another_engineer(
    client_for: Callable[..., Client], technician: Client, engineer: Client
) -> None:
    sam = client_for(Role.ENGINEER, "sam", name="Sam Vpn")
    await users(sam)
    h = await technician.create()
    reader = stream_escalations(sam)
    watcher = watch_handoffs(technician)
    await started(reader, watcher)
    await pick_up(engineer, h.id)
    moved = await transfer(engineer, h.id, "sam", note="Sam knows the VPN")
    assert moved.status == pb.HANDOFF_STATUS_PICKED_UP
    assert (moved.picked_up_by.id, moved.picked_up_by.name) == ("sam", "Sam Vpn")
    for r in (reader, watcher):
        await r.wait_for(lambda r: any(e.type == pb.EVENT_TYPE_TRANSFERRED for e in r.events))
        event = next(e for e in r.events if e.type == pb.EVENT_TYPE_TRANSFERRED)
        assert event.note == "Sam knows the VPN"
        assert (event.actor.id, event.previous_holder.id) == ("eng-1", "eng-1")
        assert event.handoff.picked_up_by.id == "sam"
        r.cancel()
    # The new holder works it; the old one no longer may.
    await fails(
        engineer.call(
            "escalations", "ReleaseEscalation", esc.ReleaseEscalationRequest(handoff_id=h.id)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert (await resolve(sam, h.id)).status == pb.HANDOFF_STATUS_RESOLVED


async def test_an_admin_may_transfer_what_someone_else_holds(
    client_for: Callable[..., Client], technician: Client, engineer: Client
) -> None:
    admin = client_for(Role.ADMIN, "ada")
    sam = client_for(Role.ENGINEER, "sam")
    await users(sam)
    h = await technician.create()
    await pick_up(engineer, h.id)
    assert (await transfer(admin, h.id, "sam")).picked_up_by.id == "sam"


async def test_transfer_refusals(
    client_for: Callable[..., Client],
    technician: Client,
    engineer: Client,
    other_account: str,
) -> None:
    sam = client_for(Role.ENGINEER, "sam")
    kim = client_for(Role.ENGINEER, "kim")
    await users(sam)
    await users(kim)
    h = await technician.create()
    # Not picked up yet.
    error = await fails(transfer(engineer, h.id, "sam"), grpc.StatusCode.FAILED_PRECONDITION)
    assert "picked-up" in (error.details() or "")
    await pick_up(engineer, h.id)
    # Someone who does not hold it.
    error = await fails(transfer(kim, h.id, "sam"), grpc.StatusCode.PERMISSION_DENIED)
    assert "eng-1" in (error.details() or "")
    # A user nobody has seen, and one known only in another account.
    await users(client_for(Role.ENGINEER, "far", acct=other_account))
    for unknown in ("nobody", "far"):
        error = await fails(transfer(engineer, h.id, unknown), grpc.StatusCode.NOT_FOUND)
        assert unknown in (error.details() or "")
    # A technician (known: they created the handoff).
    error = await fails(transfer(engineer, h.id, "tech-1"), grpc.StatusCode.FAILED_PRECONDITION)
    assert "technician" in (error.details() or "")
    # To the holder themself.
    await fails(transfer(engineer, h.id, "eng-1"), grpc.StatusCode.FAILED_PRECONDITION)
    # Blank target, bad id.
    await fails(transfer(engineer, h.id, " "), grpc.StatusCode.INVALID_ARGUMENT)
    await fails(transfer(engineer, "not-a-uuid", "sam"), grpc.StatusCode.INVALID_ARGUMENT)
    # Staff of another account do not see it at all.
    outsider = client_for(Role.ADMIN, "eng-1", acct=other_account)
    await fails(transfer(outsider, h.id, "sam"), grpc.StatusCode.NOT_FOUND)
    # Nothing moved.
    after = await engineer.call("handoffs", "GetHandoff", pb.GetHandoffRequest(handoff_id=h.id))
    assert after.handoff.picked_up_by.id == "eng-1"


async def test_one_holder_under_concurrent_transfers_pickups_and_releases(
    client_for: Callable[..., Client], technician: Client
) -> None:
    """Many engineers at once pick up, release and transfer one escalation. Replaying its
    events must show one holder at every step: a pickup only of a free escalation, a
    release and a transfer only from the holder of the moment."""
    team = [client_for(Role.ENGINEER, f"e{i}") for i in range(6)]
    admin = client_for(Role.ADMIN, "ada")  # releases whoever holds it: the mix has releases
    for member in team:
        await users(member)
    h = await technician.create()
    rng = random.Random(18)

    async def act(member: Client) -> None:
        choice = rng.choice(("pickup", "release", "transfer", "transfer"))
        try:
            if choice == "pickup":
                await pick_up(member, h.id)
            elif choice == "release":
                await member.call(
                    "escalations",
                    "ReleaseEscalation",
                    esc.ReleaseEscalationRequest(handoff_id=h.id),
                )
            else:
                await transfer(member, h.id, rng.choice(team).user)
        except grpc.aio.AioRpcError as e:
            assert e.code() in (
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.PERMISSION_DENIED,
            ), e.details()

    async def release_as_admin() -> None:
        try:
            await admin.call(
                "escalations", "ReleaseEscalation", esc.ReleaseEscalationRequest(handoff_id=h.id)
            )
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e.details()

    for round_ in range(8):
        # Someone holds it as the round starts (unless a pickup is refused: it is held),
        # so the round's transfers have something to move; every other round an admin
        # releases it in the middle of them.
        try:
            await pick_up(team[round_ % len(team)], h.id)
        except grpc.aio.AioRpcError as refused:
            assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.details()
        racing = [act(m) for m in team for _ in range(2)]
        if round_ % 2:
            racing.append(release_as_admin())
        await asyncio.gather(*racing)
    events = await history(team[0], h.id)
    holder: str | None = None
    kinds = {pb.EVENT_TYPE_PICKED_UP: 0, pb.EVENT_TYPE_RELEASED: 0, pb.EVENT_TYPE_TRANSFERRED: 0}
    for e in events:
        if e.type == pb.EVENT_TYPE_PICKED_UP:
            assert holder is None
            holder = e.handoff.picked_up_by.id
        elif e.type == pb.EVENT_TYPE_RELEASED:
            assert holder is not None
            holder = None
        elif e.type == pb.EVENT_TYPE_TRANSFERRED:
            assert holder == e.previous_holder.id
            assert e.handoff.picked_up_by.id != holder
            holder = e.handoff.picked_up_by.id
        if e.type in kinds:
            kinds[e.type] += 1
            assert (e.handoff.picked_up_by.id or None) == holder
    assert all(kinds.values()), kinds  # the mix really happened
    now = await team[0].call("handoffs", "GetHandoff", pb.GetHandoffRequest(handoff_id=h.id))
    assert (now.handoff.picked_up_by.id or None) == holder
    assert [e.sequence for e in events] == sorted(e.sequence for e in events)


# --- comments -------------------------------------------------------------------------


async def test_comments_are_live_on_both_sides_and_in_order(
    technician: Client, engineer: Client
) -> None:
    h = await technician.create()
    queue = stream_escalations(engineer)
    own = watch_handoffs(technician)
    await started(queue, own)
    first = await comment(engineer, h.id, "Which VPN client version?")
    second = await comment(technician, h.id, "5.2, on Windows 11\nand it used to work")
    assert (first.author.id, first.author_role) == ("eng-1", pb.ROLE_ENGINEER)
    assert (second.author.id, second.author_role) == ("tech-1", pb.ROLE_TECHNICIAN)
    for r in (queue, own):
        await r.wait_for(
            lambda r: len([e for e in r.events if e.type == pb.EVENT_TYPE_COMMENTED]) == 2
        )
        bodies = [e.comment.body for e in r.events if e.type == pb.EVENT_TYPE_COMMENTED]
        assert bodies == ["Which VPN client version?", "5.2, on Windows 11\nand it used to work"]
        r.cancel()
    comments = [e.comment for e in await history(technician, h.id) if e.comment.id]
    assert [c.id for c in comments] == [first.id, second.id]


async def test_a_retried_comment_is_added_once(technician: Client, engineer: Client) -> None:
    h = await technician.create()
    key = str(uuid.uuid4())
    results = await asyncio.gather(*(comment(engineer, h.id, "once", key) for _ in range(5)))
    assert len({c.id for c in results}) == 1
    events = await history(engineer, h.id)
    assert len([e for e in events if e.type == pb.EVENT_TYPE_COMMENTED]) == 1


async def test_comment_limits_and_isolation(
    client_for: Callable[..., Client], technician: Client, engineer: Client, other_account: str
) -> None:
    h = await technician.create()
    for body in ("", "   ", "x" * 10_001, "bell\x07"):
        await fails(comment(engineer, h.id, body), grpc.StatusCode.INVALID_ARGUMENT)
    await comment(engineer, h.id, "x" * 10_000)
    # Another technician of the account, and anyone of another account, see nothing.
    strangers = [client_for(Role.TECHNICIAN, "tech-2")] + [
        client_for(role, user, acct=other_account)
        for role, user in ((Role.TECHNICIAN, "tech-1"), (Role.ENGINEER, "eng-1"), (Role.ADMIN, "a"))
    ]
    for stranger in strangers:
        await fails(comment(stranger, h.id, "hello?"), grpc.StatusCode.NOT_FOUND)
        await fails(history(stranger, h.id), grpc.StatusCode.NOT_FOUND)
    # Nor do their streams carry this account's comments.
    outsider = stream_escalations(client_for(Role.ENGINEER, "eng-1", acct=other_account))
    await outsider.wait_for(lambda r: bool(r.events))
    await comment(engineer, h.id, "secret remark")
    # Every other new kind of event, in this account, before the outsider's marker.
    sam = client_for(Role.ENGINEER, "sam")
    await users(sam)
    await pick_up(engineer, h.id)
    await transfer(engineer, h.id, "sam")
    await resolve(sam, h.id)
    await reopen(technician, h.id)
    # A later event of the outsider's own account marks how far their stream has come.
    await client_for(Role.TECHNICIAN, "tech-1", acct=other_account).create()
    await outsider.wait_for(lambda r: any(e.type == pb.EVENT_TYPE_CREATED for e in r.events))
    assert [e.type for e in outsider.events] == [pb.EVENT_TYPE_SNAPSHOT, pb.EVENT_TYPE_CREATED]
    outsider.cancel()


# --- history --------------------------------------------------------------------------


async def test_history_lists_every_event_and_survives_retention(
    server: ServerRuntime, client_for: Callable[..., Client], technician: Client, engineer: Client
) -> None:
    sam = client_for(Role.ENGINEER, "sam")
    await users(sam)
    h = await technician.create()
    await settled(technician, h.id)
    await pick_up(engineer, h.id)
    await comment(engineer, h.id, "looking")
    await transfer(engineer, h.id, "sam", "yours")
    await resolve(sam, h.id, "reinstalled the client")
    expected = [
        pb.EVENT_TYPE_CREATED,
        pb.EVENT_TYPE_ASSESSMENT_READY,
        pb.EVENT_TYPE_PICKED_UP,
        pb.EVENT_TYPE_COMMENTED,
        pb.EVENT_TYPE_TRANSFERRED,
        pb.EVENT_TYPE_RESOLVED,
    ]
    before = await history(technician, h.id)
    assert [e.type for e in before] == expected
    # Past the live log's retention: the live log no longer has them, the history does.
    later = server.core.clock() + timedelta(seconds=server.settings.event_retention_seconds + 1)
    original = server.core.clock
    server.core.clock = lambda: later
    try:
        await server.prune_events()
    finally:
        server.core.clock = original
    after = await history(engineer, h.id)
    assert after == before
    # New events continue it, from both places in order.
    await comment(technician, h.id, "thanks")
    assert [e.type for e in await history(engineer, h.id)] == [
        *expected,
        pb.EVENT_TYPE_COMMENTED,
    ]


async def test_history_pages_follow_on(technician: Client, engineer: Client) -> None:
    h = await technician.create(notes="n" * 9_000)
    for i in range(120):
        await comment(engineer, h.id, f"{i} " + "c" * 9_000)
    first = await engineer.call(
        "handoffs", "GetHandoffHistory", pb.GetHandoffHistoryRequest(handoff_id=h.id)
    )
    assert first.next_page_token and first.ByteSize() <= 1024 * 1024
    events = await history(engineer, h.id)
    comments = [e.comment.body.split()[0] for e in events if e.comment.id]
    assert comments == [str(i) for i in range(120)]
    await fails(
        engineer.call(
            "handoffs",
            "GetHandoffHistory",
            pb.GetHandoffHistoryRequest(handoff_id=h.id, page_token="garbage"),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


# --- reopen ---------------------------------------------------------------------------


async def test_reopen_puts_it_back_in_the_queue_with_a_fresh_clock(
    server: ServerRuntime, technician: Client, engineer: Client
) -> None:
    h = await technician.create()
    await pick_up(engineer, h.id)
    done = await resolve(engineer, h.id)
    reader = stream_escalations(engineer)
    await started(reader)
    back = await reopen(technician, h.id, "the VPN drops again")
    assert back.status == pb.HANDOFF_STATUS_OPEN
    assert not back.picked_up_by.id and not back.resolution_note
    assert back.sla_due_at.ToDatetime() > h.sla_due_at.ToDatetime()
    assert back.sla_due_at.ToDatetime() > done.resolved_at.ToDatetime()
    await reader.wait_for(lambda r: any(e.type == pb.EVENT_TYPE_REOPENED for e in r.events))
    event = next(e for e in reader.events if e.type == pb.EVENT_TYPE_REOPENED)
    assert (event.note, event.actor.id) == ("the VPN drops again", "tech-1")
    reader.cancel()
    queue = await engineer.call("escalations", "ListEscalations", esc.ListEscalationsRequest())
    assert [e.id for e in queue.escalations] == [h.id]
    # It can be worked again, and its history holds both rounds.
    await pick_up(engineer, h.id)
    types = [e.type for e in await history(technician, h.id)]
    assert types.count(pb.EVENT_TYPE_PICKED_UP) == 2 and pb.EVENT_TYPE_REOPENED in types


async def test_reopen_refusals(
    server: ServerRuntime,
    client_for: Callable[..., Client],
    technician: Client,
    engineer: Client,
    other_account: str,
) -> None:
    h = await technician.create()
    await fails(reopen(technician, h.id), grpc.StatusCode.FAILED_PRECONDITION)  # still open
    await pick_up(engineer, h.id)
    await resolve(engineer, h.id)
    await fails(reopen(technician, h.id, " "), grpc.StatusCode.INVALID_ARGUMENT)
    await fails(reopen(engineer, h.id), grpc.StatusCode.PERMISSION_DENIED)  # not the creator
    await fails(reopen(client_for(Role.TECHNICIAN, "tech-2"), h.id), grpc.StatusCode.NOT_FOUND)
    for role in Role:
        outsider = client_for(role, "tech-1", acct=other_account)
        await fails(reopen(outsider, h.id), grpc.StatusCode.NOT_FOUND)
    # After the window, even the creator may not.
    later = server.core.clock() + timedelta(seconds=server.settings.reopen_window_seconds + 1)
    original = server.core.clock
    server.core.clock = lambda: later
    try:
        error = await fails(reopen(technician, h.id), grpc.StatusCode.FAILED_PRECONDITION)
    finally:
        server.core.clock = original
    assert "window" in (error.details() or "")
    # An admin may, within it.
    assert (await reopen(client_for(Role.ADMIN, "ada"), h.id)).status == pb.HANDOFF_STATUS_OPEN


# --- filters --------------------------------------------------------------------------


def narrowed_stream(client: Client, **fields: Any) -> StreamReader:
    request = esc.StreamEscalationsRequest(**fields)
    return StreamReader(client.escalations.StreamEscalations(request, metadata=client.metadata))


async def test_queue_filtered_by_priority(technician: Client, engineer: Client) -> None:
    low = await technician.create(priority=pb.PRIORITY_LOW)
    high = await technician.create(priority=pb.PRIORITY_HIGH)
    urgent = await technician.create(priority=pb.PRIORITY_URGENT)
    reader = narrowed_stream(engineer, priorities=[pb.PRIORITY_HIGH, pb.PRIORITY_URGENT])
    await reader.wait_for(lambda r: bool(r.events))
    assert reader.events[0].type == pb.EVENT_TYPE_SNAPSHOT
    assert {h.id for h in reader.events[0].snapshot} == {high.id, urgent.id}
    await technician.create(priority=pb.PRIORITY_LOW)
    later = await technician.create(priority=pb.PRIORITY_URGENT)
    await comment(engineer, low.id, "not for this stream")
    await comment(engineer, high.id, "for this stream")
    await reader.wait_for(lambda r: any(e.type == pb.EVENT_TYPE_COMMENTED for e in r.events))
    # Assessments of the matching escalations come too, at their own pace.
    assert {e.handoff.id for e in reader.events[1:]} <= {high.id, urgent.id, later.id}
    assert [
        (e.type, e.handoff.id)
        for e in reader.events[1:]
        if e.type != pb.EVENT_TYPE_ASSESSMENT_READY
    ] == [(pb.EVENT_TYPE_CREATED, later.id), (pb.EVENT_TYPE_COMMENTED, high.id)]
    reader.cancel()
    bad = narrowed_stream(engineer, priorities=[99])
    await bad.wait_done()
    assert bad.error is not None and bad.error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_queue_filtered_to_what_i_hold(
    client_for: Callable[..., Client], technician: Client, engineer: Client
) -> None:
    sam = client_for(Role.ENGINEER, "sam")
    await users(sam)
    a, b, c, d = [await technician.create() for _ in range(4)]
    await pick_up(engineer, a.id)
    await pick_up(engineer, b.id)
    reader = narrowed_stream(engineer, held_by_me=True)
    await reader.wait_for(lambda r: bool(r.events))
    assert {h.id for h in reader.events[0].snapshot} == {a.id, b.id}
    await pick_up(engineer, c.id)
    await transfer(engineer, b.id, "sam")  # leaves me: shown, so a client drops it
    await pick_up(sam, d.id)  # never mine: not shown
    await engineer.call(
        "escalations", "ReleaseEscalation", esc.ReleaseEscalationRequest(handoff_id=a.id)
    )
    await resolve(engineer, c.id)
    await reader.wait_for(lambda r: any(e.type == pb.EVENT_TYPE_RESOLVED for e in r.events))
    assert [
        (e.type, e.handoff.id)
        for e in reader.events[1:]
        if e.type != pb.EVENT_TYPE_ASSESSMENT_READY
    ] == [
        (pb.EVENT_TYPE_PICKED_UP, c.id),
        (pb.EVENT_TYPE_TRANSFERRED, b.id),
        (pb.EVENT_TYPE_RELEASED, a.id),
        (pb.EVENT_TYPE_RESOLVED, c.id),
    ]
    reader.cancel()


# --- metrics --------------------------------------------------------------------------


async def test_metrics_count_transfers_comments_and_reopens(
    client_for: Callable[..., Client], technician: Client, engineer: Client
) -> None:
    sam = client_for(Role.ENGINEER, "sam")
    await users(sam)
    first, second = await technician.create(), await technician.create()
    await pick_up(engineer, first.id)
    await transfer(engineer, first.id, "sam")
    for body in ("one", "two", "three"):
        await comment(technician, first.id, body)
    await resolve(sam, first.id)
    await reopen(technician, first.id)
    await pick_up(engineer, second.id)
    await resolve(engineer, second.id)
    reply = await engineer.call(
        "escalations", "GetEscalationMetrics", esc.GetEscalationMetricsRequest()
    )
    c = reply.metrics.collaboration
    assert (c.transfers, c.comments, c.reopened) == (1, 3, 1)
    assert c.reopen_rate == 0.5 and c.comments_per_escalation == 1.5


# --- what fixed it last time ----------------------------------------------------------


async def test_past_fixes_of_several_handoffs_read_together_each_in_its_own_account(
    server: ServerRuntime,
    client_for: Callable[..., Client],
    technician: Client,
    engineer: Client,
    account: str,
) -> None:
    """The assessment worker reads the past fixes of a bulk of handoffs in one statement:
    each gets what one search of its own would give, from its own account only."""
    other = f"{account}-other"
    other_tech = client_for(Role.TECHNICIAN, "tech-1", acct=other)
    other_eng = client_for(Role.ENGINEER, "eng-1", acct=other)

    async def solved(tech: Client, eng: Client, summary: str, note: str) -> pb.Handoff:
        h = await tech.create(problem_summary=summary, steps_tried=[])
        await pick_up(eng, h.id)
        return await resolve(eng, h.id, note)

    vpn = await solved(technician, engineer, "VPN client disconnects every few minutes", "VPN")
    printer = await solved(technician, engineer, "Printer prints blank pages", "Toner")
    theirs = await solved(other_tech, other_eng, "VPN client disconnects on Wi-Fi", "Theirs")
    asked = [
        (account, "The VPN disconnects again"),
        (other, "VPN disconnects on the Wi-Fi"),
        (account, "Blank pages from the printer"),
        (account, "!!"),  # no words to search by
    ]
    tech = {account: technician, other: other_tech}
    made = [
        (acct, await tech[acct].create(problem_summary=summary, steps_tried=[]))
        for acct, summary in asked
    ]
    async with server.db.read() as s:
        bulk = [await handoffs.get(s, Scope(acct, None), h.id) for acct, h in made]
    async with server.db.query() as conn:
        found = await search.similar_resolved_many(conn, bulk, 3)
        alone = {h.id: await search.similar_resolved(conn, h, 3) for h in bulk}
    ids = {handoff_id: [h.id for h in fixes] for handoff_id, fixes in found.items()}
    assert ids == {
        bulk[0].id: [vpn.id],
        bulk[1].id: [theirs.id],
        bulk[2].id: [printer.id],
        bulk[3].id: [],
    }
    assert found == alone


async def test_the_context_shows_what_fixed_similar_escalations(
    client_for: Callable[..., Client], technician: Client, engineer: Client, account: str
) -> None:
    async def solved(client: Client, summary: str, note: str) -> pb.Handoff:
        h = await client.create(problem_summary=summary, steps_tried=[])
        await pick_up(engineer if client is technician else outsider_eng, h.id)
        return await resolve(engineer if client is technician else outsider_eng, h.id, note)

    outsider_eng = client_for(Role.ENGINEER, "eng-1", acct=f"{account}-other")
    outsider_tech = client_for(Role.TECHNICIAN, "tech-1", acct=f"{account}-other")
    vpn = await solved(technician, "VPN client disconnects every few minutes", "Reinstalled VPN")
    await solved(technician, "Printer prints blank pages", "Replaced the toner")
    await solved(outsider_tech, "VPN client disconnects on Wi-Fi", "Other account's secret")
    new = await technician.create(
        problem_summary="The VPN disconnects again and again", steps_tried=[]
    )
    context = await pick_up(engineer, new.id)
    assert [h.id for h in context.similar_resolved] == [vpn.id]
    assert context.similar_resolved[0].resolution_note == "Reinstalled VPN"
    assert context.similar_resolved[0].picked_up_by.id == "eng-1"
    # Reopened, it is nobody's fix any more.
    await reopen(technician, vpn.id)
    again = await engineer.call(
        "escalations", "GetHandoffContext", esc.GetHandoffContextRequest(handoff_id=new.id)
    )
    assert list(again.context.similar_resolved) == []
    # Words that are query syntax elsewhere are only words here.
    odd = await technician.create(problem_summary='VPN "NEAR(x)" OR * - ^ : ( ) & | !')
    await pick_up(engineer, odd.id)


async def test_the_assessment_suggests_what_fixed_the_closest_one(
    client_for: Callable[..., Client], technician: Client, engineer: Client, account: str
) -> None:
    """The rule-based assessment cites the account's closest resolved escalation; another
    account's, however close, is never offered."""
    outsider_tech = client_for(Role.TECHNICIAN, "tech-1", acct=f"{account}-other")
    outsider_eng = client_for(Role.ENGINEER, "eng-1", acct=f"{account}-other")
    theirs = await outsider_tech.create(problem_summary="Outlook crashes when opening calendar")
    await pick_up(outsider_eng, theirs.id)
    await resolve(outsider_eng, theirs.id, "Other account's secret fix")
    mine = await technician.create(problem_summary="Outlook crashes opening a shared calendar")
    await pick_up(engineer, mine.id)
    mine = await resolve(engineer, mine.id, "Removed the corrupt calendar cache")
    reader = stream_escalations(engineer)
    await started(reader)
    new = await technician.create(problem_summary="Outlook crashes on the calendar again")
    await reader.wait_for(
        lambda r: any(
            e.type == pb.EVENT_TYPE_ASSESSMENT_READY and e.handoff.id == new.id for e in r.events
        )
    )
    reader.cancel()
    ready = next(e.handoff for e in reader.events if e.type == pb.EVENT_TYPE_ASSESSMENT_READY)
    day = mine.resolved_at.ToDatetime().date().isoformat()
    assert ready.assessment.suggested_first_step == (
        f"A similar escalation (#{mine.id[:8]}, resolved {day}) was fixed by: "
        "Removed the corrupt calendar cache"
    )
    assert "secret" not in ready.assessment.summary
    # An account with only the other account's fix gets the rule-based step.
    lonely = client_for(Role.TECHNICIAN, "tech-2", acct=f"{account}-third")
    watcher = stream_escalations(client_for(Role.ENGINEER, "eng-9", acct=f"{account}-third"))
    await started(watcher)
    await lonely.create(problem_summary="Outlook crashes when opening calendar")
    await watcher.wait_for(
        lambda r: any(e.type == pb.EVENT_TYPE_ASSESSMENT_READY for e in r.events)
    )
    watcher.cancel()
    alone = next(e.handoff for e in watcher.events if e.type == pb.EVENT_TYPE_ASSESSMENT_READY)
    assert "similar escalation" not in alone.assessment.suggested_first_step
    assert "secret" not in alone.assessment.summary
