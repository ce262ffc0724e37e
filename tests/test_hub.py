"""The hub's shortcut for events committed in this process (``AccountFeed.publish``).

A committed event that is the next sequence a feed expects is fanned out without reading
the log; anything else must fall back to the log. Here the commit callbacks are played
by hand, out of order and repeated, against a real database, and the subscriber must
still get every event once, in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from server.db.database import APPENDED_EVENTS, Database
from server.domain.types import Caller, Event, Intent, NewHandoff, Priority, Role
from server.models import batch
from server.runtime import ServerRuntime, idle_heartbeat_sweeps
from server.settings import Settings
from server.streaming.hub import Hub, Subscription
from tests.support import wait_until


@pytest.fixture
async def db(server: ServerRuntime) -> AsyncIterator[Database]:
    # The session server has migrated the database; this Database has no hub listening,
    # so nothing is published unless the test does it.
    database = Database(server.settings.database_url)
    yield database
    await database.dispose()


async def create(db: Database, caller: Caller, n: int) -> list[Event]:
    """n escalations; the events their transactions committed, as the hub would get them."""
    committed: list[Event] = []
    for i in range(n):
        new = NewHandoff(
            request_id=f"r{i}-{datetime.now(UTC).timestamp()}",
            session_id="s",
            intent=Intent.ESCALATE,
            priority=Priority.NORMAL,
            problem_summary="VPN drops",
            steps_tried=(),
            notes="",
        )
        async with db.write() as s:
            await batch.create(s, caller, new, datetime.now(UTC), 3600, 90)
            committed.extend(s.info[APPENDED_EVENTS])
    return committed


def received(sub: Subscription) -> list[int]:
    return [sequence for sequence, _ in sub.buffer]


async def test_out_of_order_and_repeated_publishes_deliver_each_event_once_in_order(
    db: Database, account: str
) -> None:
    caller = Caller(account_id=account, user_id="t", name="T", role=Role.TECHNICIAN)
    await create(db, caller, 2)
    hub = Hub(db, lambda e: str(e.sequence).encode(), capacity=100)
    sub, feed = hub.subscribe(account, "e", 0, lambda e: True)
    try:
        await feed.ready.wait()
        assert feed.last_seen == 2
        # A live subscriber at the feed's position (as after its snapshot).
        sub.position, sub.lagging = 2, False

        later = await create(db, caller, 3)  # sequences 3, 4, 5
        assert [e.sequence for e in later] == [3, 4, 5]
        feed.publish(later[1])  # 4 before 3: a gap, so the feed must read the log
        feed.publish(later[2])
        await wait_until(lambda: feed.last_seen == 5, what="the feed read 3..5 from the log")
        feed.publish(later[0])  # late callbacks and repeats change nothing
        feed.publish(later[2])
        assert received(sub) == [3, 4, 5]

        more = await create(db, caller, 2)  # 6, 7: in order, delivered at once
        feed.publish(more[0])
        feed.publish(more[1])
        assert feed.last_seen == 7
        assert received(sub) == [3, 4, 5, 6, 7]
    finally:
        hub.unsubscribe(sub)


async def test_a_quiet_stream_hears_its_moved_position_at_once_and_else_only_when_idle_long(
    db: Database, account: str
) -> None:
    """``Hub.sweep_idle``: a heartbeat that tells the client nothing new waits for the idle
    interval; one that carries a position the client was not told does not."""
    hub = Hub(db, lambda e: str(e.sequence).encode(), capacity=100, idle_heartbeat_sweeps=3)
    still, _ = hub.subscribe(account, "still", 5, lambda e: True)
    moved, _ = hub.subscribe(account, "moved", 5, lambda e: True)
    busy, _ = hub.subscribe(account, "busy", 5, lambda e: True)
    try:
        hub.sweep_idle()  # opening counts as sending
        assert not any(s.heartbeat_due for s in (still, moved, busy))

        moved.position = 7  # events this stream does not carry moved it
        busy.sent = True  # as the stream does for each event it sends
        busy.position = busy.told = 8
        hub.sweep_idle()
        assert moved.heartbeat_due and moved.wake.is_set()
        assert not still.heartbeat_due and not busy.heartbeat_due
        moved.heartbeat_due, moved.told = False, moved.position  # as the stream sends it

        quiet_sweeps: list[int] = []
        for sweep in range(2, 8):
            hub.sweep_idle()
            if still.heartbeat_due:
                quiet_sweeps.append(sweep)
                still.heartbeat_due = False
        # Every third quiet sweep, counted from the first sweep after its last message.
        assert quiet_sweeps == [3, 6]
    finally:
        for sub in (still, moved, busy):
            hub.unsubscribe(sub)


def test_an_idle_stream_hears_something_within_the_idle_heartbeat_interval() -> None:
    for heartbeat, idle, sweeps in ((15, 45, 2), (15, 60, 3), (15, 20, 1), (0.3, 0.9, 2)):
        settings = Settings(heartbeat_seconds=heartbeat, idle_heartbeat_seconds=idle)
        assert idle_heartbeat_sweeps(settings) == sweeps
        # The last message, then at most one interval to the sweep that starts the count.
        assert (sweeps + 1) * heartbeat <= idle or sweeps == 1
