"""gRPC server streams -> Server-Sent Events.

Framing (docs/design.md §4), plain ``\\n`` line endings::

    retry: 3000                       once, first: how long browsers wait to reconnect

    id: 42                            the event's per-account sequence (resume cursor)
    event: created                    EventType without EVENT_TYPE_, lower case
    data: {"sequence":"42",...}       the HandoffEvent, protobuf JSON mapping, one line

    : ping                            a comment when nothing was sent for heartbeat_seconds

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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from resolutionflow.v1 import handoff_pb2
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError, error_json, error_response, from_rpc_error
from gateway.upstream import Upstream

PING = b": ping\n\n"
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]
HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
MEDIA_TYPE = "text/event-stream"

EVENT_NAMES: dict[int, str] = {
    value.number: value.name.removeprefix("EVENT_TYPE_").lower()
    for value in handoff_pb2.EventType.DESCRIPTOR.values
}


def event_name(event_type: int) -> str:
    return EVENT_NAMES.get(event_type) or f"type_{event_type}"


def render(event: handoff_pb2.HandoffEvent) -> bytes:
    data = json.dumps(json_format.MessageToDict(event), separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.sequence}\nevent: {event_name(event.type)}\ndata: {data}\n\n".encode()


def join_snapshot(parts: list[handoff_pb2.HandoffEvent]) -> handoff_pb2.HandoffEvent:
    """One SNAPSHOT (or RESET) from the parts the server sent it in."""
    whole = handoff_pb2.HandoffEvent()
    whole.CopyFrom(parts[-1])
    del whole.snapshot[:]
    for part in parts:
        whole.snapshot.extend(part.snapshot)
    whole.snapshot_continues = False
    return whole


def error_frame(error: GatewayError) -> bytes:
    return b"event: error\ndata: " + error_json(error) + b"\n\n"


class Framer:
    """Renders events to SSE frames, each distinct event once per gateway.

    Subscribers of one account receive byte-identical events from the server, so a
    bounded insertion-ordered cache keyed by those bytes turns N renderings into one.
    The key is the event itself, so a frame can only ever be served for the very event
    it was made from (no cross-account mix-up is possible).
    """

    def __init__(self, capacity: int = 4096, max_frame_bytes: int = 256 * 1024) -> None:
        self.capacity = capacity
        self.max_frame_bytes = max_frame_bytes
        self._frames: dict[bytes, bytes] = {}
        self.rendered = 0

    def frame(self, event: handoff_pb2.HandoffEvent) -> bytes:
        if event.type == handoff_pb2.EVENT_TYPE_HEARTBEAT:
            return render(event)  # per-stream position: nothing to share
        key = event.SerializeToString()
        frame = self._frames.get(key)
        if frame is None:
            frame = render(event)
            self.rendered += 1
            if len(frame) <= self.max_frame_bytes:
                if len(self._frames) >= self.capacity:
                    del self._frames[next(iter(self._frames))]
                self._frames[key] = frame
        return frame


class SSEStreams:
    """What every stream of one gateway shares: settings, framer, shutdown signal."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        heartbeat_seconds: float,
        retry_ms: int,
        first_event_wait_seconds: float,
    ) -> None:
        self.upstream = upstream
        self.heartbeat_seconds = heartbeat_seconds
        self.retry_frame = f"retry: {retry_ms}\n\n".encode()
        self.first_event_wait_seconds = first_event_wait_seconds
        self.framer = Framer()
        # Set when the gateway shuts down: open streams end with event: error.
        self.closing = asyncio.Event()

    async def respond(self, call: Any) -> Response:
        """The HTTP response for a just-started upstream server-streaming ``call``."""
        self.upstream.track(call)
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
                    return SSEResponse(self, call, first, failure)
                return error_response(failure)
            if error is not None:
                call.cancel()
                raise error
        return SSEResponse(self, call, first)


class SSEResponse(Response):
    """Streams one upstream call as SSE until either side goes away."""

    def __init__(
        self,
        streams: SSEStreams,
        call: Any,
        first: asyncio.Future[Any],
        failure: GatewayError | None = None,
    ) -> None:
        # Like StreamingResponse: no body, so no content-length; the stream is chunked.
        self.status_code = 200
        self.media_type = MEDIA_TYPE
        self.background = None
        self.init_headers(HEADERS)
        self.streams = streams
        self.call = call
        self.first = first
        self.failure = failure
        self.sent = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streams = self.streams
        # The pump and the pings/shutdown below both write; a lock keeps frames whole.
        sending = asyncio.Lock()

        async def body(chunk: bytes) -> None:
            async with sending:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            await body(streams.retry_frame)
            if self.failure is not None:
                await body(error_frame(self.failure))
                await _end(send)
                return
        except OSError:
            return
        pump = asyncio.ensure_future(self._pump(body, send))
        disconnect = asyncio.ensure_future(_disconnected(receive))
        closing = asyncio.ensure_future(streams.closing.wait())
        try:
            while True:
                self.sent = False
                done, _ = await asyncio.wait(
                    {pump, disconnect, closing},
                    timeout=streams.heartbeat_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if disconnect in done:
                    return
                if pump in done:
                    pump.result()  # it ended the response itself (EOF or an upstream error)
                    return
                if closing in done:
                    await body(
                        error_frame(
                            GatewayError(
                                grpc.StatusCode.UNAVAILABLE,
                                "the gateway is shutting down; reconnect to resume",
                            )
                        )
                    )
                    await _end(send)
                    return
                if not self.sent:
                    await body(PING)
        except OSError:
            return  # the client went away while we were writing
        finally:
            # Cancel the upstream call at once: the server frees its subscriber.
            self.call.cancel()
            for task in (pump, disconnect, closing):
                _discard(task)

    async def _pump(self, body: Callable[[bytes], Awaitable[None]], send: Send) -> None:
        """Upstream messages to frames, in one task for the life of the stream.

        One task reading in a loop rather than a read future raced against the other
        signals per message: that per-message ``asyncio.wait`` was the gateway's largest
        cost after the gRPC read itself.
        """
        framer = self.streams.framer
        parts: list[handoff_pb2.HandoffEvent] = []
        try:
            message = await self.first
            while message is not EOF:
                if message.snapshot_continues:
                    parts.append(message)
                else:
                    if parts:
                        message, parts = join_snapshot([*parts, message]), []
                    await body(framer.frame(message))
                    self.sent = True
                message = await self.call.read()
        except grpc.aio.AioRpcError as e:
            await body(error_frame(from_rpc_error(e, self.streams.upstream.target)))
        await _end(send)


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
