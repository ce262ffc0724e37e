"""In-process fan-out of each account's event log to its subscribers.

Why it looks like this:
- The log in the database is the truth; memory only holds bounded buffers. One reader
  task per account (an ``AccountFeed``) reads the log once per wake-up and hands the same
  encoded bytes to every subscriber of that account, so the database sees one query and
  the encoder one call per event, however many subscribers there are.
- A subscriber whose buffer is full is never waited for and never loses anything: it is
  marked *lagging*, stops receiving pushes, and reads the log itself from its last
  sequence until it has caught up with the feed, then rejoins. Duplicates that can occur
  around the rejoin are dropped by sequence, so delivery stays exactly-once and in order.
- Events committed by this process are handed to the feed directly after commit: when
  one is the next sequence the feed expects, it is fanned out without reading the log
  back. Anything else (a gap, another replica's commit via PostgreSQL NOTIFY, the
  periodic tick that heals a missed notification) wakes the feed to read the log, so the
  shortcut can only save a read, never skip an event.
- Idle costs nothing per account. The periodic heal (a missed wake-up's safety net) asks
  the database ONE question per tick for all feeds together, "which accounts' logs moved
  lately?" (the counter row carries when it last moved, by the database's clock, and an
  index answers the range), and wakes only the feeds among them that are behind; a feed
  that nothing happened to never reads, and an idle tick reads no row and builds nothing
  per online account. Waking every feed to read would cost a query per online account
  per tick (at a few thousand idle accounts a whole core and thousands of transactions
  per second); sending every feed's position each tick cost milliseconds of CPU per tick
  at 10,000 accounts.
- "Lately" reaches back an overlap before the previous tick's clock reading, because a
  counter moves when its writer bumps it and becomes visible only at its commit. A commit
  later than that after its bump, or a database clock stepped back, is covered by the full
  comparison (every feed's position against its head) at the first tick and then every
  ``full_check_seconds``: the worst case costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from server import telemetry
from server.db.database import Database
from server.domain.types import Event
from server.errors import ResourceExhausted
from server.models import events

log = logging.getLogger(__name__)

READ_BATCH = 500


@dataclass(eq=False)
class Subscription:
    """One open stream. ``position`` is the last sequence it has consumed or skipped."""

    account_id: str
    user_id: str
    position: int
    accepts: Callable[[Event], bool]
    capacity: int
    buffer: deque[tuple[int, bytes]] = field(default_factory=deque)
    lagging: bool = True
    closed: bool = False
    # How often this stream fell behind and switched to reading the log itself.
    overflows: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Heartbeats (``Hub.sweep_idle``): ``sent`` is set by the stream on every event it sends
    # and cleared by the hub's sweep; ``told`` is the last position its client was given
    # (by an event, a snapshot or a heartbeat); ``quiet`` counts the sweeps since it last
    # sent anything. A quiet stream whose position moved past ``told`` (events it does not
    # carry) hears its new position at the next sweep; one whose position did not move
    # hears a heartbeat only when it has been quiet for the idle interval.
    sent: bool = True
    told: int = 0
    quiet: int = 0
    heartbeat_due: bool = False
    # The stream's token runs out at ``expires_at`` (epoch seconds); the hub's one expiry
    # timer sets ``expired`` and wakes the stream, which then ends with UNAUTHENTICATED.
    expires_at: float | None = None
    expired: bool = False

    def offer(self, event: Event, data: bytes, accepted: bool) -> None:
        """``accepted``: what ``self.accepts(event)`` says (the feed asks once per filter)."""
        if self.lagging or self.closed or event.sequence <= self.position:
            return
        if not accepted:
            if not self.buffer:
                self.position = event.sequence
            else:
                # Keep order: remember the skip behind what is already buffered.
                self.buffer.append((event.sequence, b""))
            return
        if len(self.buffer) >= self.capacity:
            self.lagging = True
            self.overflows += 1
            telemetry.CATCHUPS.inc()
            self.buffer.clear()
        else:
            self.buffer.append((event.sequence, data))
        self.wake.set()


class AccountFeed:
    def __init__(self, hub: Hub, account_id: str) -> None:
        self.hub = hub
        self.account_id = account_id
        self.subscribers: set[Subscription] = set()
        # The highest sequence this feed has handed out; None until the first read.
        self.last_seen: int | None = None
        self.ready = asyncio.Event()
        self.wake = asyncio.Event()
        # The escalation queue's last SNAPSHOT (sequence, its parts), shared by streams
        # that open while it is current (see Streams._opening_snapshot).
        self.snapshot: asyncio.Future[tuple[int, list[bytes]]] | None = None
        self.task = asyncio.create_task(self._run(), name=f"feed:{account_id}")

    async def _run(self) -> None:
        delay = 0.1
        while self.last_seen is None:
            try:
                async with self.hub.db.read() as s:
                    self.last_seen = await events.head(s, self.account_id)
            except Exception:
                log.exception("reading the log head of %s failed", self.account_id)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.ready.set()
        while True:
            await self.wake.wait()
            self.wake.clear()
            try:
                await self._read_new()
            except Exception:
                # The next wake-up (at the latest the periodic tick) retries from last_seen.
                log.exception("reading the event log of %s failed", self.account_id)

    async def _read_new(self) -> None:
        while True:
            assert self.last_seen is not None
            async with self.hub.db.read() as s:
                batch = await events.read_after(s, self.account_id, self.last_seen, READ_BATCH)
            for event in batch:
                # A committed event may have been published while the read was in flight.
                if event.sequence > self.last_seen:
                    self.dispatch(event)
            if len(batch) < READ_BATCH:
                return

    def dispatch(self, event: Event) -> None:
        """Fan one event out; callers guarantee it is the next after ``last_seen``."""
        telemetry.DELIVERY_LAG.observe(max(0.0, time.time() - event.occurred_at.timestamp()))
        data = self.hub.encode(event)
        verdicts: dict[Callable[[Event], bool], bool] = {}
        for sub in self.subscribers:
            accepted = verdicts.get(sub.accepts)
            if accepted is None:
                accepted = verdicts[sub.accepts] = sub.accepts(event)
            sub.offer(event, data, accepted)
        self.last_seen = event.sequence

    def publish(self, event: Event) -> None:
        """An event this process committed: deliver it now if it is the next one."""
        if self.last_seen is None or event.sequence > self.last_seen + 1:
            self.wake.set()  # not started, or a gap (a commit whose callback runs later)
        elif event.sequence == self.last_seen + 1:
            self.dispatch(event)


class Hub:
    def __init__(
        self,
        db: Database,
        encode: Callable[[Event], bytes],
        capacity: int,
        max_per_user: int = 20,
        max_per_account: int = 5000,
        full_check_seconds: float = 30.0,
        overlap_seconds: float = 10.0,
        idle_heartbeat_sweeps: int = 1,
    ) -> None:
        self.db = db
        self.encode = encode
        self.capacity = capacity
        self.max_per_user = max_per_user
        self.max_per_account = max_per_account
        self.feeds: dict[str, AccountFeed] = {}
        self._per_user: Counter[tuple[str, str]] = Counter()
        # Token expiry of open streams: one heap and one timer for the earliest, instead of
        # a timer (or a task) per stream. Entries of closed streams are skipped when they
        # come up, and the heap is compacted when they outnumber the open streams.
        self._expiries: list[tuple[float, int, Subscription]] = []
        self._expiry_ids = itertools.count()
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._open = 0
        # How many heals ran, and how many of them compared every feed (tests and the
        # bench count queries per heal).
        self.heals = 0
        self.full_heals = 0
        self.full_check_seconds = full_check_seconds
        self.overlap_ms = int(overlap_seconds * 1000)
        # Where the next short heal starts, on the database's clock (None: a full one next).
        self._since_ms: int | None = None
        # Sweeps a stream with nothing new to tell stays quiet before a heartbeat.
        self.idle_heartbeat_sweeps = max(1, idle_heartbeat_sweeps)
        self._last_full = 0.0

    def subscriber_count(self) -> int:
        return sum(len(f.subscribers) for f in self.feeds.values())

    def subscribe(
        self,
        account_id: str,
        user_id: str,
        after: int,
        accepts: Callable[[Event], bool],
        expires_at: float | None = None,
    ) -> tuple[Subscription, AccountFeed]:
        if self._per_user[(account_id, user_id)] >= self.max_per_user:
            raise ResourceExhausted(
                f"too many open streams for this user (at most {self.max_per_user}); "
                "close one first",
                retry_after=5,
            )
        feed = self.feeds.get(account_id)
        if feed is not None and len(feed.subscribers) >= self.max_per_account:
            raise ResourceExhausted(
                f"too many open streams for this account (at most {self.max_per_account})",
                retry_after=5,
            )
        if feed is None:
            feed = self.feeds[account_id] = AccountFeed(self, account_id)
        sub = Subscription(account_id, user_id, after, accepts, self.capacity, told=after)
        feed.subscribers.add(sub)
        self._per_user[(account_id, user_id)] += 1
        self._open += 1
        if expires_at is not None:
            sub.expires_at = expires_at
            heapq.heappush(self._expiries, (expires_at, next(self._expiry_ids), sub))
            if self._expiries[0][2] is sub:
                self._arm_expiry()
        return sub, feed

    def _arm_expiry(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        if self._expiries:
            delay = max(0.0, self._expiries[0][0] - time.time())
            self._expiry_timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        """The timer: end every stream whose token has run out, then wait for the next."""
        self._expiry_timer = None
        now = time.time()
        while self._expiries and self._expiries[0][0] <= now:
            sub = heapq.heappop(self._expiries)[2]
            if not sub.closed:
                sub.expired = True
                sub.wake.set()
        self._arm_expiry()

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        feed = self.feeds.get(sub.account_id)
        if feed is None or sub not in feed.subscribers:
            return
        feed.subscribers.discard(sub)
        self._open -= 1
        if len(self._expiries) > 64 and len(self._expiries) > 2 * self._open:
            self._expiries = [entry for entry in self._expiries if not entry[2].closed]
            heapq.heapify(self._expiries)
        key = (sub.account_id, sub.user_id)
        self._per_user[key] -= 1
        if not self._per_user[key]:
            del self._per_user[key]
        if not feed.subscribers:
            feed.task.cancel()
            del self.feeds[sub.account_id]

    def publish(self, committed: list[Event]) -> None:
        """Events just committed by this process, in sequence order per account."""
        for event in committed:
            feed = self.feeds.get(event.account_id)
            if feed is not None:
                feed.publish(event)

    def notify(self, account_ids: Iterable[str]) -> None:
        """New events were committed for these accounts (here or on another replica)."""
        for account_id in account_ids:
            feed = self.feeds.get(account_id)
            if feed is not None:
                feed.wake.set()

    def moved(self, account_id: str, head: int) -> None:
        """The account's log reached ``head``: wake its feed unless it is there already."""
        feed = self.feeds.get(account_id)
        if feed is not None and feed.last_seen is not None and head > feed.last_seen:
            feed.wake.set()

    async def heal(self) -> int:
        """One query for every feed: wake those whose log moved past what they have seen.

        Feeds still reading their start position are left out (that read finds the head
        itself). Returns how many feeds were woken.
        """
        self.heals += 1
        if not self.feeds:
            self._since_ms = None  # the first feed to come gets a full comparison
            return 0
        full = (
            self._since_ms is None or time.monotonic() - self._last_full >= self.full_check_seconds
        )
        if full:
            started = time.monotonic()
            seen = {a: f.last_seen for a, f in self.feeds.items() if f.last_seen is not None}
            async with self.db.read() as s:
                now_ms, moved = await events.heads_moved(s, seen)
            self.full_heals += 1
            self._last_full = started
        else:
            assert self._since_ms is not None
            async with self.db.read() as s:
                now_ms, recent = await events.moved_since(s, self._since_ms)
            moved = {}
            for account_id, head in recent.items():
                feed = self.feeds.get(account_id)
                if feed is not None and feed.last_seen is not None and head > feed.last_seen:
                    moved[account_id] = head
        self._since_ms = now_ms - self.overlap_ms
        for account_id, head in moved.items():
            self.moved(account_id, head)
        return len(moved)

    def sweep_idle(self) -> None:
        """Every heartbeat interval: ask for a heartbeat from each stream that sent nothing
        since the last sweep and either has a position its client was not told (events it
        does not carry moved it) or has been quiet for ``idle_heartbeat_sweeps`` sweeps.

        A heartbeat on a stream whose client already knows its position carries nothing but
        "still here", which HTTP/2 keepalive pings say for every stream of a connection at
        once, without Python; it is kept for proxies that end a stream after a while
        without data (about 70 µs of server CPU each: at 10,000 idle streams, one every
        15 s was most of what an idle server cost).
        """
        every = self.idle_heartbeat_sweeps
        for feed in self.feeds.values():
            for sub in feed.subscribers:
                if sub.sent:
                    sub.sent = False
                    sub.quiet = 0
                    continue
                sub.quiet += 1
                if sub.position != sub.told or sub.quiet >= every:
                    sub.quiet = 0
                    sub.heartbeat_due = True
                    sub.wake.set()

    def close_all(self) -> None:
        """Shutdown: every open stream ends with a resumable status."""
        for feed in list(self.feeds.values()):
            for sub in feed.subscribers:
                sub.closed = True
                sub.wake.set()
