"""The Python client against the real server: every method, typed errors, resuming streams."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from resolutionflow.v1 import handoff_pb2

from clients import (
    AlreadyPickedUp,
    AsyncClient,
    Client,
    Conflict,
    InvalidArgument,
    NotFound,
    NotHolder,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from server.domain.types import Role
from server.runtime import ServerRuntime
from server.settings import Settings
from server.webhooks import store
from tests.processes import ServerProcess
from tests.support import token, wait_until

pb = handoff_pb2


@pytest.fixture
def connect(server: ServerRuntime, account: str) -> Callable[..., AsyncClient]:
    def make(role: Role, user: str, acct: str | None = None) -> AsyncClient:
        return AsyncClient(f"127.0.0.1:{server.port}", token=token(acct or account, user, role))

    return make


async def test_every_method(connect: Callable[..., AsyncClient]) -> None:
    async with connect(Role.TECHNICIAN, "tina") as tech, connect(Role.ENGINEER, "erin") as eng:
        h = await tech.create_handoff(
            "Printer prints blank pages",
            session_id="s-1",
            priority="high",
            steps_tried=[("Printed a test page", "blank too")],
        )
        assert (h.priority, h.status) == (pb.PRIORITY_HIGH, pb.HANDOFF_STATUS_OPEN)
        assert (await tech.get_handoff(h.id)).id == h.id
        assert [x.id async for x in tech.list_handoffs(status="open", page_size=1)] == [h.id]
        queue = await eng.list_escalations()
        assert [x.id for x in queue.escalations] == [h.id] and queue.sequence >= 1
        context = await eng.pick_up(h.id)
        assert context.problem_summary == "Printer prints blank pages"
        assert [s.description for s in context.whats_been_tried] == ["Printed a test page"]
        assert (await eng.get_context(h.id)).handoff.picked_up_by.id == "erin"
        assert (await eng.release(h.id)).status == pb.HANDOFF_STATUS_OPEN
        await eng.pick_up(h.id)
        resolved = await eng.resolve(h.id, "new fuser")
        assert (resolved.status, resolved.resolution_note) == (
            pb.HANDOFF_STATUS_RESOLVED,
            "new fuser",
        )
        assert (await eng.metrics()).resolved == 1
        other = await tech.create_handoff("second", session_id="s-2", intent="reassign")
        assert (await tech.cancel_handoff(other.id)).status == pb.HANDOFF_STATUS_CANCELLED


async def test_typed_errors(connect: Callable[..., AsyncClient]) -> None:
    async with (
        connect(Role.TECHNICIAN, "tina") as tech,
        connect(Role.ENGINEER, "erin") as erin,
        connect(Role.ENGINEER, "eric") as eric,
    ):
        h = await tech.create_handoff("x", session_id="s")
        await erin.pick_up(h.id)
        with pytest.raises(AlreadyPickedUp) as lost:
            await eric.pick_up(h.id)
        assert (lost.value.holder_id, lost.value.holder_name) == ("erin", "erin")
        with pytest.raises(InvalidArgument) as bad:
            await tech.create_handoff("   ", session_id="")
        assert {v.field for v in bad.value.violations} == {"problem_summary", "session_id"}
        with pytest.raises(NotFound):
            await tech.get_handoff(str(uuid.uuid4()))
        with pytest.raises(PermissionDenied):
            await tech.list_escalations()
        with pytest.raises(NotHolder) as not_mine:  # only the holder resolves
            await eric.resolve(h.id, "not mine")
        assert (not_mine.value.holder_id, not_mine.value.holder_name) == ("erin", "erin")
        assert isinstance(not_mine.value, PermissionDenied)
        with pytest.raises(InvalidArgument) as no_note:
            await erin.resolve(h.id, "  ")
        assert [v.field for v in no_note.value.violations] == ["resolution_note"]
        assert (await erin.pick_up(h.id)).handoff.picked_up_by.id == "erin"  # held already
        await erin.resolve(h.id, "done")
        with pytest.raises(Conflict):
            await erin.resolve(h.id, "done")
        await tech.create_handoff("y", session_id="s", request_id="once")
        with pytest.raises(Conflict) as reused:
            await tech.create_handoff("z", session_id="s", request_id="once")
        assert reused.value.code == grpc.StatusCode.ALREADY_EXISTS
        assert "request_id" in reused.value.message


async def test_unauthenticated_is_typed(server: ServerRuntime) -> None:
    async with AsyncClient(f"127.0.0.1:{server.port}", token="not-a-jwt") as client:
        with pytest.raises(Unauthenticated):
            await client.list_handoffs().__anext__()


async def test_token_provider_refreshes_an_expired_token(
    server: ServerRuntime, account: str
) -> None:
    issued: list[str] = []

    def provider() -> str:
        # The first token is already expired; the client must come back for a fresh one.
        ttl = -10 if not issued else 3600
        issued.append(token(account, "erin", Role.ENGINEER, ttl=ttl))
        return issued[-1]

    async with AsyncClient(f"127.0.0.1:{server.port}", token_provider=provider) as client:
        assert (await client.list_escalations()).sequence == 0
        assert len(issued) == 2
        events = client.stream_escalations()
        assert (await events.__anext__()).type == pb.EVENT_TYPE_SNAPSHOT
        await events.aclose()  # type: ignore[attr-defined]


async def test_reset_is_surfaced(connect: Callable[..., AsyncClient]) -> None:
    async with connect(Role.ENGINEER, "erin") as eng:
        events = eng.stream_escalations(after=999)
        first = await events.__anext__()
        assert first.type == pb.EVENT_TYPE_RESET
        assert "ahead" in first.reset_reason
        await events.aclose()  # type: ignore[attr-defined]


async def test_resuming_stream_survives_sigkill_and_restart(
    own_settings: Settings, tmp_path: Path, account: str
) -> None:
    # A database of its own: in the shared one, a server of another test that dies holding
    # the claim on this test's pending assessments would delay their events past the wait.
    server = ServerProcess(own_settings.database_url, tmp_path)
    await server.start()
    eng = AsyncClient(server.address, token=token(account, "erin", Role.ENGINEER))
    tech = AsyncClient(server.address, token=token(account, "tina", Role.TECHNICIAN))
    seen: list[int] = []
    got = asyncio.Event()

    async def consume() -> None:
        async for event in eng.stream_escalations(after=0, max_backoff=0.5):
            if event.type != pb.EVENT_TYPE_HEARTBEAT:
                seen.append(event.sequence)
                got.set()

    reader = asyncio.create_task(consume())

    async def until(count: int) -> None:
        while len(seen) < count:
            got.clear()
            await got.wait()

    try:
        for _ in range(2):
            await tech.create_handoff("before the crash", session_id="s")
        await asyncio.wait_for(until(4), 20)
        await server.kill()
        await server.start()
        for _ in range(2):
            # The connection to this address is shared by both clients' channels, and the
            # stream's reconnects while the server was down may leave it backing off a while
            # longer: a create may find it not yet back. Retried with its request id, it
            # still creates one handoff at most.
            request_id = str(uuid.uuid4())

            async def created(request_id: str = request_id) -> bool:
                try:
                    await tech.create_handoff(
                        "after the restart", session_id="s", request_id=request_id
                    )
                except Unavailable:
                    return False
                return True

            await wait_until(created, timeout=20, what="a create after the restart")
        await asyncio.wait_for(until(8), 30)
        assert seen == list(range(1, 9))
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await eng.close()
        await tech.close()
        await server.stop()


async def test_sync_client(server: ServerRuntime, account: str) -> None:
    def script() -> tuple[str, int]:
        with (
            Client(f"127.0.0.1:{server.port}", token=token(account, "t", Role.TECHNICIAN)) as tech,
            Client(f"127.0.0.1:{server.port}", token=token(account, "e", Role.ENGINEER)) as eng,
        ):
            h = tech.create_handoff("sync", session_id="s")
            context = eng.pick_up(h.id)
            stream = eng.stream_escalations(after=0)
            first = next(stream)
            stream.close()
            return context.handoff.id, first.sequence

    handoff_id, first_sequence = await asyncio.to_thread(script)
    assert first_sequence == 1 and handoff_id


async def test_working_together(connect: Callable[..., AsyncClient]) -> None:
    async with (
        connect(Role.TECHNICIAN, "tina") as tech,
        connect(Role.ENGINEER, "erin") as eng,
        connect(Role.ENGINEER, "sam") as sam,
    ):
        await sam.list_account_users()  # known from now on
        assert {u.id for u in await eng.list_account_users()} == {"erin", "sam"}
        h = await tech.create_handoff("VPN drops", session_id="s-1", priority="urgent")
        events = eng.stream_escalations(priorities=[pb.PRIORITY_URGENT])
        assert [x.id for x in (await anext(events)).snapshot] == [h.id]
        await eng.pick_up(h.id)
        moved = await eng.transfer(h.id, "sam", "you know the VPN")
        assert moved.picked_up_by.id == "sam"
        with pytest.raises(NotFound):
            await eng.transfer(h.id, "nobody")
        said = await tech.add_comment(h.id, "it drops every 10 minutes", request_id="c-1")
        again = await tech.add_comment(h.id, "it drops every 10 minutes", request_id="c-1")
        assert said.id == again.id
        await sam.resolve(h.id, "new client")
        assert (await tech.reopen(h.id, "back again")).status == pb.HANDOFF_STATUS_OPEN
        types = [e.type for e in await tech.history(h.id)]
        assert types[-1] == pb.EVENT_TYPE_REOPENED
        assert types.count(pb.EVENT_TYPE_COMMENTED) == 1
        await wait_until(  # erin's filtered stream, once its server has written it
            lambda: _online(tech, 1), what="one engineer online"
        )
        await events.aclose()  # type: ignore[attr-defined]


async def _online(client: AsyncClient, count: int) -> bool:
    return (await client.presence()).engineers_online == count


async def test_the_client_streams_account_events(
    connect: Callable[..., AsyncClient], server: ServerRuntime, account: str
) -> None:
    """WEBHOOK_FAILING (no handoff, the endpoint named by host) comes through the client's
    queue stream like any event, in sequence."""
    async with connect(Role.ENGINEER, "erin") as eng, connect(Role.ADMIN, "ada") as admin:
        created = await admin.create_webhook_endpoint(
            "http://127.0.0.1:9/never", event_types=["escalation.created"]
        )
        await admin.update_webhook_endpoint(created.endpoint.id, enabled=False)
        events = eng.stream_escalations()
        snapshot = await anext(events)
        async with server.db.write() as s:
            record = await store.get_endpoint(s, account, created.endpoint.id)
            assert await store.mark_failing(s, record, "no answer in time", datetime.now(UTC))
        event = await anext(events)
        assert event.type == handoff_pb2.EVENT_TYPE_WEBHOOK_FAILING
        assert event.sequence == snapshot.sequence + 1 and not event.HasField("handoff")
        assert (event.webhook_endpoint.host, event.webhook_endpoint.last_error) == (
            "127.0.0.1",
            "no answer in time",
        )
        await events.aclose()  # type: ignore[attr-defined]
