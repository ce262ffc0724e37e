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
from server.runtime import ServerRuntime
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
