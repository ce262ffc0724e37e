"""Group commit: concurrent creates share a transaction, and each still answers alone."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest
from resolutionflow.v1 import handoff_pb2 as pb
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.database import Database
from server.db.migrate import upgrade
from server.db.schema import SLA_TIMERS
from server.domain.types import (
    Assessment,
    AssessmentStatus,
    Caller,
    Event,
    EventType,
    Intent,
    NewHandoff,
    Priority,
    Role,
)
from server.errors import AlreadyExists, Unavailable
from server.models import batch, events
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


async def test_one_batch_of_creates_and_outcomes_keeps_each_ones_answer(
    server: ServerRuntime, account: str, committed: list[list[Event]]
) -> None:
    """What ``models.batch.write`` does with several items in one transaction: a repeated
    request_id in the same batch gets the first one's handoff (or is refused for another
    body), a repeat of a committed one its winner, SLA timers only for the escalations
    inserted, outcomes saved once, and every change numbered without a gap."""
    tech = Caller("tech-1", account, Role.TECHNICIAN, "Tess")
    now = datetime.now(UTC)
    new = NewHandoff("key-1", "s", Intent.ESCALATE, Priority.HIGH, "VPN drops", (), "")
    reassign = dataclasses.replace(new, request_id=None, intent=Intent.REASSIGN)

    def create(n: NewHandoff) -> batch.Create:
        return batch.Create(tech, n, now, 3600, 90, "here")

    first_batch = [
        create(new),
        create(new),  # the same request again, in the same batch
        create(dataclasses.replace(new, notes="another body")),  # the key, another body
        create(reassign),
    ]
    async with server.db.write() as s:
        made, again, reused, moved = await batch.write(s, first_batch)
    assert isinstance(made, tuple) and made[1] is True
    assert again == (made[0], False)
    assert isinstance(reused, AlreadyExists) and reused.reason == "REQUEST_ID_REUSED"
    assert isinstance(moved, tuple) and moved[1] is True
    handoff = made[0]
    ready = Assessment(AssessmentStatus.READY, "summary", "step", "heuristic", "", now)
    second_batch: list[batch.Create | batch.SaveAssessment] = [
        batch.SaveAssessment(handoff.id, ready, now),
        batch.SaveAssessment(handoff.id, ready, now),  # saved twice: the second finds it done
        create(new),  # a repeat of a committed create: its winner
        batch.SaveAssessment(moved[0].id, ready, now),
    ]
    async with server.db.write() as s:
        saved, twice, repeat, other = await batch.write(s, second_batch)
    assert saved is not None and not isinstance(saved, tuple | Exception)
    assert saved.assessment.status is AssessmentStatus.READY
    assert saved.sequence > handoff.sequence
    assert twice is None
    assert repeat == (saved, False)  # its winner, as this transaction left it
    assert other is not None and not isinstance(other, tuple | Exception)

    async with server.db.read() as s:
        timers = await s.execute(
            select(SLA_TIMERS.c.handoff_id, func.count())
            .where(SLA_TIMERS.c.account_id == account)
            .group_by(SLA_TIMERS.c.handoff_id)
        )
        logged = await events.read_after(s, account, 0, 100)
    assert dict(timers.tuples().all()) == {handoff.id: 2}  # the escalation's, once
    assert [(e.sequence, e.type, e.handoff.id if e.handoff else None) for e in logged] == [
        (1, EventType.CREATED, handoff.id),
        (2, EventType.CREATED, moved[0].id),
        (3, EventType.ASSESSMENT_READY, handoff.id),
        (4, EventType.ASSESSMENT_READY, moved[0].id),
    ]
    assert logged[2].handoff == saved and logged[0].handoff == handoff
    # The commit listeners saw the same events, each transaction's in order.
    mine = [[e.sequence for e in b if e.account_id == account] for b in committed]
    assert [m for m in mine if m] == [[1, 2], [3, 4]]
