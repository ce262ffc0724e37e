"""Group commit: concurrent creates share a transaction, and each still answers alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from resolutionflow.v1 import handoff_pb2 as pb

from server.domain.types import Event, EventType, Role
from server.models import events
from server.runtime import ServerRuntime
from tests.support import Client, token

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
