"""A large open queue: every field at its limit, 80 open escalations (about 6 MB).

No message the server sends may exceed 1 MiB, whatever the data, so that every default
gRPC client (4 MiB receive limit) gets the queue: streams split their snapshot into parts
on one cursor, lists are paged by bytes as well as by count. Every client surface still
presents one snapshot: the Python client, ``resolutionflow watch``, the gateway's SSE.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from resolutionflow.v1 import escalation_pb2 as esc
from resolutionflow.v1 import escalation_pb2_grpc, handoff_pb2_grpc
from resolutionflow.v1 import handoff_pb2 as pb

from clients import AsyncClient, resuming_stream
from server.api import convert
from server.domain import rules
from server.domain.types import Role
from server.runtime import ServerRuntime
from tests.gateway_support import SSEReader, bearer, event_json
from tests.processes import REPO
from tests.support import JWT_SECRET, Client, token, wait_until

MIB = 1024 * 1024
OPEN = 80
SNAPSHOT_TYPES = (pb.EVENT_TYPE_SNAPSHOT, pb.EVENT_TYPE_RESET)
STREAM_ESCALATIONS = "/resolutionflow.v1.EscalationService/StreamEscalations"
WATCH_HANDOFFS = "/resolutionflow.v1.HandoffService/WatchHandoffs"
LIST_ESCALATIONS = "/resolutionflow.v1.EscalationService/ListEscalations"
LIST_HANDOFFS = "/resolutionflow.v1.HandoffService/ListHandoffs"


def maxed_request(n: int, char: str = "x") -> pb.CreateHandoffRequest:
    """A create with every field at its documented limit."""
    return pb.CreateHandoffRequest(
        request_id=f"{n:04d}-".ljust(rules.MAX_ID, "r"),
        session_id=f"{n:04d}-".ljust(rules.MAX_ID, "s"),
        intent=pb.HANDOFF_INTENT_ESCALATE,
        priority=[pb.PRIORITY_URGENT, pb.PRIORITY_HIGH, pb.PRIORITY_NORMAL, pb.PRIORITY_LOW][n % 4],
        problem_summary=f"problem {n} ".ljust(rules.MAX_SUMMARY, char),
        steps_tried=[
            pb.Step(
                description=f"step {i} ".ljust(rules.MAX_STEP_DESCRIPTION, char),
                outcome="".ljust(rules.MAX_STEP_OUTCOME, char),
            )
            for i in range(rules.MAX_STEPS)
        ],
        notes="".ljust(rules.MAX_NOTES, char),
    )


@dataclass
class BigQueue:
    account: str
    engineer: Client
    ids: list[str]  # queue order: most urgent first, then oldest
    sequence: int  # the account's head once everything settled


@pytest.fixture(scope="module")
async def big(server: ServerRuntime) -> BigQueue:
    account = f"big-{uuid.uuid4().hex[:10]}"
    # User ids and names at their limit too (they are in every handoff).
    tech_id, eng_id = "t".ljust(128, "t"), "e".ljust(128, "e")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        tech = Client(
            channel, token(account, tech_id, Role.TECHNICIAN, "T" * 128), account, tech_id
        )
        slots = asyncio.Semaphore(4)

        async def one(n: int) -> pb.Handoff:
            async with slots:
                return await tech.create(**_fields(maxed_request(n)))

        created = await asyncio.gather(*(one(n) for n in range(OPEN)))
        eng = Client(channel, token(account, eng_id, Role.ENGINEER, "E" * 128), account, eng_id)

        async def assessed() -> bool:
            queue = await server.core.list_escalations(_caller(account))
            return all(h.assessment.status.value != "PENDING" for h in queue.handoffs)

        await wait_until(assessed, timeout=60, what="assessments recorded")
        queue = await server.core.list_escalations(_caller(account))
    assert {h.id for h in queue.handoffs} == {h.id for h in created}
    assert len(maxed_request(0).SerializeToString()) > 70_000
    return BigQueue(account, eng, [h.id for h in queue.handoffs], queue.sequence)


def _fields(request: pb.CreateHandoffRequest) -> dict[str, Any]:
    return {f.name: v for f, v in request.ListFields()}


def _caller(account: str) -> Any:
    from server.domain.types import Caller

    return Caller(user_id="admin", account_id=account, role=Role.ADMIN, name="Admin")


def metadata(account: str, role: Role = Role.ENGINEER, user: str = "eng") -> Any:
    return (("authorization", f"Bearer {token(account, user, role, name=user)}"),)


@pytest.fixture
async def default_channel(server: ServerRuntime) -> AsyncIterator[grpc.aio.Channel]:
    """A channel with every option at gRPC's default (a 4 MiB receive limit)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


async def raw_snapshot(
    channel: grpc.aio.Channel, method: str, request: Any, md: Any
) -> list[bytes]:
    """The raw messages of a stream up to the last part of its snapshot."""
    call = channel.unary_stream(
        method, request_serializer=lambda r: r.SerializeToString(), response_deserializer=None
    )(request, metadata=md)
    parts: list[bytes] = []
    try:
        async for data in call:
            parts.append(data)
            event = pb.HandoffEvent.FromString(data)
            assert event.type in SNAPSHOT_TYPES
            if not event.snapshot_continues:
                return parts
    finally:
        call.cancel()
    raise AssertionError("the stream ended inside its snapshot")


def check_parts(parts: list[bytes], ids: list[str], sequence: int, kind: int) -> None:
    assert len(parts) > 1
    assert all(len(p) <= MIB for p in parts), [len(p) for p in parts]
    events = [pb.HandoffEvent.FromString(p) for p in parts]
    assert [e.snapshot_continues for e in events] == [True] * (len(parts) - 1) + [False]
    assert {e.sequence for e in events} == {sequence}
    assert {e.type for e in events} == {kind}
    assert [h.id for e in events for h in e.snapshot] == ids


async def test_stream_snapshot_is_split_into_parts_on_one_cursor(
    big: BigQueue, default_channel: grpc.aio.Channel
) -> None:
    md = metadata(big.account)
    parts = await raw_snapshot(
        default_channel, STREAM_ESCALATIONS, esc.StreamEscalationsRequest(), md
    )
    check_parts(parts, big.ids, big.sequence, pb.EVENT_TYPE_SNAPSHOT)
    # WatchHandoffs: the same open handoffs, oldest first.
    parts = await raw_snapshot(default_channel, WATCH_HANDOFFS, pb.WatchHandoffsRequest(), md)
    events = [pb.HandoffEvent.FromString(p) for p in parts]
    check_parts(parts, [h.id for e in events for h in e.snapshot], big.sequence, 1)
    assert sorted(h.id for e in events for h in e.snapshot) == sorted(big.ids)


async def test_reset_snapshot_is_split_too(
    big: BigQueue, default_channel: grpc.aio.Channel
) -> None:
    ahead = esc.StreamEscalationsRequest(after_sequence=big.sequence + 1000)
    parts = await raw_snapshot(default_channel, STREAM_ESCALATIONS, ahead, metadata(big.account))
    check_parts(parts, big.ids, big.sequence, pb.EVENT_TYPE_RESET)
    assert all(pb.HandoffEvent.FromString(p).reset_reason for p in parts)


async def test_snapshot_parts_then_exactly_the_events_after_them(
    server: ServerRuntime, default_channel: grpc.aio.Channel
) -> None:
    """Invariant 3 across parts: a new escalation committed right after the snapshot
    arrives once, after the last part."""
    account = f"big-{uuid.uuid4().hex[:10]}"
    tech = Client(default_channel, token(account, "t", Role.TECHNICIAN, "T"), account, "t")
    for n in range(20):
        await tech.create(**_fields(maxed_request(n)))
    call = default_channel.unary_stream(
        STREAM_ESCALATIONS,
        request_serializer=lambda r: r.SerializeToString(),
        response_deserializer=None,
    )(esc.StreamEscalationsRequest(), metadata=metadata(account))
    messages: list[bytes] = []
    late: pb.Handoff | None = None
    try:
        async for data in call:
            assert len(data) <= MIB
            messages.append(data)
            event = pb.HandoffEvent.FromString(data)
            if len(messages) == 1:
                late = await tech.create(problem_summary="created while the snapshot is sent")
            if event.type == pb.EVENT_TYPE_CREATED and late and event.handoff.id == late.id:
                break
    finally:
        call.cancel()
    events = [pb.HandoffEvent.FromString(m) for m in messages]
    snapshot = [e for e in events if e.type == pb.EVENT_TYPE_SNAPSHOT]
    assert len(snapshot) > 1 and not snapshot[-1].snapshot_continues
    seen = [h.id for e in snapshot for h in e.snapshot] + [
        e.handoff.id for e in events if e.type == pb.EVENT_TYPE_CREATED
    ]
    assert len(seen) == len(set(seen)) == 21
    after = [e.sequence for e in events[len(snapshot) :] if e.type != pb.EVENT_TYPE_HEARTBEAT]
    assert after == sorted(after) and after[0] > snapshot[0].sequence


async def test_list_escalations_pages_by_bytes(
    big: BigQueue, default_channel: grpc.aio.Channel
) -> None:
    md = metadata(big.account)
    raw = default_channel.unary_unary(
        LIST_ESCALATIONS,
        request_serializer=lambda r: r.SerializeToString(),
        response_deserializer=None,
    )
    request = esc.ListEscalationsRequest()
    pages: list[esc.ListEscalationsResponse] = []
    while True:
        data = await raw(request, metadata=md, timeout=30)
        assert len(data) <= MIB
        pages.append(esc.ListEscalationsResponse.FromString(data))
        if not pages[-1].next_page_token:
            break
        request.page_token = pages[-1].next_page_token
    assert len(pages) > 1
    assert [h.id for p in pages for h in p.escalations] == big.ids
    assert {p.sequence for p in pages} == {big.sequence}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(esc.ListEscalationsRequest(page_token="bogus"), metadata=md, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_handoffs_pages_by_bytes(
    big: BigQueue, default_channel: grpc.aio.Channel
) -> None:
    md = metadata(big.account)
    raw = default_channel.unary_unary(
        LIST_HANDOFFS,
        request_serializer=lambda r: r.SerializeToString(),
        response_deserializer=None,
    )
    request = pb.ListHandoffsRequest(page_size=200)
    ids: list[str] = []
    pages = 0
    while True:
        data = await raw(request, metadata=md, timeout=30)
        assert len(data) <= MIB
        page = pb.ListHandoffsResponse.FromString(data)
        pages += 1
        ids += [h.id for h in page.handoffs]
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert pages > 1
    assert len(ids) == len(set(ids)) == OPEN
    assert set(ids) == set(big.ids)


async def test_every_message_fits_a_client_limited_to_one_mib(
    big: BigQueue, server: ServerRuntime
) -> None:
    """The bound itself, as a client enforces it: a 1 MiB receive limit gets everything."""
    options = [("grpc.max_receive_message_length", MIB)]
    md = metadata(big.account)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as ch:
        escalations = escalation_pb2_grpc.EscalationServiceStub(ch)
        handoffs = handoff_pb2_grpc.HandoffServiceStub(ch)
        page = await escalations.ListEscalations(esc.ListEscalationsRequest(), metadata=md)
        assert page.next_page_token
        listed = await handoffs.ListHandoffs(pb.ListHandoffsRequest(page_size=200), metadata=md)
        assert listed.next_page_token
        for call in (
            escalations.StreamEscalations(esc.StreamEscalationsRequest(), metadata=md),
            handoffs.WatchHandoffs(pb.WatchHandoffsRequest(), metadata=md),
        ):
            ids = []
            async for event in call:
                ids += [h.id for h in event.snapshot]
                if not event.snapshot_continues:
                    break
            call.cancel()
            assert sorted(ids) == sorted(big.ids)


async def first_of(stream: Any) -> pb.HandoffEvent:
    """The first thing a stream yields; the stream is closed after it."""
    try:
        event: pb.HandoffEvent = await asyncio.wait_for(anext(stream), 60)
        return event
    finally:
        await stream.aclose()


def _engineer_token(big: BigQueue) -> str:
    return token(big.account, "eng-py", Role.ENGINEER, name="Py")


async def test_python_client_presents_one_snapshot(big: BigQueue, server: ServerRuntime) -> None:
    target = f"127.0.0.1:{server.port}"
    async with AsyncClient(target, token=_engineer_token(big)) as client:
        first = await first_of(client.stream_escalations())
        assert first.type == pb.EVENT_TYPE_SNAPSHOT and not first.snapshot_continues
        assert first.sequence == big.sequence
        assert [h.id for h in first.snapshot] == big.ids
        first = await first_of(client.stream_escalations(after=big.sequence + 1000))
        assert first.type == pb.EVENT_TYPE_RESET
        assert [h.id for h in first.snapshot] == big.ids
        first = await first_of(client.watch_handoffs())
        assert sorted(h.id for h in first.snapshot) == sorted(big.ids)
        queue = await client.list_escalations()
        assert [h.id for h in queue.escalations] == big.ids
        assert queue.sequence == big.sequence and not queue.next_page_token


async def test_a_stream_broken_mid_snapshot_resumes_from_the_old_cursor(
    big: BigQueue, default_channel: grpc.aio.Channel
) -> None:
    """The cursor never moves to the snapshot's sequence before its last part is in."""
    md = metadata(big.account)
    opened: list[int | None] = []

    async def open_stream(after: int | None) -> AsyncIterator[pb.HandoffEvent]:
        opened.append(after)
        request = esc.StreamEscalationsRequest()
        if after is not None:
            request.after_sequence = after
        call = default_channel.unary_stream(
            STREAM_ESCALATIONS,
            request_serializer=lambda r: r.SerializeToString(),
            response_deserializer=pb.HandoffEvent.FromString,
        )(request, metadata=md)
        try:
            async for event in call:
                yield event
                if len(opened) == 1:  # the first connection breaks after one part
                    raise grpc.aio.AioRpcError(
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.aio.Metadata(),
                        grpc.aio.Metadata(),
                        "connection lost",
                        "connection lost",
                    )
        finally:
            call.cancel()

    first = await first_of(resuming_stream(open_stream, initial_backoff=0.01))
    assert opened == [None, None]
    assert first.type == pb.EVENT_TYPE_SNAPSHOT and first.sequence == big.sequence
    assert [h.id for h in first.snapshot] == big.ids


async def test_watch_cli_prints_the_whole_queue(big: BigQueue, server: ServerRuntime) -> None:
    watch = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resolutionflow_cli",
        "watch",
        "--account",
        big.account,
        "--upstream",
        f"127.0.0.1:{server.port}",
        cwd=REPO,
        env={**os.environ, "RF_JWT_SECRET": JWT_SECRET},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        limit=16 * MIB,
    )
    assert watch.stdout is not None
    lines: list[str] = []
    try:

        async def read() -> None:
            assert watch.stdout is not None
            while len([x for x in lines if x.startswith("    ")]) < OPEN:
                line = (await watch.stdout.readline()).decode()
                assert line, f"watch exited: {lines[:5]}"
                lines.append(line.rstrip("\n"))

        await asyncio.wait_for(read(), 60)
    finally:
        watch.kill()
        await watch.wait()
    headers = [x for x in lines if x.startswith("#")]
    assert headers == [f"#{big.sequence} SNAPSHOT {OPEN} open "], lines[:3]


async def test_grpcurl_gets_the_whole_queue(big: BigQueue, server: ServerRuntime) -> None:
    from tests.test_grpcurl import GRPCURL

    assert GRPCURL is not None
    auth = f"authorization: Bearer {_engineer_token(big)}"
    address = f"127.0.0.1:{server.port}"
    proc = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        "-H",
        auth,
        address,
        "resolutionflow.v1.EscalationService/StreamEscalations",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        limit=16 * MIB,
    )
    assert proc.stdout is not None
    out = ""
    parts: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    try:

        async def read() -> None:
            nonlocal out
            assert proc.stdout is not None
            while not parts or parts[-1].get("snapshot_continues"):
                chunk = (await proc.stdout.read(1 << 20)).decode()
                assert chunk, f"grpcurl exited: {out[:500]}"
                out += chunk
                while True:
                    stripped = out.lstrip()
                    try:
                        value, end = decoder.raw_decode(stripped)
                    except json.JSONDecodeError:
                        break
                    parts.append(value)
                    out = stripped[end:]

        await asyncio.wait_for(read(), 60)
    finally:
        proc.kill()
        await proc.wait()
    assert len(parts) > 1
    assert [p.get("snapshot_continues", False) for p in parts][-1] is False
    assert {p["sequence"] for p in parts} == {str(big.sequence)}
    assert [h["id"] for p in parts for h in p["snapshot"]] == big.ids
    # ListEscalations page by page.
    request = "{}"
    ids: list[str] = []
    for _ in range(20):
        proc = await asyncio.create_subprocess_exec(
            GRPCURL,
            "-plaintext",
            "-H",
            auth,
            "-d",
            request,
            address,
            "resolutionflow.v1.EscalationService/ListEscalations",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        data, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, data[:500]
        page = json.loads(data)
        ids += [h["id"] for h in page["escalations"]]
        if not page.get("next_page_token"):
            break
        request = json.dumps({"pageToken": page["next_page_token"]})
    assert ids == big.ids


async def test_gateway_sends_one_snapshot_frame(big: BigQueue, http: httpx.AsyncClient) -> None:
    headers = bearer(big.account, Role.ENGINEER)
    for path, kind in (
        ("/v1/escalations/stream", "snapshot"),
        (f"/v1/escalations/stream?after={big.sequence + 1000}", "reset"),
    ):
        reader = SSEReader(http, path, headers)
        try:
            await reader.wait_for(lambda r: bool(r.data_events), timeout=60)
            first = reader.data_events[0]
            assert first.event == kind
            assert first.id == str(big.sequence)
            body = event_json(first)
            assert "snapshotContinues" not in body
            assert [h["id"] for h in body["snapshot"]] == big.ids
        finally:
            await reader.close()
    # The REST list, page by page.
    ids: list[str] = []
    query = ""
    while True:
        reply = await http.get(f"/v1/escalations{query}", headers=headers)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        assert page["sequence"] == str(big.sequence)
        ids += [h["id"] for h in page["escalations"]]
        if "nextPageToken" not in page:
            break
        query = f"?page_token={page['nextPageToken']}"
    assert ids == big.ids


def test_one_handoff_at_every_limit_is_far_below_the_bound() -> None:
    """Splitting works per handoff: the largest possible one (4-byte characters in every
    field) must leave room, also for the handoff context, which repeats its text."""
    from datetime import UTC, datetime

    from server.domain.context import build_context
    from server.domain.types import (
        Assessment,
        AssessmentStatus,
        Handoff,
        Intent,
        Priority,
        Status,
        Step,
        UserRef,
    )

    wide = "\U0001f600"
    now = datetime.now(UTC)
    handoff = Handoff(
        id=str(uuid.uuid4()),
        account_id=wide * 128,
        session_id=wide * rules.MAX_ID,
        intent=Intent.ESCALATE,
        status=Status.RESOLVED,
        priority=Priority.URGENT,
        problem_summary=wide * rules.MAX_SUMMARY,
        steps_tried=tuple(
            Step(wide * rules.MAX_STEP_DESCRIPTION, wide * rules.MAX_STEP_OUTCOME)
            for _ in range(rules.MAX_STEPS)
        ),
        notes=wide * rules.MAX_NOTES,
        created_by=UserRef(wide * 128, wide * 128),
        picked_up_by=UserRef(wide * 128, wide * 128),
        resolution_note=wide * rules.MAX_RESOLUTION_NOTE,
        assessment=Assessment(
            status=AssessmentStatus.READY,
            summary=wide * 2000,
            suggested_first_step=wide * 500,
            provider=wide * 100,
            failure_reason="",
            completed_at=now,
        ),
        sla_due_at=now,
        created_at=now,
        picked_up_at=now,
        resolved_at=now,
        cancelled_at=None,
        updated_at=now,
        sequence=2**63,
    )
    size = convert.handoff(handoff).ByteSize()
    assert size < convert.MAX_MESSAGE_BYTES // 2
    assert convert.context(build_context(handoff)).ByteSize() < convert.MAX_MESSAGE_BYTES - 8192


async def test_pages_and_the_events_after_their_cursor_give_the_exact_queue(
    server: ServerRuntime, default_channel: grpc.aio.Channel
) -> None:
    """Pages after the first are read when asked for; whatever changed in between, the
    pages plus the events after the first page's sequence, applied by id, are exact."""
    account = f"big-{uuid.uuid4().hex[:10]}"
    tech = Client(default_channel, token(account, "t", Role.TECHNICIAN, "T"), account, "t")
    eng = Client(default_channel, token(account, "e", Role.ENGINEER, "E"), account, "e")
    for n in range(24):
        await tech.create(**_fields(maxed_request(n)))
    first = await eng.call("escalations", "ListEscalations", esc.ListEscalationsRequest())
    assert first.next_page_token
    on_first = [h.id for h in first.escalations]
    later = (await server.core.list_escalations(_caller(account))).handoffs[len(on_first) :]
    # Between the pages: one from each page is picked up, one from the first is picked up
    # and released, and a new urgent one sorts into the part already read.
    for handoff_id in (on_first[0], later[0].id, on_first[1]):
        await eng.call(
            "escalations", "PickUpEscalation", esc.PickUpEscalationRequest(handoff_id=handoff_id)
        )
    await eng.call(
        "escalations", "ReleaseEscalation", esc.ReleaseEscalationRequest(handoff_id=on_first[1])
    )
    await tech.create(problem_summary="urgent, after the first page", priority=pb.PRIORITY_URGENT)
    queue: dict[str, pb.Handoff] = {h.id: h for h in first.escalations}
    token_ = first.next_page_token
    while token_:
        page = await eng.call(
            "escalations", "ListEscalations", esc.ListEscalationsRequest(page_token=token_)
        )
        assert page.sequence == first.sequence
        queue.update((h.id, h) for h in page.escalations)
        token_ = page.next_page_token
    head = (await server.core.list_escalations(_caller(account))).sequence
    reader = eng.escalations.StreamEscalations(
        esc.StreamEscalationsRequest(after_sequence=first.sequence), metadata=eng.metadata
    )
    try:
        async for event in reader:
            if event.type in (pb.EVENT_TYPE_CREATED, pb.EVENT_TYPE_RELEASED):
                queue[event.handoff.id] = event.handoff
            elif event.type in (pb.EVENT_TYPE_PICKED_UP, pb.EVENT_TYPE_CANCELLED):
                queue.pop(event.handoff.id, None)
            elif event.handoff.id in queue:
                queue[event.handoff.id] = event.handoff
            if event.sequence >= head:
                break
    finally:
        reader.cancel()
    now = await server.core.list_escalations(_caller(account))
    assert sorted(queue) == sorted(h.id for h in now.handoffs)
    assert later[0].id not in queue and on_first[0] not in queue and on_first[1] in queue
