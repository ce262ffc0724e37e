"""One stream, start to end: snapshot or replay, then live events and heartbeats.

The stream yields already-encoded bytes so that the transport sends them as they are; the
encoder is given by the transport, which keeps this module free of protobuf and gRPC.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from server import telemetry
from server.db.database import Database
from server.domain import policy
from server.domain.collab import QueueFilter
from server.domain.types import (
    Caller,
    Event,
    EventType,
    Handoff,
    Intent,
    QueueSnapshot,
    Status,
)
from server.errors import Unauthenticated, Unavailable
from server.models import events, handoffs
from server.streaming.hub import READ_BATCH, AccountFeed, Hub, Subscription
from server.streaming.presence import Presence


class StreamKind(enum.Enum):
    ESCALATIONS = "escalations"
    HANDOFFS = "handoffs"


# Initial-metadata key naming a stream's audience (see ``audience``).
AUDIENCE_KEY = "rf-stream-audience"
# When the stream's token expires (Unix seconds), for an edge that serves the stream to
# a browser from a shared one: it ends that browser then, as this server would. The
# server says it because only the server reads tokens (claim names are its settings).
EXPIRES_KEY = "rf-stream-expires"
# The caller's account, for an edge that reports who it serves the queue to by account
# (ReportPresence): it reads no token, so the server says.
ACCOUNT_KEY = "rf-stream-account"


class Announcer(Protocol):
    """Where a stream says, once authorized and subscribed, who sees the same events: the
    transport's initial metadata (``grpc.aio.ServicerContext`` has this method)."""

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None: ...


class Encoder(Protocol):
    def event(self, event: Event) -> bytes: ...

    def control(self, type: EventType, sequence: int) -> bytes: ...

    def snapshot(
        self, type: EventType, sequence: int, handoffs: list[Handoff], reason: str = ""
    ) -> list[bytes]:
        """The snapshot as one message or several parts, each within the message bound."""
        ...


def _is_escalation(e: Event) -> bool:
    # Account events (about no handoff) are on the queue: only staff open it.
    return e.handoff is None or e.handoff.intent is Intent.ESCALATE


def _everything(e: Event) -> bool:
    return True


def _filter(
    kind: StreamKind, caller: Caller, narrowed: QueueFilter | None = None
) -> Callable[[Event], bool]:
    # Shared functions where streams see the same (the feed evaluates each distinct filter
    # once per event); a technician's own filter is theirs alone, as is a narrowed queue.
    if kind is StreamKind.ESCALATIONS:
        if narrowed is not None and narrowed.narrows:
            return lambda e: _is_escalation(e) and narrowed.passes(e, caller)
        return _is_escalation
    creator = policy.scope(caller).creator_id
    if creator is not None:
        # A technician sees their own handoffs' events, never the account's.
        return lambda e: e.handoff is not None and e.handoff.created_by.id == creator
    return _everything


def audience(kind: StreamKind, caller: Caller, narrowed: QueueFilter | None = None) -> str:
    """Who sees exactly the events this caller's stream sees, as one opaque name.

    Streams with equal audiences carry byte-identical events from the same position on,
    so an edge (the gateway) may serve all of them from one upstream stream. The policy
    lives here, next to ``_filter``, so the two cannot drift apart: the escalation queue
    and an engineer's or admin's WatchHandoffs are the account's; a technician's
    WatchHandoffs is theirs alone.
    """
    seen = policy.scope(caller)
    if kind is StreamKind.HANDOFFS and seen.creator_id is not None:
        return f"{kind.value}/{seen.account_id}/user/{seen.creator_id}"
    name = f"{kind.value}/{seen.account_id}"
    if narrowed is not None and narrowed.narrows:
        # A filtered queue carries other events than the account's: only callers with the
        # same filter share it, and "held by me" is the caller's own. (Presence does not
        # care: an edge sharing the queue reports its browsers, see streaming/presence.py.)
        if narrowed.held_by_me:
            name += f"/user/{caller.user_id}/held"
        priorities = ",".join(sorted(p.value for p in narrowed.priorities))
        name += f"/priorities={priorities}"
    return name


class Streams:
    """Opens streams; heartbeats come from the hub's sweep (``Hub.sweep_idle``), not from a
    timer per stream: a timed wait per stream costs a task and a timer handle each time it
    waits, which at thousands of idle streams is most of their memory and wake-ups."""

    def __init__(
        self, db: Database, hub: Hub, encoder: Encoder, presence: Presence | None = None
    ) -> None:
        self.db = db
        self.hub = hub
        self.encoder = encoder
        # Counts open queue streams per engineer (who is watching the queue), and records
        # what edges report (ReportPresence).
        self.presence = presence

    async def _snapshot(
        self, kind: StreamKind, caller: Caller, narrowed: QueueFilter | None = None
    ) -> QueueSnapshot:
        async with self.db.read() as s:
            if kind is not StreamKind.ESCALATIONS:
                return await handoffs.active(s, policy.scope(caller))
            if narrowed is None or not narrowed.narrows:
                return await handoffs.queue(s, caller.account_id)
            # Escalations held by the caller are not in the queue: read the open and
            # picked-up ones, and keep what the filter admits.
            snap = await handoffs.active(s, policy.scope(caller))
        return QueueSnapshot(
            sequence=snap.sequence,
            handoffs=[
                h
                for h in snap.handoffs
                if h.intent is Intent.ESCALATE
                and (narrowed.held_by_me or h.status is Status.OPEN)
                and narrowed.admits(h, caller)
            ],
        )

    async def _encoded_snapshot(
        self, kind: StreamKind, caller: Caller, narrowed: QueueFilter | None = None
    ) -> tuple[int, list[bytes]]:
        snap = await self._snapshot(kind, caller, narrowed)
        return snap.sequence, self.encoder.snapshot(
            EventType.SNAPSHOT, snap.sequence, snap.handoffs
        )

    async def _opening_snapshot(
        self, kind: StreamKind, caller: Caller, feed: AccountFeed, narrowed: QueueFilter | None
    ) -> tuple[int, list[bytes]]:
        """The SNAPSHOT a new stream starts with, and its sequence.

        The escalation queue is the same for every engineer of an account, so streams that
        open together (a reconnect storm after a deploy) share one read: concurrent openers
        await the read in flight, and later ones reuse it while the feed has seen nothing
        newer. Any snapshot is a correct start, since the stream then reads every event
        after its sequence; sharing only saves reads.
        """
        if kind is not StreamKind.ESCALATIONS or (narrowed is not None and narrowed.narrows):
            return await self._encoded_snapshot(kind, caller, narrowed)
        shared = feed.snapshot
        if shared is None or (
            shared.done()
            and (
                shared.cancelled()
                or shared.exception() is not None
                or (feed.last_seen is not None and shared.result()[0] < feed.last_seen)
            )
        ):
            shared = feed.snapshot = asyncio.ensure_future(self._encoded_snapshot(kind, caller))
        # Shielded: one opener going away must not cancel the read the others wait on.
        return await asyncio.shield(shared)

    async def _cursor_problem(self, account_id: str, after: int) -> str:
        """Why ``after`` cannot be resumed from, or "" when it can."""
        async with self.db.read() as s:
            head = await events.head(s, account_id)
            oldest = await events.oldest(s, account_id)
        if after > head:
            return f"cursor {after} is ahead of the log (latest sequence is {head})"
        if after < head and (oldest is None or oldest > after + 1):
            return f"events after {after} are past the retention window"
        return ""

    async def open(
        self,
        kind: StreamKind,
        caller: Caller,
        after: int | None,
        announce: Announcer | None = None,
        narrowed: QueueFilter | None = None,
        counted: bool = True,
    ) -> AsyncIterator[bytes]:
        """``counted``: a queue stream makes its caller present while it is open, unless
        its opener reports the presence of those it serves itself (an edge)."""
        # Subscribe first, so a stream over its limit is refused before any byte is sent.
        # The subscription starts out lagging: nothing is pushed to it until it has read
        # the log from its position, which is only settled below.
        sub, feed = self.hub.subscribe(
            caller.account_id,
            caller.user_id,
            after or 0,
            _filter(kind, caller, narrowed),
            caller.expires_at,
        )
        if announce is not None:
            # Headers go out now, before any event: the caller learns at once that the
            # stream is authorized and open, even when it has nothing to replay.
            try:
                said = [
                    (AUDIENCE_KEY, audience(kind, caller, narrowed)),
                    (ACCOUNT_KEY, caller.account_id),
                ]
                if caller.expires_at is not None:
                    said.append((EXPIRES_KEY, f"{caller.expires_at:.3f}"))
                await announce.send_initial_metadata(tuple(said))
            except BaseException:
                self.hub.unsubscribe(sub)
                raise
        delivered = telemetry.EVENTS_DELIVERED
        unreported = 0
        watching = self.presence if kind is StreamKind.ESCALATIONS and counted else None
        if watching is not None:
            watching.joined(caller)
        try:
            # A snapshot may come in several parts (see HandoffEvent.snapshot_continues);
            # they are sent back to back, and the position moves only after the last.
            if after is None:
                sequence, parts = await self._opening_snapshot(kind, caller, feed, narrowed)
                for data in parts:
                    delivered.inc()
                    yield data
                sub.position = sub.told = sequence
            elif problem := await self._cursor_problem(caller.account_id, after):
                snap = await self._snapshot(kind, caller, narrowed)
                for data in self.encoder.snapshot(
                    EventType.RESET, snap.sequence, snap.handoffs, problem
                ):
                    delivered.inc()
                    yield data
                sub.position = sub.told = snap.sequence
            while True:
                if sub.closed:
                    raise Unavailable(
                        "server is shutting down; resume with "
                        f"after_sequence={sub.position} on another server"
                    )
                if sub.expired:
                    # A stream proves its caller once, at the start; it must not outlive
                    # the proof. The client resumes from its cursor with a fresh token.
                    raise Unauthenticated("token expired")
                if sub.buffer:
                    sequence, data = sub.buffer.popleft()
                    if sequence > sub.position:
                        sub.position = sequence
                        if data:
                            sub.sent = True
                            sub.told = sequence
                            unreported += 1
                            yield data
                    continue
                if sub.lagging:
                    # A stream whose position the feed has not passed joins it at once (the
                    # feed never offers what is at or before the position); only one that
                    # is behind the feed reads the log itself first.
                    if feed.last_seen is None or feed.last_seen > sub.position:
                        async for data in self._catch_up(sub):
                            delivered.inc()
                            yield data
                        await feed.ready.wait()
                    if feed.last_seen is not None and feed.last_seen <= sub.position:
                        sub.lagging = False
                    continue
                if sub.heartbeat_due:
                    sub.heartbeat_due = False
                    delivered.inc()
                    sub.told = sub.position
                    yield self.encoder.control(EventType.HEARTBEAT, sub.position)
                    continue
                # Live events are counted per burst, not one by one: the counter takes a
                # lock each time.
                delivered.inc(unreported)
                unreported = 0
                sub.wake.clear()
                await sub.wake.wait()
        finally:
            delivered.inc(unreported)
            self.hub.unsubscribe(sub)
            if watching is not None:
                watching.left(caller)

    async def _catch_up(self, sub: Subscription) -> AsyncIterator[bytes]:
        """Read the log from the subscriber's position up to the head, in batches."""
        while True:
            async with self.db.read() as s:
                batch = await events.read_after(s, sub.account_id, sub.position, READ_BATCH)
            for event in batch:
                sub.position = event.sequence
                if sub.accepts(event):
                    sub.sent = True
                    sub.told = event.sequence
                    yield self.hub.encode(event)
            if len(batch) < READ_BATCH:
                return
