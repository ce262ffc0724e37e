"""A stream that survives disconnects: reconnect with backoff, resume, never repeat.

The server's per-account sequence makes this simple and exact: remember the last sequence
yielded, reconnect with ``after_sequence`` set to it, and drop anything not newer. A RESET
(cursor too old or ahead of the log) is passed on to the caller, who must rebuild its view
from the snapshot it carries.

A large snapshot arrives in parts (``snapshot_continues`` on all but the last, as no
message exceeds 1 MiB); they are joined here and yielded as one SNAPSHOT or RESET. The
cursor moves to the snapshot's sequence only with the last part, so a stream that breaks
mid-snapshot resumes from where it was and gets a whole snapshot again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from resolutionflow.v1 import handoff_pb2

# Worth retrying: the server went away or is restarting, or the transport broke (gRPC
# reports a reset HTTP/2 stream as INTERNAL). UNKNOWN is not among them: it says nothing
# about the failure being transient, and retrying a call that fails the same way every
# time would spin forever; anything else is the caller's bug.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
    }
)

OpenStream = Callable[[int | None], AsyncIterator[handoff_pb2.HandoffEvent]]

# A stream that ends UNAUTHENTICATED after at least this long (or after any message) had
# a token that was good when it opened and has run out: renewing it is the cure. One
# refused sooner, with nothing received, right after a renewal, is a token the server
# does not accept at all, and retrying would only loop.
PROVEN_SECONDS = 1.0


async def resuming_stream(
    open_stream: OpenStream,
    after: int | None = None,
    *,
    initial_backoff: float = 0.2,
    max_backoff: float = 10.0,
    on_disconnect: Callable[[grpc.aio.AioRpcError, float], None] | None = None,
    on_resume: Callable[[int | None], None] | None = None,
    renew_token: Callable[[], Awaitable[object]] | None = None,
) -> AsyncIterator[handoff_pb2.HandoffEvent]:
    """Yield events from ``open_stream(after)`` forever, reconnecting as needed.

    ``open_stream`` opens one gRPC stream from a cursor (None: snapshot first).
    ``on_disconnect(error, delay)`` is told about each reconnect before it waits;
    ``on_resume(after)`` when a reopened stream delivers its first message, with the
    cursor it resumed from (None: it started over with a snapshot).
    ``renew_token()``: when given, a stream ended by UNAUTHENTICATED (the server ends a
    stream when its token expires) gets a fresh token and resumes at once from the cursor,
    so nothing is lost or repeated across the expiry.
    """
    backoff = initial_backoff
    reopened = False
    renewed = False  # the last reconnect was a token renewal, not yet proven good
    while True:
        opened = time.monotonic()
        # Parts of a snapshot still to be joined; a new connection starts over.
        parts: list[handoff_pb2.HandoffEvent] = []
        try:
            async for event in open_stream(after):
                backoff = initial_backoff
                renewed = False
                if reopened:
                    reopened = False
                    if on_resume is not None:
                        on_resume(after)
                if event.type in (handoff_pb2.EVENT_TYPE_SNAPSHOT, handoff_pb2.EVENT_TYPE_RESET):
                    if event.snapshot_continues:
                        parts.append(event)
                        continue
                    if parts:
                        event = join_snapshot([*parts, event])
                        parts = []
                    after = event.sequence
                    yield event
                elif event.type == handoff_pb2.EVENT_TYPE_HEARTBEAT:
                    yield event
                elif after is None or event.sequence > after:
                    after = event.sequence
                    yield event
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED and renew_token is not None:
                if renewed and time.monotonic() - opened < PROVEN_SECONDS:
                    raise
                renewed = True
                await renew_token()
                if on_disconnect is not None:
                    on_disconnect(error, 0.0)
                reopened = True
                continue
            if error.code() not in RETRYABLE:
                raise
            # Full jitter: replicas restarting together are not hit by every client at once.
            delay = random.uniform(0, backoff)
            if on_disconnect is not None:
                on_disconnect(error, delay)
            reopened = True
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, max_backoff)


def join_snapshot(parts: list[handoff_pb2.HandoffEvent]) -> handoff_pb2.HandoffEvent:
    """One SNAPSHOT (or RESET) from its parts, as if it had come in one message."""
    whole = handoff_pb2.HandoffEvent()
    whole.CopyFrom(parts[-1])
    del whole.snapshot[:]
    for part in parts:
        whole.snapshot.extend(part.snapshot)
    whole.snapshot_continues = False
    return whole
