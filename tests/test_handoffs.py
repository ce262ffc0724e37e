"""HandoffService over a real channel: create, read, list, cancel, idempotent create."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from resolutionflow.v1 import handoff_pb2 as pb
from sqlalchemy import func, select, update

from server.db.schema import EventRecord, HandoffRecord
from server.domain.types import Role
from server.runtime import ServerRuntime
from tests.support import Client, create_request, fails


async def list_all(client: Client, **filters: Any) -> list[pb.Handoff]:
    """Every handoff the client can see (one page of up to 200), newest first."""
    reply = await client.call(
        "handoffs", "ListHandoffs", pb.ListHandoffsRequest(page_size=200, **filters)
    )
    assert reply.next_page_token == ""
    return list(reply.handoffs)


async def get(client: Client, handoff_id: str) -> pb.Handoff:
    reply = await client.call("handoffs", "GetHandoff", pb.GetHandoffRequest(handoff_id=handoff_id))
    return reply.handoff


async def cancel(client: Client, handoff_id: str) -> pb.Handoff:
    reply = await client.call(
        "handoffs", "CancelHandoff", pb.CancelHandoffRequest(handoff_id=handoff_id)
    )
    return reply.handoff


async def db_count(server: ServerRuntime, model: Any, account: str) -> int:
    async with server.db.read() as s:
        value = await s.scalar(
            select(func.count()).select_from(model).where(model.account_id == account)
        )
    return int(value or 0)


# --- create ---------------------------------------------------------------------------


async def test_create_round_trips_every_field(technician: Client, account: str) -> None:
    steps = [
        pb.Step(description="Restarted the VPN client", outcome="failed"),
        pb.Step(description="Flushed DNS", outcome="no change"),
        pb.Step(description="Checked the cable"),
    ]
    created = await technician.create(
        session_id="session-42",
        intent=pb.HANDOFF_INTENT_ESCALATE,
        priority=pb.PRIORITY_HIGH,
        problem_summary="Printer on floor 3 prints blank pages",
        steps_tried=steps,
        notes="Customer is the CFO.\nCall before 5 pm.",
    )
    assert uuid.UUID(created.id)
    assert created.account_id == account
    assert created.session_id == "session-42"
    assert created.intent == pb.HANDOFF_INTENT_ESCALATE
    assert created.priority == pb.PRIORITY_HIGH
    assert created.problem_summary == "Printer on floor 3 prints blank pages"
    assert list(created.steps_tried) == steps
    assert created.notes == "Customer is the CFO.\nCall before 5 pm."
    assert (created.created_by.id, created.created_by.name) == ("tech-1", "Tina Tech")
    assert created.status == pb.HANDOFF_STATUS_OPEN
    assert created.sequence > 0
    assert created.HasField("created_at")
    assert not created.HasField("picked_up_by")
    assert not created.HasField("picked_up_at")
    assert not created.HasField("resolved_at")
    assert created.resolution_note == ""
    # What was stored is what was returned.
    stored = await get(technician, created.id)
    for name in (
        "id",
        "account_id",
        "session_id",
        "intent",
        "status",
        "priority",
        "problem_summary",
        "steps_tried",
        "notes",
        "created_by",
        "created_at",
        "sla_due_at",
    ):
        assert getattr(stored, name) == getattr(created, name), name


async def test_escalation_gets_an_sla_due_time_from_its_priority(technician: Client) -> None:
    normal = await technician.create(priority=pb.PRIORITY_NORMAL)
    urgent = await technician.create(priority=pb.PRIORITY_URGENT)
    for handoff, minutes in ((normal, 60), (urgent, 5)):
        assert handoff.HasField("sla_due_at")
        due = handoff.sla_due_at.ToDatetime(tzinfo=UTC)
        created_at = handoff.created_at.ToDatetime(tzinfo=UTC)
        assert abs(due - created_at - timedelta(minutes=minutes)) < timedelta(seconds=1)


async def test_reassign_has_no_sla_due_time(technician: Client) -> None:
    created = await technician.create(intent=pb.HANDOFF_INTENT_REASSIGN)
    assert created.intent == pb.HANDOFF_INTENT_REASSIGN
    assert created.status == pb.HANDOFF_STATUS_OPEN
    assert not created.HasField("sla_due_at")
    assert not (await get(technician, created.id)).HasField("sla_due_at")


async def test_unspecified_priority_defaults_to_normal(technician: Client) -> None:
    created = await technician.create(priority=pb.PRIORITY_UNSPECIFIED)
    assert created.priority == pb.PRIORITY_NORMAL
    due = created.sla_due_at.ToDatetime(tzinfo=UTC) - created.created_at.ToDatetime(tzinfo=UTC)
    assert abs(due - timedelta(minutes=60)) < timedelta(seconds=1)
    assert (await get(technician, created.id)).priority == pb.PRIORITY_NORMAL


# --- get and list ---------------------------------------------------------------------


async def test_get_returns_the_handoff(technician: Client, engineer: Client) -> None:
    created = await technician.create(problem_summary="Outlook keeps asking for a password")
    for client in (technician, engineer):
        got = await get(client, created.id)
        assert got.id == created.id
        assert got.problem_summary == "Outlook keeps asking for a password"


async def test_get_unknown_id_is_not_found(engineer: Client) -> None:
    await fails(get(engineer, str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND)


async def test_list_filters_by_status_intent_and_priority(
    technician: Client, engineer: Client
) -> None:
    normal = await technician.create(priority=pb.PRIORITY_NORMAL)
    urgent = await technician.create(priority=pb.PRIORITY_URGENT)
    reassign = await technician.create(intent=pb.HANDOFF_INTENT_REASSIGN, priority=pb.PRIORITY_LOW)
    cancelled = await technician.create(priority=pb.PRIORITY_HIGH)
    await cancel(technician, cancelled.id)

    def ids(handoffs: list[pb.Handoff]) -> set[str]:
        return {h.id for h in handoffs}

    everything = {normal.id, urgent.id, reassign.id, cancelled.id}
    assert ids(await list_all(engineer)) == everything
    assert ids(await list_all(engineer, status=pb.HANDOFF_STATUS_CANCELLED)) == {cancelled.id}
    assert ids(await list_all(engineer, status=pb.HANDOFF_STATUS_OPEN)) == everything - {
        cancelled.id
    }
    assert ids(await list_all(engineer, intent=pb.HANDOFF_INTENT_REASSIGN)) == {reassign.id}
    assert ids(await list_all(engineer, intent=pb.HANDOFF_INTENT_ESCALATE)) == everything - {
        reassign.id
    }
    assert ids(await list_all(engineer, priority=pb.PRIORITY_URGENT)) == {urgent.id}
    assert ids(await list_all(engineer, priority=pb.PRIORITY_LOW)) == {reassign.id}
    # Filters combine.
    assert ids(
        await list_all(engineer, status=pb.HANDOFF_STATUS_OPEN, intent=pb.HANDOFF_INTENT_ESCALATE)
    ) == {normal.id, urgent.id}
    assert (
        await list_all(engineer, status=pb.HANDOFF_STATUS_RESOLVED, priority=pb.PRIORITY_URGENT)
        == []
    )


async def test_pagination_visits_every_handoff_once_newest_first(
    technician: Client, engineer: Client
) -> None:
    created = [await technician.create(problem_summary=f"problem {i}") for i in range(5)]
    pages: list[list[str]] = []
    token = ""
    while True:
        reply = await engineer.call(
            "handoffs", "ListHandoffs", pb.ListHandoffsRequest(page_size=2, page_token=token)
        )
        pages.append([h.id for h in reply.handoffs])
        token = reply.next_page_token
        if not token:
            break
        assert len(pages) < 10, "pagination does not end"
    assert [len(p) for p in pages] == [2, 2, 1]
    seen = [handoff_id for page in pages for handoff_id in page]
    assert seen == [h.id for h in reversed(created)]


async def test_pagination_keeps_filters(technician: Client, engineer: Client) -> None:
    urgent = [await technician.create(priority=pb.PRIORITY_URGENT) for _ in range(3)]
    await technician.create(priority=pb.PRIORITY_LOW)
    first = await engineer.call(
        "handoffs",
        "ListHandoffs",
        pb.ListHandoffsRequest(page_size=2, priority=pb.PRIORITY_URGENT),
    )
    second = await engineer.call(
        "handoffs",
        "ListHandoffs",
        pb.ListHandoffsRequest(
            page_size=2, priority=pb.PRIORITY_URGENT, page_token=first.next_page_token
        ),
    )
    assert [h.id for h in (*first.handoffs, *second.handoffs)] == [h.id for h in reversed(urgent)]
    assert second.next_page_token == ""


def _token(data: str) -> str:
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "page_token",
    [
        "not-a-token",
        "%%%",
        _token('{"c": 1}'),
        _token('{"c": "2026-01-01T00:00:00+00:00", "i": "not-a-uuid"}'),
        _token('["c", "i"]'),
        # Well formed but without a time zone: refused up front, not at query time.
        _token('{"c": "2026-01-01T00:00:00", "i": "7d6c1f0e-4b7a-4c0e-9d53-2f1e8a9b0c11"}'),
    ],
)
async def test_bad_page_token_is_invalid_argument(engineer: Client, page_token: str) -> None:
    error = await fails(
        engineer.call("handoffs", "ListHandoffs", pb.ListHandoffsRequest(page_token=page_token)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "page_token" in (error.details() or "")


# --- who sees what --------------------------------------------------------------------


async def test_technician_sees_only_their_own_handoffs(
    technician: Client, engineer: Client, client_for: Callable[..., Client]
) -> None:
    other = client_for(Role.TECHNICIAN, "tech-2", name="Tom Tech")
    mine = [await technician.create(), await technician.create(intent=pb.HANDOFF_INTENT_REASSIGN)]
    theirs = await other.create(problem_summary="Tom's problem")

    assert {h.id for h in await list_all(technician)} == {h.id for h in mine}
    assert [h.id for h in await list_all(other)] == [theirs.id]
    error = await fails(get(technician, theirs.id), grpc.StatusCode.NOT_FOUND)
    assert "Tom's problem" not in (error.details() or "")
    # Nor can they cancel it; it stays open.
    await fails(cancel(technician, theirs.id), grpc.StatusCode.NOT_FOUND)
    assert (await get(other, theirs.id)).status == pb.HANDOFF_STATUS_OPEN


async def test_engineer_sees_every_handoff_of_the_account(
    technician: Client, engineer: Client, client_for: Callable[..., Client]
) -> None:
    other = client_for(Role.TECHNICIAN, "tech-2")
    ids = {
        (await technician.create()).id,
        (await other.create()).id,
        (await other.create(intent=pb.HANDOFF_INTENT_REASSIGN)).id,
    }
    assert {h.id for h in await list_all(engineer)} == ids
    for handoff_id in ids:
        assert (await get(engineer, handoff_id)).id == handoff_id


# --- cancel ---------------------------------------------------------------------------


async def test_creator_cancels_an_open_handoff(technician: Client, engineer: Client) -> None:
    created = await technician.create()
    cancelled = await cancel(technician, created.id)
    assert cancelled.status == pb.HANDOFF_STATUS_CANCELLED
    assert cancelled.HasField("cancelled_at")
    assert cancelled.sequence > created.sequence
    assert (await get(engineer, created.id)).status == pb.HANDOFF_STATUS_CANCELLED


async def test_cancel_twice_is_failed_precondition(technician: Client) -> None:
    created = await technician.create()
    first = await cancel(technician, created.id)
    await fails(cancel(technician, created.id), grpc.StatusCode.FAILED_PRECONDITION)
    again = await get(technician, created.id)
    assert again.status == pb.HANDOFF_STATUS_CANCELLED
    assert again.cancelled_at == first.cancelled_at


async def test_cancel_by_another_engineer_is_permission_denied(
    technician: Client, engineer: Client, client_for: Callable[..., Client]
) -> None:
    by_tech = await technician.create()
    by_engineer = await engineer.create()
    other_engineer = client_for(Role.ENGINEER, "eng-2")
    for handoff in (by_tech, by_engineer):
        await fails(cancel(other_engineer, handoff.id), grpc.StatusCode.PERMISSION_DENIED)
        assert (await get(engineer, handoff.id)).status == pb.HANDOFF_STATUS_OPEN
    # The engineer who created one may cancel it.
    assert (await cancel(engineer, by_engineer.id)).status == pb.HANDOFF_STATUS_CANCELLED


# --- idempotent create ----------------------------------------------------------------


async def test_same_request_id_and_body_returns_the_first_handoff(
    technician: Client, engineer: Client
) -> None:
    first = await technician.create(request_id="req-1", problem_summary="the first one")
    again = await technician.create(request_id="req-1", problem_summary="the first one")
    assert again.id == first.id
    assert again.created_at == first.created_at
    # Spellings that ask for the same handoff are the same body.
    same = await technician.create(
        request_id="req-1", problem_summary="  the first one\n", priority=pb.PRIORITY_NORMAL
    )
    assert same.id == first.id
    assert [h.id for h in await list_all(engineer)] == [first.id]


@pytest.mark.parametrize(
    "change",
    [
        {"problem_summary": "a different body"},
        {"priority": pb.PRIORITY_URGENT},
        {"session_id": "session-2"},
        {"notes": "a note added on the retry"},
        {"intent": pb.HANDOFF_INTENT_REASSIGN},
        {"steps_tried": []},
        {"steps_tried": [pb.Step(description="Restarted the VPN client", outcome="worked")]},
    ],
    ids=lambda c: "-".join(c),
)
async def test_same_request_id_with_another_body_is_already_exists(
    technician: Client, engineer: Client, server: ServerRuntime, account: str, change: Any
) -> None:
    first = await technician.create(request_id="req-1")
    error = await fails(
        technician.create(request_id="req-1", **change), grpc.StatusCode.ALREADY_EXISTS
    )
    message = error.details() or ""
    assert "request_id 'req-1'" in message and first.id in message
    assert "different request body" in message
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    violations, infos = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [v.field for v in bad.field_violations]
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
    assert violations == ["request_id"]
    assert [(i.reason, dict(i.metadata)) for i in infos] == [
        ("REQUEST_ID_REUSED", {"request_id": "req-1", "handoff_id": first.id})
    ]
    assert [h.id for h in await list_all(engineer)] == [first.id]
    assert await db_count(server, EventRecord, account) <= 2  # CREATED (+ its assessment)


async def test_a_handoff_stored_before_body_hashes_answers_a_repeat_as_before(
    technician: Client, server: ServerRuntime
) -> None:
    """Rows migrated from before the hash was kept have none: their request_id still
    returns them (what a client retrying across the upgrade expects), whatever the body."""
    first = await technician.create(request_id="legacy", problem_summary="stored long ago")
    async with server.db.write() as s:
        await s.execute(
            update(HandoffRecord).where(HandoffRecord.id == first.id).values(request_hash=None)
        )
    again = await technician.create(request_id="legacy", problem_summary="retried after")
    assert (again.id, again.problem_summary) == (first.id, "stored long ago")


@pytest.mark.parametrize("request_id", ["", None])
async def test_without_a_request_id_every_create_is_new(
    technician: Client, engineer: Client, request_id: str | None
) -> None:
    request = create_request()
    if request_id is None:
        request.ClearField("request_id")
    else:
        request.request_id = request_id
    made = [
        (await technician.handoffs.CreateHandoff(request, metadata=technician.metadata)).handoff
        for _ in range(3)
    ]
    assert len({h.id for h in made}) == 3
    assert {h.id for h in await list_all(engineer)} == {h.id for h in made}


async def test_concurrent_creates_with_one_request_id_create_one_handoff(
    technician: Client, engineer: Client, server: ServerRuntime, account: str
) -> None:
    request = create_request(request_id=f"burst-{uuid.uuid4()}")
    replies = await asyncio.gather(
        *(
            technician.handoffs.CreateHandoff(request, metadata=technician.metadata, timeout=30)
            for _ in range(20)
        )
    )
    ids = {r.handoff.id for r in replies}
    assert len(ids) == 1
    assert [h.id for h in await list_all(engineer)] == list(ids)
    assert await db_count(server, HandoffRecord, account) == 1
    async with server.db.read() as s:
        created_events = await s.scalar(
            select(func.count())
            .select_from(EventRecord)
            .where(EventRecord.account_id == account, EventRecord.type == "CREATED")
        )
    assert created_events == 1


async def test_concurrent_creates_with_one_request_id_and_different_bodies(
    technician: Client, engineer: Client, server: ServerRuntime, account: str
) -> None:
    """One body wins; every other body is refused, never answered with the winner."""
    key = f"burst-{uuid.uuid4()}"
    requests = [create_request(request_id=key, problem_summary=f"body {i}") for i in range(20)]
    replies = await asyncio.gather(
        *(
            technician.handoffs.CreateHandoff(r, metadata=technician.metadata, timeout=30)
            for r in requests
        ),
        return_exceptions=True,
    )
    won = [r.handoff for r in replies if isinstance(r, pb.CreateHandoffResponse)]
    assert len(won) == 1, replies
    refused = [r for r in replies if not isinstance(r, pb.CreateHandoffResponse)]
    assert len(refused) == 19
    for error in refused:
        assert isinstance(error, grpc.aio.AioRpcError), error
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS, error.details()
        assert "request_id" in (error.details() or "")
    (winner,) = won
    index = next(i for i, r in enumerate(replies) if isinstance(r, pb.CreateHandoffResponse))
    assert winner.problem_summary == requests[index].problem_summary
    assert [h.id for h in await list_all(engineer)] == [winner.id]
    assert await db_count(server, HandoffRecord, account) == 1


async def test_same_request_id_from_another_user_is_a_new_handoff(
    technician: Client, engineer: Client, client_for: Callable[..., Client]
) -> None:
    other = client_for(Role.TECHNICIAN, "tech-2")
    mine = await technician.create(request_id="shared-key")
    theirs = await other.create(request_id="shared-key")
    assert mine.id != theirs.id
    assert theirs.created_by.id == "tech-2"
    assert {h.id for h in await list_all(engineer)} == {mine.id, theirs.id}
