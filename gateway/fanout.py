"""Edge fan-out: one upstream stream per audience per gateway, shared by its browsers.

Why: with one upstream gRPC stream per browser, every event was received, parsed and
queued once per browser, and the server held one stream per browser. Real-time edges
(Centrifugo nodes, nchan, Pushpin) subscribe once per channel per node and fan out
locally; this module is that shape (docs/design.md §6).

- A ``Feed`` is one upstream stream for one *audience*: the name the server gives, in
  the initial metadata of every stream it authorizes, to the set of callers that see
  exactly the same events (the account's escalation queue; an engineer's WatchHandoffs;
  a technician's own handoffs, which only that technician shares). The gateway never
  decides who sees what: the server's policy names the audience.
- The feed renders each event once (``Framer``), keeps a bounded ring of recent frames
  with their sequences, and hands each frame to every attached ``Browser``: written
  straight to the browser's connection when nothing of its own is pending (the direct
  writer of gateway.protocol, synchronously, no task woken), else appended to its bounded
  queue, which the browser's writer drains. Nothing ever waits for a slow browser: one
  whose connection holds more than its byte bound unsent, or holds unsent bytes that do
  not shrink for the send timeout (``SSEStreams``' sweep), is disconnected and resumes
  from its ``Last-Event-ID``.
- A browser is authorized by the server, never by the gateway alone: it connects with
  its own upstream call and its own token. That call gives it its snapshot (or replay,
  or RESET) up to a position P, and proves the token. It then joins the feed when the
  ring covers P (``floor <= P``): the ring's frames after P are queued, and from then on
  the feed's; frames at or before a browser's position are dropped, so there is no gap
  and no duplicate. While the ring does not reach back to P the browser keeps reading
  its own call, which moves P forward, and tries again after each message. A browser
  resuming with a cursor that the feed has already passed within its ring joins as soon
  as the server has accepted its call (the initial metadata), without waiting for a
  message that an idle stream might not send for a heartbeat interval.
- The shared upstream call runs with the token of an attached browser (the one that
  expires last). When it breaks (server restart, replica killed, that token expired) the
  feed reopens it from its last sequence with a live token: browsers see neither gap nor
  duplicate and keep their connection. Only when it cannot be resumed for
  ``resume_seconds`` (or the server refuses it for good) do its browsers get the
  ``event: error`` frame and reconnect. A RESET from upstream goes to every browser.
- The gateway ends each browser's stream when its own token expires, with the same
  ``UNAUTHENTICATED`` "token expired" frame the server sends on its streams.
- The last browser leaving starts a short linger before the upstream call is cancelled,
  so a page reload reuses the feed instead of costing the server a new stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge
from resolutionflow.v1 import handoff_pb2

from gateway.errors import GatewayError, error_json, from_rpc_error
from gateway.protocol import DirectWriter

log = logging.getLogger(__name__)

# The initial-metadata key by which the server names a stream's audience.
AUDIENCE_KEY = "rf-stream-audience"
EXPIRES_KEY = "rf-stream-expires"
ACCOUNT_KEY = "rf-stream-account"
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]

BROWSERS = Gauge(
    "resolutionflow_gateway_sse_browsers",
    "SSE browsers attached to a shared upstream feed",
)
UPSTREAM_STREAMS = Gauge(
    "resolutionflow_gateway_sse_upstream_streams",
    "Upstream gRPC streams held for SSE: shared feeds, and browsers' own calls "
    "(open only until the browser joins its feed)",
    ["kind"],
)
FRAMES_SENT = Counter(
    "resolutionflow_gateway_sse_frames_sent_total", "SSE frames written to browsers"
)
FRAMES_DIRECT = Counter(
    "resolutionflow_gateway_sse_frames_direct_total",
    "SSE frames a feed wrote straight to a browser's connection (part of frames sent)",
)
SLOW_DISCONNECTS = Counter(
    "resolutionflow_gateway_sse_slow_disconnects_total",
    "Browsers disconnected because they did not read fast enough",
)

# Upstream statuses after which a shared call is reopened from its last sequence.
RESUMABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNAUTHENTICATED,  # the token it ran with expired: take another
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
WHOLE = (handoff_pb2.EVENT_TYPE_SNAPSHOT, handoff_pb2.EVENT_TYPE_RESET)


def error_frame(error: GatewayError) -> bytes:
    return b"event: error\ndata: " + error_json(error) + b"\n\n"


def join_snapshot(parts: list[handoff_pb2.HandoffEvent]) -> handoff_pb2.HandoffEvent:
    """One SNAPSHOT (or RESET) from the parts the server sent it in."""
    whole = handoff_pb2.HandoffEvent()
    whole.CopyFrom(parts[-1])
    del whole.snapshot[:]
    for part in parts:
        whole.snapshot.extend(part.snapshot)
    whole.snapshot_continues = False
    return whole


TOKEN_EXPIRED = error_frame(GatewayError(grpc.StatusCode.UNAUTHENTICATED, "token expired"))


def announced(metadata: Any) -> tuple[str, float | None, str]:
    """The audience, token expiry and account the server announced in a stream's initial
    metadata.

    The server names them (server/streaming/streams.py): which browsers see the same
    events, when this browser's token runs out, and whose account it is (presence is
    reported by account). The gateway reads no token itself.
    """
    audience, expires, account = "", None, ""
    for key, value in metadata or ():
        if not isinstance(value, str):
            continue
        if key == AUDIENCE_KEY:
            audience = value
        elif key == ACCOUNT_KEY:
            account = value
        elif key == EXPIRES_KEY:
            try:
                expires = float(value)
            except ValueError:
                expires = None
    return audience, expires, account


class Browser:
    """One attached SSE response: a bounded queue of frames and where it stands."""

    __slots__ = (
        "_room",
        "_waiter",
        "active",
        "authorization",
        "buffer_limit",
        "direct",
        "end",
        "expires_at",
        "feed",
        "gone",
        "last_buffered",
        "limit",
        "overflowed",
        "ping",
        "position",
        "queue",
        "stalled",
        "stuck_since",
        "writing",
    )

    def __init__(
        self,
        authorization: str,
        expires_at: float | None,
        limit: int,
        buffer_limit: int = 1024 * 1024,
    ) -> None:
        self.authorization = authorization
        self.expires_at = expires_at
        self.limit = limit
        # Direct writes (``DirectWriter``), once the response has started and the browser
        # is on a shared feed: at most ``buffer_limit`` bytes may wait unsent.
        self.direct: DirectWriter | None = None
        self.buffer_limit = buffer_limit
        # The writer is passing queued frames to the connection: direct writes wait (in
        # the queue) so that frames keep their order.
        self.writing = False
        # Something was written to it (by the feed directly, or by its writer) since the
        # ping sweep's last pass (gateway.sse): no ping needed. A new browser has just
        # been sent its first frames.
        self.active = True
        # A ``: ping`` is due (set by the sweep, which wakes the writer).
        self.ping = False
        # The sweep's view of unsent bytes: since when they have not shrunk, and how many.
        self.stuck_since: float | None = None
        self.last_buffered = 0
        self.stalled = False
        self.queue: list[bytes] = []
        # The last sequence queued for it (what it has, once the queue is written).
        self.position: int | None = None
        # A last frame to write before the response ends (b"": end without one).
        self.end: bytes | None = None
        self.overflowed = False
        self.gone = False
        self.feed: Feed | None = None
        # What the writer waits on while it has nothing to write, and what the browser's
        # own call waits on while the queue is over half full: a future each, made only
        # while someone waits (an asyncio.Event costs about 0.9 KiB, most of it the
        # deque of its waiters, and an idle browser would hold two).
        self._waiter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None

    def push(self, sequence: int, frame: bytes, whole: bool = False) -> bool:
        """Hand over a frame unless the browser already has it. ``whole``: a SNAPSHOT or
        RESET, which replaces what the browser holds whatever its position. True if it
        was written straight to the connection, False if queued (or not needed)."""
        if not whole and self.position is not None and sequence <= self.position:
            return False
        self.position = sequence
        direct = self.direct
        if (
            direct is not None
            and self.feed is not None
            and not self.queue
            and not self.writing
            and self.end is None
            and not self.overflowed
        ):
            if not direct.write(frame):
                self.gone = True
                self.wake()
                return False
            self.active = True
            if direct.buffered() > self.buffer_limit:
                # Never wait for it: it is disconnected and resumes from what it has read.
                self.overflowed = True
                self.wake()
            return True
        if len(self.queue) >= self.limit:
            # Never wait for it: it is disconnected and resumes from what it has read.
            self.overflowed = True
        else:
            self.queue.append(frame)
        self.wake()
        return False

    def take(self) -> list[bytes]:
        """The writer takes the queued frames (the browser's own call may go on)."""
        frames, self.queue = self.queue, []
        _resolve(self._room)
        return frames

    def wake(self) -> None:
        """The writer has something to do (frames, the end, a ping, the client gone)."""
        _resolve(self._waiter)

    async def sleep(self) -> None:
        """The writer's wait until ``wake``. It checks what to do just before (with no
        await in between), so nothing that happens before this wait is missed."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    async def room(self) -> None:
        """Until the queue is at most half full (or the stream is ending)."""
        while len(self.queue) > self.limit // 2 and self.end is None and not self.gone:
            waiter = self._room = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._room = None

    def finish(self, frame: bytes = b"") -> None:
        if self.end is None:
            self.end = frame
            self.wake()
            _resolve(self._room)

    def leave(self) -> None:
        """The client went away."""
        self.gone = True
        self.wake()
        _resolve(self._room)


def _resolve(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


OpenCall = Callable[[int, str], Any]


class Feed:
    """One shared upstream stream, its ring of recent frames, and its browsers."""

    def __init__(self, fanout: Fanout, audience: str, open_call: OpenCall, position: int) -> None:
        self.fanout = fanout
        self.audience = audience
        self.open_call = open_call
        # Every event after ``floor`` up to ``position`` is in the ring.
        self.position = position
        self.floor = position
        self.ring: deque[tuple[int, bytes]] = deque()
        self.ring_bytes = 0
        self.browsers: set[Browser] = set()
        self.authorization = ""
        self.expires_at: float | None = None
        self.call: Any = None
        self.closed = False
        self.linger: asyncio.TimerHandle | None = None
        UPSTREAM_STREAMS.labels("shared").inc()
        self.task = asyncio.create_task(self._run(), name=f"feed:{audience}")

    # ---- browsers ------------------------------------------------------------------

    def attach(self, browser: Browser, verified: bool) -> bool:
        """Join ``browser`` at its position if the ring covers it; False if not yet.

        ``verified``: the position came from the browser's own upstream call. An
        unverified one (the browser's cursor) is only trusted within what this feed has
        seen, since a cursor ahead of the log must get the server's RESET.
        """
        position = browser.position
        if self.closed or position is None or position < self.floor:
            return False
        if not verified and position > self.position:
            return False
        # The ring's frames after the position go into the browser's queue at once: while
        # they would fill half of it, the browser's own call (which waits for its writer)
        # serves it instead, so joining never overflows a browser that reads fine.
        missing: list[tuple[int, bytes]] = []
        for entry in reversed(self.ring):
            if entry[0] <= position:
                break
            missing.append(entry)
            if len(missing) > browser.limit // 2:
                return False
        for sequence, frame in reversed(missing):
            browser.push(sequence, frame)
        self.browsers.add(browser)
        browser.feed = self
        BROWSERS.inc()
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        self._remember(browser)
        return True

    def detach(self, browser: Browser) -> None:
        if browser not in self.browsers:
            return
        self.browsers.discard(browser)
        browser.feed = None
        BROWSERS.dec()
        if not self.browsers and not self.closed:
            linger = self.fanout.linger_seconds
            if linger > 0:
                self.linger = asyncio.get_running_loop().call_later(linger, self.close)
            else:
                self.close()

    def _remember(self, browser: Browser) -> None:
        """Keep the credential that lasts longest: the shared call runs with it."""
        if not self.authorization or (
            browser.expires_at is not None
            and self.expires_at is not None
            and browser.expires_at > self.expires_at
        ):
            self.authorization, self.expires_at = browser.authorization, browser.expires_at

    def _credential(self) -> str | None:
        now = time.time()
        best: Browser | None = None
        for b in self.browsers:
            lasts = float("inf") if b.expires_at is None else b.expires_at
            if lasts > now and (best is None or lasts > (best.expires_at or float("inf"))):
                best = b
        if best is not None:
            self.authorization, self.expires_at = best.authorization, best.expires_at
            return best.authorization
        if self.authorization and (self.expires_at is None or self.expires_at > now):
            return self.authorization
        return None

    # ---- the upstream call ---------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._follow()
        except Exception:
            # Never leave browsers attached to a feed that stopped: they reconnect.
            log.exception("shared stream %s failed", self.audience)
            self._fail(error_frame(GatewayError(grpc.StatusCode.INTERNAL, "stream failed")))

    async def _follow(self) -> None:
        fanout = self.fanout
        delay = fanout.initial_backoff
        down_since: float | None = None
        while not self.closed:
            authorization = self._credential()
            if authorization is None:
                self._fail(TOKEN_EXPIRED)
                return
            call = self.call = self.open_call(self.position, authorization)
            parts: list[handoff_pb2.HandoffEvent] = []
            failure: GatewayError
            try:
                while True:
                    message = await call.read()
                    if message is EOF:  # a server never ends a stream by itself: resume
                        failure = GatewayError(
                            grpc.StatusCode.UNAVAILABLE, "the upstream stream ended"
                        )
                        break
                    down_since, delay = None, fanout.initial_backoff
                    if message.snapshot_continues:
                        parts.append(message)
                        continue
                    if parts:
                        message, parts = join_snapshot([*parts, message]), []
                    self._publish(message)
            except grpc.aio.AioRpcError as e:
                failure = from_rpc_error(e, fanout.target)
                if e.code() not in RESUMABLE:
                    self._fail(error_frame(failure))
                    return
            finally:
                call.cancel()
            now = time.monotonic()
            if down_since is None:
                down_since = now
            elif now - down_since > fanout.resume_seconds:
                self._fail(error_frame(failure))
                return
            log.info(
                "shared stream %s broke (%s); resuming after sequence %s",
                self.audience,
                failure.code.name,
                self.position,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, fanout.max_backoff)

    def _publish(self, message: handoff_pb2.HandoffEvent) -> None:
        sequence = message.sequence
        whole = message.type in WHOLE
        if not whole and sequence <= self.position:
            return
        frame = self.fanout.framer.frame(message)
        if whole:
            # A RESET replaces every browser's state: the ring starts over after it.
            self.ring.clear()
            self.ring_bytes = 0
            self.floor = sequence
        else:
            ring = self.ring
            ring.append((sequence, frame))
            self.ring_bytes += len(frame)
            fanout = self.fanout
            while len(ring) > fanout.ring_frames or (
                self.ring_bytes > fanout.ring_bytes and len(ring) > 1
            ):
                dropped, old = ring.popleft()
                self.ring_bytes -= len(old)
                self.floor = dropped
        self.position = sequence
        written = 0
        for browser in self.browsers:
            if browser.push(sequence, frame, whole):
                written += 1
        if written:
            FRAMES_SENT.inc(written)
            FRAMES_DIRECT.inc(written)

    def _fail(self, frame: bytes) -> None:
        """The shared call cannot go on: its browsers get ``frame`` and reconnect."""
        now = time.time()
        for browser in list(self.browsers):
            expired = browser.expires_at is not None and browser.expires_at <= now
            browser.finish(TOKEN_EXPIRED if expired else frame)
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        if self.fanout.feeds.get(self.audience) is self:
            del self.fanout.feeds[self.audience]
        for browser in list(self.browsers):
            self.detach(browser)
        if self.call is not None:
            self.call.cancel()
        if asyncio.current_task() is not self.task:
            self.task.cancel()
        UPSTREAM_STREAMS.labels("shared").dec()


class Fanout:
    """The gateway's feeds, by audience."""

    def __init__(
        self,
        framer: Any,
        target: str,
        *,
        ring_frames: int,
        ring_bytes: int,
        linger_seconds: float,
        resume_seconds: float,
        initial_backoff: float,
        max_backoff: float,
    ) -> None:
        self.framer = framer
        self.target = target
        self.ring_frames = ring_frames
        self.ring_bytes = ring_bytes
        self.linger_seconds = linger_seconds
        self.resume_seconds = resume_seconds
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.feeds: dict[str, Feed] = {}

    def join(self, browser: Browser, audience: str, open_call: OpenCall, verified: bool) -> bool:
        """Attach ``browser`` to the feed of ``audience`` (started at its position if
        there is none); False while the feed's ring does not reach back to it."""
        feed = self.feeds.get(audience)
        if feed is None:
            if browser.position is None:
                return False
            # A feed opened at an unverified cursor is still right: the server answers
            # it exactly as it would the browser's own call (replay or RESET).
            feed = self.feeds[audience] = Feed(self, audience, open_call, browser.position)
        return feed.attach(browser, verified)

    def close(self) -> None:
        for feed in list(self.feeds.values()):
            feed.close()
