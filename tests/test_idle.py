"""Idle costs nothing that grows with accounts.

The periodic log check heals a missed wake-up. It must cost a constant number of
statements per tick however many accounts are online, wake only the feeds whose log
moved, and still deliver what a missed wake-up left behind. Statements are counted with
SQLAlchemy's cursor hook on the server's real engine.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, or_, select, update

from server.db.database import Database
from server.db.schema import HANDOFFS, AccountSequence
from server.domain.types import Caller, Intent, NewHandoff, Priority, Role
from server.models import batch
from server.runtime import ServerRuntime
from server.settings import Settings
from server.streaming.hub import Subscription
from tests.pg import fresh_database
from tests.support import wait_until

ONLINE = 500
# Only the log check runs during these tests; every other clock is out of the way.
QUIET = {
    "log_poll_seconds": 0.05,
    # The full comparison runs at a feed's first tick only, unless a test asks for it.
    "log_full_check_seconds": 3600,
    "sla_check_seconds": 3600,
    "health_check_seconds": 3600,
    "prune_interval_seconds": 3600,
    "heartbeat_seconds": 3600,
    "assessment_retry_seconds": 3600,
    "webhook_poll_seconds": 3600,
}


@pytest.fixture(scope="module")
def settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The session's settings on a database of this module's own: counting statements and
    waiting for quiet must not see what other tests' servers left or do in theirs."""
    if settings.database_url.startswith("sqlite"):
        path = tmp_path_factory.mktemp("idle") / "rf.db"
        yield settings.model_copy(update={"database_url": f"sqlite+aiosqlite:///{path}"})
        return
    with fresh_database() as url:
        yield settings.model_copy(update={"database_url": url})


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[ServerRuntime]:
    async with quiet_runtime(settings, QUIET) as rt:
        yield rt


@pytest.fixture
async def still_runtime(settings: Settings) -> AsyncIterator[ServerRuntime]:
    """No clock runs on its own: the test runs each job itself."""
    async with quiet_runtime(settings, {**QUIET, "log_poll_seconds": 3600}) as rt:
        yield rt


@asynccontextmanager
async def quiet_runtime(settings: Settings, update: dict[str, Any]) -> AsyncIterator[ServerRuntime]:
    rt = ServerRuntime(settings.model_copy(update=update))
    await rt.start()

    async def nothing_pending() -> bool:
        # Escalations committed behind the worker's back (as below) are assessed at the
        # next start; those writes must be over before statements are counted. Pending ones
        # that another live server holds a claim on (the database is shared by the whole
        # test session) are that server's business, not this runtime's.
        worker = rt.assessments
        if worker._held or worker._saving:
            return False
        c = HANDOFFS.c
        async with rt.db.read() as s:
            claimable = await s.scalar(
                select(func.count())
                .select_from(HANDOFFS)
                .where(
                    c.assessment_status == "PENDING",
                    or_(
                        c.assessment_claimed_by.is_(None),
                        c.assessment_claimed_by == worker.owner,
                        c.assessment_lease_until < datetime.now(UTC),
                    ),
                )
            )
        return not claimable

    await wait_until(nothing_pending, timeout=60, what="pending assessments recorded")
    yield rt
    for feed in list(rt.hub.feeds.values()):
        for sub in list(feed.subscribers):
            rt.hub.unsubscribe(sub)
    await rt.stop(0)


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """Every statement the engine sends while inside (transaction control left out)."""
    seen: list[str] = []
    with _recording(db, lambda statement, _parameters: seen.append(statement)):
        yield seen


@contextmanager
def statements_and_parameters(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """The same, each with its parameters."""
    sent: list[tuple[str, Any]] = []
    with _recording(db, lambda statement, parameters: sent.append((statement, parameters))):
        yield sent


@contextmanager
def _recording(db: Database, keep: Callable[[str, Any], None]) -> Iterator[None]:
    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.split(None, 1)[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK"):
            keep(statement, parameters)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def escalate(db: Database, account: str) -> None:
    """Commit one escalation through a Database no hub listens to and that sends no
    NOTIFY: the wake-up is lost, so only the log check can find it."""
    caller = Caller(account_id=account, user_id="t", name="T", role=Role.TECHNICIAN)
    new = NewHandoff(
        request_id=uuid.uuid4().hex,
        session_id="s",
        intent=Intent.ESCALATE,
        priority=Priority.NORMAL,
        problem_summary="VPN drops",
        steps_tried=(),
        notes="",
    )
    async with db.write() as s:
        await batch.create(s, caller, new, datetime.now(UTC), 3600, assessment_lease_seconds=0)


async def online(rt: ServerRuntime, accounts: list[str]) -> list[Subscription]:
    subs = []
    for account in accounts:
        sub, _feed = rt.hub.subscribe(account, "eng", 0, lambda e: True)
        sub.lagging = False
        subs.append(sub)
    await wait_until(
        lambda: all(f.ready.is_set() for f in rt.hub.feeds.values()),
        timeout=60,
        what="every feed read its start position",
    )
    return subs


@pytest.fixture
async def silent_writer(settings: Settings) -> AsyncIterator[Database]:
    db = Database(settings.database_url)
    db.pg_notify = False
    yield db
    await db.dispose()


async def test_idle_log_check_is_one_statement_per_tick_for_500_accounts(
    runtime: ServerRuntime, silent_writer: Database
) -> None:
    prefix = f"idle-{uuid.uuid4().hex[:8]}"
    accounts = [f"{prefix}-{i}" for i in range(ONLINE)]
    # A few accounts have a log, most have never had an event: both kinds are idle.
    for account in accounts[:3]:
        await escalate(silent_writer, account)
    await online(runtime, accounts)
    # The first tick that sees the feeds compares every position with its head.
    await wait_until(lambda: runtime.hub.full_heals > 0, what="a first, full log check")

    with statements_and_parameters(runtime.db) as sent:
        first = runtime.hub.heals
        await wait_until(lambda: runtime.hub.heals >= first + 10, what="ten log checks")
        ticks = runtime.hub.heals - first
    # One statement per tick (a tick may straddle either edge of the window), and nothing
    # in it grows with the accounts online: no list of positions travels, only where the
    # previous tick stood on the database's clock.
    assert len(sent) <= ticks + 1, sent[:5]
    assert all("account_sequences" in statement for statement, _ in sent), sent[:5]
    for statement, parameters in sent:
        assert len(str(parameters)) < 100, (statement, str(parameters)[:200])
    assert not any(f.wake.is_set() for f in runtime.hub.feeds.values())


async def test_a_missed_wake_up_is_healed_and_only_that_feed_reads(
    runtime: ServerRuntime, silent_writer: Database
) -> None:
    prefix = f"miss-{uuid.uuid4().hex[:8]}"
    accounts = [f"{prefix}-{i}" for i in range(ONLINE)]
    subs = await online(runtime, accounts)
    target = subs[123]

    with statements(runtime.db) as seen:
        first = runtime.hub.heals
        await escalate(silent_writer, target.account_id)
        await escalate(silent_writer, target.account_id)
        await wait_until(lambda: [s for s, _ in target.buffer] == [1, 2], what="both events arrive")
        await wait_until(lambda: runtime.hub.heals >= first + 3, what="more log checks")
        ticks = runtime.hub.heals - first
    reads = [s for s in seen if "account_sequences" not in s]
    # The woken feed's read(s) of the log; no other feed read anything.
    assert 1 <= len(reads) <= 2, reads
    assert len(seen) - len(reads) <= ticks + 1
    assert all(not s.buffer for s in subs if s is not target)


async def test_a_commit_seen_long_after_its_counter_moved_is_found_by_the_full_check(
    still_runtime: ServerRuntime, silent_writer: Database
) -> None:
    """The short check reaches back only an overlap before its previous tick: a commit that
    became visible later than that after its bump is the full comparison's to find."""
    hub = still_runtime.hub
    prefix = f"late-{uuid.uuid4().hex[:8]}"
    subs = await online(still_runtime, [f"{prefix}-{i}" for i in range(20)])
    target = subs[7]
    await hub.heal()  # the first tick with feeds compares every position
    assert hub.full_heals == 1

    await escalate(silent_writer, target.account_id)
    async with silent_writer.write() as s:  # as if it was bumped an hour ago
        await s.execute(
            update(AccountSequence)
            .where(AccountSequence.account_id == target.account_id)
            .values(moved_at_ms=AccountSequence.moved_at_ms - 3_600_000)
        )
    assert await hub.heal() == 0  # a short tick: not in its window
    assert hub.full_heals == 1 and not target.buffer

    hub.full_check_seconds = 0  # the full comparison is due
    assert await hub.heal() == 1
    assert hub.full_heals == 2
    await wait_until(lambda: [s for s, _ in target.buffer] == [1], what="the event arrives")
    assert all(not s.buffer for s in subs if s is not target)


async def test_the_short_check_finds_a_commit_within_the_overlap(
    still_runtime: ServerRuntime, silent_writer: Database
) -> None:
    """A commit whose counter moved shortly before the previous tick's clock reading (its
    writer was still committing when that tick looked) is found by the next short tick."""
    hub = still_runtime.hub
    prefix = f"overlap-{uuid.uuid4().hex[:8]}"
    subs = await online(still_runtime, [f"{prefix}-{i}" for i in range(20)])
    target = subs[3]
    await hub.heal()
    await hub.heal()
    await escalate(silent_writer, target.account_id)
    async with silent_writer.write() as s:  # bumped a few seconds before the last tick
        await s.execute(
            update(AccountSequence)
            .where(AccountSequence.account_id == target.account_id)
            .values(moved_at_ms=AccountSequence.moved_at_ms - 5_000)
        )
    full = hub.full_heals
    assert await hub.heal() == 1
    assert hub.full_heals == full
    await wait_until(lambda: [s for s, _ in target.buffer] == [1], what="the event arrives")


async def test_log_check_with_nobody_online_sends_nothing(runtime: ServerRuntime) -> None:
    assert not runtime.hub.feeds
    with statements(runtime.db) as seen:
        first = runtime.hub.heals
        await wait_until(lambda: runtime.hub.heals >= first + 3, what="log checks")
    assert seen == []


async def test_every_other_periodic_job_is_constant_with_500_accounts_online(
    still_runtime: ServerRuntime,
) -> None:
    runtime = still_runtime
    prefix = f"jobs-{uuid.uuid4().hex[:8]}"
    await online(runtime, [f"{prefix}-{i}" for i in range(ONLINE)])
    jobs: dict[str, tuple[Callable[[], Awaitable[Any]], int]] = {
        "SLA clock": (runtime.fire_due_sla_timers, 1),
        "database health": (runtime.check_database, 1),
        # Old events move to the handoffs' history, then leave the log: two statements.
        "event retention": (runtime.prune_events, 2),
        "stream heartbeats": (runtime._heartbeats, 0),
        "log check": (runtime._wake_feeds, 1),
        "assessment sweep": (runtime.assessments.claim_due, 1),
        "webhook endpoint claims": (runtime.webhooks.claim, 1),
        "presence": (runtime.presence.refresh, 0),
    }
    for what, (job, most) in jobs.items():
        with statements(runtime.db) as seen:
            await job()
        assert len(seen) <= most, (what, seen)


async def test_presence_costs_one_row_per_tick_however_many_engineers_watch(
    still_runtime: ServerRuntime,
) -> None:
    """Watching engineers are written when they come and go; what keeps them online is the
    server's one liveness row, so a tick with nobody coming or going writes one row."""
    presence = still_runtime.presence
    account = f"presence-{uuid.uuid4().hex[:8]}"
    callers = [
        Caller(account_id=account, user_id=f"e{i}", name=f"E {i}", role=Role.ENGINEER)
        for i in range(ONLINE)
    ]
    for caller in callers:
        presence.joined(caller)
    await presence.refresh()
    assert len(await presence.online(account)) == ONLINE
    rows_per_statement: list[int] = []

    def record(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if statement.split(None, 1)[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK"):
            rows_per_statement.append(len(params) if many else 1)

    presence._alive_at -= presence.ttl / 3 + 0.01  # a third of the TTL has passed
    event.listen(still_runtime.db.engine.sync_engine, "before_cursor_execute", record)
    try:
        await presence.refresh()
    finally:
        event.remove(still_runtime.db.engine.sync_engine, "before_cursor_execute", record)
    # The liveness upsert, and the two statements that forget dead servers.
    assert rows_per_statement == [1, 1, 1]
    assert len(await presence.online(account)) == ONLINE
    presence.left(callers[0])
    await presence.refresh()
    assert [u.id for u in await presence.online(account)][:1] != ["e0"]
    assert len(await presence.online(account)) == ONLINE - 1
    for caller in callers[1:]:
        presence.left(caller)
    await presence.refresh()
    assert await presence.online(account) == []
