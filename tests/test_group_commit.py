"""Group commit: concurrent creates share a transaction, and each still answers alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from resolutionflow.v1 import handoff_pb2 as pb
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.database import Database
from server.db.migrate import upgrade
from server.domain.types import Event, EventType, Role
from server.errors import Unavailable
from server.models import events
from server.runtime import ServerRuntime
from server.settings import Settings
from tests.support import Client, token, wait_until

CONCURRENT = 24


@pytest.fixture
def committed(server: ServerRuntime) -> Iterator[list[list[Event]]]:
    """The events of each committed write transaction, as the commit listeners see them."""
    seen: list[list[Event]] = []
    server.db.on_commit(seen.append)
    yield seen
    server.db._commit_listeners.remove(seen.append)


async def test_concurrent_creates_share_transactions_and_fail_alone(
    server: ServerRuntime,
    channel: grpc.aio.Channel,
    account: str,
    committed: list[list[Event]],
) -> None:
    techs = [
        Client(channel, token(account, f"tech-{i}", Role.TECHNICIAN), account, f"tech-{i}")
        for i in range(CONCURRENT)
    ]
    first = await techs[0].create(request_id="reused", problem_summary="the first body")
    results = await asyncio.gather(
        *(
            tech.create(request_id=f"own-{i}", problem_summary=f"escalation {i}")
            for i, tech in enumerate(techs)
        ),
        # The same key again: the first handoff, not a new one.
        techs[0].create(request_id="reused", problem_summary="the first body"),
        # The same key with another body: this one alone fails.
        techs[0].create(request_id="reused", problem_summary="another body"),
        return_exceptions=True,
    )
    *made, repeated, reused = results
    assert isinstance(reused, grpc.aio.AioRpcError)
    assert reused.code() == grpc.StatusCode.ALREADY_EXISTS
    assert isinstance(repeated, pb.Handoff) and repeated.id == first.id
    assert all(isinstance(h, pb.Handoff) for h in made), made
    ids = {h.id for h in made if isinstance(h, pb.Handoff)}
    assert len(ids) == CONCURRENT and first.id not in ids

    created = [
        [e for e in batch if e.account_id == account and e.type is EventType.CREATED]
        for batch in committed
    ]
    # Some transaction carried several creates (they arrived while one was committing).
    assert max(len(batch) for batch in created) > 1
    # Exactly once each, numbered without a gap, published in commit order.
    sequences = [e.sequence for batch in committed for e in batch if e.account_id == account]
    assert sequences == sorted(sequences)
    async with server.db.read() as s:
        head = await events.head(s, account)
        logged = await events.read_after(s, account, 0, 1000)
    assert [e.sequence for e in logged] == list(range(1, head + 1))
    assert sorted(
        e.handoff.id for e in logged if e.type is EventType.CREATED and e.handoff is not None
    ) == sorted(ids | {first.id})


async def test_a_group_ended_early_leaves_no_caller_waiting(own_settings: Settings) -> None:
    """A cancelled round of groups (a shutdown) answers every write it held, and those
    queued behind it, with UNAVAILABLE instead of leaving their callers waiting for ever."""
    db = Database(own_settings.database_url)
    try:
        await upgrade(own_settings.database_url)
        entered = asyncio.Event()

        async def stuck(_s: AsyncSession, items: list[str]) -> list[None]:
            entered.set()
            await asyncio.Event().wait()  # a write that never finishes on its own
            return [None for _ in items]

        async def quick(_s: AsyncSession, items: list[str]) -> list[int]:
            return [1 for _ in items]

        first = asyncio.ensure_future(db.write_batched(stuck, "a"))
        await asyncio.wait_for(entered.wait(), 10)
        queued = asyncio.ensure_future(db.write_batched(quick, "b"))
        await wait_until(lambda: len(db._batched) == 1, what="queued behind the batch")
        assert db._batching is not None
        db._batching.cancel()
        for call in (first, queued):
            with pytest.raises(Unavailable):
                await asyncio.wait_for(call, 10)
        assert await asyncio.wait_for(db.write_batched(quick, "c"), 10) == 1  # a new round
    finally:
        await db.dispose()
