"""gRPC server streams -> Server-Sent Events.

Framing (docs/design.md §4), plain ``\\n`` line endings::

    retry: 3000                       once, first: how long browsers wait to reconnect

    id: 42                            the event's per-account sequence (resume cursor)
    event: created                    EventType without EVENT_TYPE_, lower case
    data: {"sequence":"42",...}       the HandoffEvent, protobuf JSON mapping, one line

    : ping                            a comment when nothing was sent for a while (at
                                      most heartbeat_seconds: a sweep, SSEStreams)

    event: error                      an upstream error after the stream started,
    data: {"code":"UNAVAILABLE",...}  then the stream ends (the browser reconnects)

A large snapshot arrives from the server in parts (``snapshot_continues`` on all but the
last; no gRPC message exceeds 1 MiB). The gateway joins them and sends one ``snapshot``
(or ``reset``) frame when the last part is in: its ``id`` is the snapshot's sequence, so
a browser's cursor never reaches it before it holds the whole snapshot, and a stream that
breaks mid-snapshot resumes from the cursor it had.

Upstream ``HEARTBEAT`` events are forwarded as ``event: heartbeat`` *with* their ``id``:
their sequence is the position the server-side stream has reached (also past events
this caller may not see), so a browser that reconnects from it resumes exactly there
and does not replay what it already skipped. Readers that only listen for named events
ignore them. The gateway's own ``: ping`` comments keep idle connections (and proxies)
alive independently of the server's heartbeat interval.

Errors before the first byte are ordinary HTTP errors from the status table (a bad
token is 401, a technician on the escalation queue 403), because reconnecting cannot fix
them: the route reads the first upstream message (waiting up to
``sse_first_event_wait_seconds``) before it commits to a 200. The one exception is
``UNAVAILABLE`` (server down or restarting): that is answered as a 200 stream holding
only ``retry:`` and ``event: error``, so that every kind of client, native
``EventSource`` included (it never retries after a non-200), reconnects by itself.

Why our own framing instead of sse-starlette (which is installed):
- Frame once per gateway, not once per browser (docs/design.md §6). Rendering an event to JSON
  with ``json_format`` is pure Python and by far the costliest step; every subscriber of
  an account receives the very same event, so ``Framer`` keeps the finished frame bytes
  in a small bounded cache keyed by the event's wire bytes (re-serializing is C and cheap)
  and every other browser gets the cached bytes. sse-starlette would re-encode each
  ``ServerSentEvent`` per connection.
- Idle-only pings without a second task per connection, exact ``\\n`` framing, our own
  error frame, and no global patching of uvicorn's signal handling (sse-starlette
  replaces ``uvicorn.Server.handle_exit`` at import).
- Disconnect handling is the same idea as sse-starlette's: a watcher on ASGI
  ``receive()`` sees ``http.disconnect`` immediately (even on an idle stream), and the
  upstream call is cancelled in a ``finally`` at once, which frees the server-side
  subscriber (docs/design.md invariant 10).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from resolutionflow.v1 import handoff_pb2
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError, error_response, from_rpc_error
from gateway.fanout import (
    FRAMES_SENT,
    SLOW_DISCONNECTS,
    TOKEN_EXPIRED,
    UPSTREAM_STREAMS,
    WHOLE,
    Browser,
    Fanout,
    OpenCall,
    announced,
    error_frame,
    join_snapshot,
)
from gateway.presence import PresenceReporter
from gateway.protocol import ABORT, DIRECT, ON_LOST
from gateway.upstream import Upstream

log = logging.getLogger(__name__)

PING = b": ping\n\n"
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]
HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
MEDIA_TYPE = "text/event-stream"
# The response head, encoded once (Response.init_headers would encode it per response,
# and every stream kept its own bytes of it).
RAW_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in HEADERS.items()),
    (b"content-type", f"{MEDIA_TYPE}; charset=utf-8".encode("latin-1")),
)

EVENT_NAMES: dict[int, str] = {
    value.number: value.name.removeprefix("EVENT_TYPE_").lower()
    for value in handoff_pb2.EventType.DESCRIPTOR.values
}


def event_name(event_type: int) -> str:
    return EVENT_NAMES.get(event_type) or f"type_{event_type}"


def render(event: handoff_pb2.HandoffEvent) -> bytes:
    data = json.dumps(json_format.MessageToDict(event), separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.sequence}\nevent: {event_name(event.type)}\ndata: {data}\n\n".encode()


class Framer:
    """Renders events to SSE frames, each distinct event once per gateway.

    Subscribers of one account receive byte-identical events from the server, so a
    bounded insertion-ordered cache keyed by those bytes turns N renderings into one.
    The key is the event itself, so a frame can only ever be served for the very event
    it was made from (no cross-account mix-up is possible). Bounded in entries and in
    bytes (keys and frames): snapshots are cached too (browsers connecting at the same
    position share one rendering), and a few thousand distinct snapshots of a large
    queue would otherwise stay cached long after anyone needs them.
    """

    def __init__(
        self,
        capacity: int = 4096,
        max_frame_bytes: int = 256 * 1024,
        max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.capacity = capacity
        self.max_frame_bytes = max_frame_bytes
        self.max_bytes = max_bytes
        self._frames: dict[bytes, bytes] = {}
        self.cached_bytes = 0
        self.rendered = 0

    def frame(self, event: handoff_pb2.HandoffEvent) -> bytes:
        if event.type == handoff_pb2.EVENT_TYPE_HEARTBEAT:
            return render(event)  # per-stream position: nothing to share
        key = event.SerializeToString()
        frames = self._frames
        frame = frames.get(key)
        if frame is None:
            frame = render(event)
            self.rendered += 1
            if len(frame) <= self.max_frame_bytes:
                size = len(key) + len(frame)
                while frames and (
                    len(frames) >= self.capacity or self.cached_bytes + size > self.max_bytes
                ):
                    old = next(iter(frames))
                    self.cached_bytes -= len(old) + len(frames.pop(old))
                frames[key] = frame
                self.cached_bytes += size
        return frame


class SSEStreams:
    """What every stream of one gateway shares: settings, framer, feeds, shutdown signal."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        heartbeat_seconds: float,
        retry_ms: int,
        first_event_wait_seconds: float,
        fanout: bool = True,
        send_timeout_seconds: float = 10.0,
        queue_frames: int = 1000,
        buffer_bytes: int = 1024 * 1024,
        ring_frames: int = 1024,
        ring_bytes: int = 8 * 1024 * 1024,
        linger_seconds: float = 1.0,
        resume_seconds: float = 30.0,
    ) -> None:
        self.upstream = upstream
        self.heartbeat_seconds = heartbeat_seconds
        self.retry_frame = f"retry: {retry_ms}\n\n".encode()
        self.first_event_wait_seconds = first_event_wait_seconds
        self.framer = Framer()
        self.sharing = fanout
        self.send_timeout_seconds = send_timeout_seconds
        self.queue_frames = queue_frames
        self.buffer_bytes = buffer_bytes
        # One timer for the whole gateway finds browsers whose unsent bytes stopped
        # draining (``_sweep``), instead of a timeout around every write.
        self._sweeper: asyncio.TimerHandle | None = None
        settings = upstream.settings
        self.fanout = Fanout(
            self.framer,
            upstream.target,
            ring_frames=ring_frames,
            ring_bytes=ring_bytes,
            linger_seconds=linger_seconds,
            resume_seconds=resume_seconds,
            initial_backoff=settings.upstream_initial_backoff_seconds,
            max_backoff=settings.upstream_max_backoff_seconds,
        )
        # With shared feeds, the server cannot count who watches the queue from its
        # streams: the gateway reports its queue browsers (gateway.presence).
        self.presence = PresenceReporter(lambda: upstream.handoffs) if fanout else None
        # Set when the gateway shuts down: open streams end with event: error.
        self.closing = asyncio.Event()
        self.browsers: set[Browser] = set()
        # When the sweep last looked for browsers due a ``: ping`` (``_sweep``).
        self._pinged_at = 0.0

    def watch(self, browser: Browser) -> None:
        """Keep ``browser`` under the sweep for as long as it is open."""
        self.browsers.add(browser)
        if self._sweeper is None and not self.closing.is_set():
            self._pinged_at = time.monotonic()
            self._arm_sweep()

    def _arm_sweep(self) -> None:
        interval = min(1.0, self.send_timeout_seconds / 4, self.heartbeat_seconds / 2)
        self._sweeper = asyncio.get_running_loop().call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Disconnect browsers whose connection holds unsent bytes that have not shrunk
        for the send timeout: they stopped reading (they resume from what they read).

        And pings: every half ``heartbeat_seconds`` (give or take one sweep interval), a
        browser sent nothing since the previous such pass is woken to send ``: ping``, so
        a stream is never silent for longer than ``heartbeat_seconds`` (the ping comes
        between about a half and the whole interval after its last frame) and an idle
        browser costs no timer of its own. A timed wait per browser cost a timer and a
        timeout object each (0.6 KiB), and an entered and cancelled timer on every
        wake-up."""
        self._sweeper = None
        now = time.monotonic()
        limit = self.send_timeout_seconds
        interval = min(1.0, limit / 4, self.heartbeat_seconds / 2)
        pings = now - self._pinged_at >= self.heartbeat_seconds / 2 - interval
        if pings:
            self._pinged_at = now
        for browser in self.browsers:
            if pings:
                if browser.active:
                    browser.active = False
                elif not browser.ping:
                    browser.ping = True
                    browser.wake()
            direct = browser.direct
            if direct is None:
                continue
            unsent = direct.buffered()
            if unsent == 0:
                browser.stuck_since = None
            elif browser.stuck_since is None or unsent < browser.last_buffered:
                browser.stuck_since = now
            elif now - browser.stuck_since >= limit and not browser.stalled:
                browser.stalled = True
                browser.wake()
            browser.last_buffered = unsent
        if self.browsers:
            self._arm_sweep()

    def shut_down(self) -> None:
        """Every open stream ends with a resumable error; no feed outlives the gateway."""
        self.closing.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        frame = _shutting_down()
        for browser in list(self.browsers):
            browser.finish(frame)
        self.fanout.close()

    async def respond(
        self,
        call: Any,
        *,
        rpc: Callable[..., Any] | None = None,
        request: Any = None,
        cursor: int | None = None,
        authorization: str | None = None,
        reported: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        """The HTTP response for a just-started upstream server-streaming ``call``.

        ``rpc`` and ``request`` (its message, ``after_sequence`` aside) let the browser
        move over to the shared feed of its audience (gateway.fanout); without them the
        browser is served from its own call for the whole stream. ``reported``: the
        metadata that ``call`` was opened with to say that this gateway reports its
        browser's presence (``presence.metadata``; a queue stream), which the shared
        call then carries too.
        """
        self.upstream.track(call)
        UPSTREAM_STREAMS.labels("own").inc()
        call.add_done_callback(lambda _: UPSTREAM_STREAMS.labels("own").dec())
        first = asyncio.ensure_future(call.read())
        try:
            await asyncio.wait({first}, timeout=self.first_event_wait_seconds)
        except BaseException:
            _discard(first)
            call.cancel()
            raise
        if first.done() and not first.cancelled():
            error = first.exception()
            if isinstance(error, grpc.aio.AioRpcError):
                failure = from_rpc_error(error, self.upstream.target)
                if error.code() is grpc.StatusCode.UNAVAILABLE:
                    return SSEResponse(self, call, first, cursor, None, failure)
                return error_response(failure)
            if error is not None:
                call.cancel()
                raise error
        # Its token's expiry comes with the stream's initial metadata (``_own``).
        browser = Browser(authorization or "", None, self.queue_frames, self.buffer_bytes)
        browser.position = cursor
        open_call: OpenCall | None = None
        if self.sharing and rpc is not None and request is not None and authorization:
            open_call = _opener(self, rpc, request, reported)
        return SSEResponse(
            self, call, first, cursor, browser, open_call=open_call, reported=bool(reported)
        )


def _opener(
    streams: SSEStreams,
    rpc: Callable[..., Any],
    request: Any,
    extra: tuple[tuple[str, str], ...] = (),
) -> OpenCall:
    """How a feed (re)opens its shared call: the same RPC, from a sequence, as a caller."""
    kind = type(request)

    def open_call(after: int, authorization: str) -> Any:
        message = kind()
        message.CopyFrom(request)
        message.after_sequence = after
        call = rpc(message, metadata=(("authorization", authorization), *extra))
        streams.upstream.track(call)
        return call

    return open_call


class SSEResponse(Response):
    """Streams one browser's frames until either side goes away.

    The frames come first from the browser's own upstream call, then (once it has joined
    its audience's feed) from the shared one; the writer below only ever drains the
    browser's queue, so a slow socket here never holds up anyone else.
    """

    def __init__(
        self,
        streams: SSEStreams,
        call: Any,
        first: asyncio.Future[Any],
        cursor: int | None,
        browser: Browser | None,
        failure: GatewayError | None = None,
        open_call: OpenCall | None = None,
        reported: bool = False,
    ) -> None:
        # Like StreamingResponse: no body, so no content-length; the stream is chunked.
        self.status_code = 200
        self.media_type = MEDIA_TYPE
        self.background = None
        self.raw_headers = list(RAW_HEADERS)
        self.streams = streams
        # The browser's own upstream call and its first read: released (None) once the
        # browser has joined its feed, so that an idle browser holds no gRPC call.
        self.call: Any = call
        self.first: asyncio.Future[Any] | None = first
        self.cursor = cursor
        self.browser = browser
        self.failure = failure
        self.open_call = open_call
        self.reported = reported
        # Where this browser is in the gateway's presence report (account, token).
        self.watching: tuple[str, str] | None = None
        # Ends the browser when its token expires (set once the server has said when).
        self.expiry: asyncio.TimerHandle | None = None
        # The task reading the browser's own call (``_own``) while it runs.
        self.pump: asyncio.Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streams = self.streams
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            await _body(send, streams.retry_frame)
            if self.failure is not None or self.browser is None:
                assert self.failure is not None
                await _body(send, error_frame(self.failure))
                await _end(send)
                return
        except OSError:
            return
        finally:
            if self.failure is not None:
                self.call.cancel()
        browser = self.browser
        # From here on the feed may write this browser's frames straight to its connection.
        direct = scope.get("extensions", {}).get(DIRECT)
        browser.direct = direct(scope) if direct is not None else None
        streams.watch(browser)
        if streams.closing.is_set():
            browser.finish(_shutting_down())
        self.pump = asyncio.ensure_future(self._own(browser))
        # The client going away ends the stream at once, also a silent one: told by the
        # connection (gateway.protocol), or else by ASGI receive() in a task of its own.
        on_lost = scope.get("extensions", {}).get(ON_LOST)
        disconnect: asyncio.Future[None] | None = None
        if on_lost is not None:
            on_lost(browser.leave)
        else:
            disconnect = asyncio.ensure_future(_watch_disconnect(receive, browser))
        send_timeout = streams.send_timeout_seconds
        try:
            while True:
                if browser.gone:
                    return
                if browser.overflowed:
                    await self._drop(scope, "its queue passed the bound")
                    return
                if browser.stalled:
                    await self._drop(scope, f"it read nothing for {send_timeout}s")
                    return
                if browser.queue:
                    frames = browser.take()
                    count = len(frames)
                    chunk = frames[0] if count == 1 else b"".join(frames)
                    # Not kept while the stream then idles: the last chunk may be its
                    # snapshot, or a join of frames made for this browser alone.
                    frames = []
                    browser.writing = True
                    try:
                        async with asyncio.timeout(send_timeout):
                            await _body(send, chunk)
                    except TimeoutError:
                        await self._drop(scope, f"it read nothing for {send_timeout}s")
                        return
                    finally:
                        browser.writing = False
                    chunk = b""
                    browser.active, browser.ping = True, False
                    FRAMES_SENT.inc(count)
                    continue
                if browser.end is not None:
                    if browser.end:
                        async with asyncio.timeout(send_timeout):
                            await _body(send, browser.end)
                    await _end(send)
                    return
                if browser.ping:
                    browser.ping = False
                    if browser.active:  # the feed wrote to it since the sweep looked
                        continue
                    try:
                        async with asyncio.timeout(send_timeout):
                            await _body(send, PING)
                    except TimeoutError:
                        await self._drop(scope, f"it read nothing for {send_timeout}s")
                        return
                    browser.active = True
                    continue
                await browser.sleep()
        except (OSError, TimeoutError):
            return  # the client went away (or stopped reading) while we were writing
        finally:
            if self.expiry is not None:
                self.expiry.cancel()
            if self.watching is not None and streams.presence is not None:
                streams.presence.remove(*self.watching)
                self.watching = None
            streams.browsers.discard(browser)
            browser.direct = None
            if browser.feed is not None:
                browser.feed.detach(browser)
            # Cancel the upstream call at once: the server frees its subscriber.
            if self.call is not None:
                self.call.cancel()
            if on_lost is not None:
                on_lost(None)
            for task in (self.pump, disconnect):
                if task is not None:
                    _discard(task)

    async def _drop(self, scope: Scope, why: str) -> None:
        """Disconnect a browser that does not keep up; it resumes from what it read."""
        SLOW_DISCONNECTS.inc()
        log.info("disconnected a slow SSE client: %s", why)
        abort = scope.get("extensions", {}).get(ABORT)
        if abort is not None:
            abort()
            # One turn of the loop: the server learns of the closed connection before
            # this response returns unfinished (else it logs that as an app error).
            await asyncio.sleep(0)

    async def _own(self, browser: Browser) -> None:
        """The browser's own upstream call, until it joins the shared feed.

        One task reading in a loop rather than a read future raced against the other
        signals per message: that per-message ``asyncio.wait`` was the gateway's largest
        cost after the gRPC read itself.
        """
        streams = self.streams
        framer = streams.framer
        fanout = streams.fanout
        call = self.call
        open_call = self.open_call
        parts: list[handoff_pb2.HandoffEvent] = []
        try:
            # The server's word on who shares this stream and when its token runs out.
            audience, expires, account = announced(await call.initial_metadata())
            if self.reported and account and streams.presence is not None and not browser.gone:
                # Authorized by the server: from now on this browser is in the reports.
                token = streams.presence.add(account, browser.authorization, expires)
                self.watching = (account, token)
            if expires is not None:
                # Ended then, as the server ends its streams, also once on the shared feed.
                browser.expires_at = expires
                loop = asyncio.get_running_loop()
                self.expiry = loop.call_at(
                    loop.time() + expires - time.time(), browser.finish, TOKEN_EXPIRED
                )
            if open_call is None:
                audience = ""
            elif (
                audience
                and self.cursor is not None
                and fanout.join(browser, audience, open_call, verified=False)
            ):
                return
            assert self.first is not None
            message = await self.first
            while message is not EOF:
                if message.snapshot_continues:
                    parts.append(message)
                else:
                    if parts:
                        message, parts = join_snapshot([*parts, message]), []
                    browser.push(message.sequence, framer.frame(message), message.type in WHOLE)
                    if (
                        audience
                        and open_call is not None
                        and fanout.join(browser, audience, open_call, verified=True)
                    ):
                        return
                    await browser.room()
                message = await call.read()
            browser.finish()
        except grpc.aio.AioRpcError as e:
            browser.finish(error_frame(from_rpc_error(e, streams.upstream.target)))
        except Exception:
            log.exception("reading an upstream stream failed")
            browser.finish(error_frame(GatewayError(grpc.StatusCode.INTERNAL, "stream failed")))
        finally:
            self.pump = None  # this task, done: nothing to hold on to
            if browser.feed is not None:
                # Joined: the shared call carries on from here. The own call, its first
                # read and the request to reopen it are let go of now, not when the
                # stream ends: a cancelled gRPC call still holds its core call (about
                # 20 KiB) until the last reference to it goes, which made up 40 % of an
                # idle browser's memory.
                call.cancel()
                if self.first is not None:
                    _discard(self.first)
                self.call = self.first = self.open_call = None


def _shutting_down() -> bytes:
    return error_frame(
        GatewayError(
            grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down; reconnect to resume"
        )
    )


async def _body(send: Send, chunk: bytes) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _watch_disconnect(receive: Receive, browser: Browser) -> None:
    await _disconnected(receive)
    browser.leave()


async def _end(send: Send) -> None:
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _discard(task: asyncio.Future[Any]) -> None:
    """Stop a helper task and swallow its outcome (nobody is waiting for it any more)."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()
