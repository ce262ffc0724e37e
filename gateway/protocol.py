"""uvicorn's HTTP/1.1 protocols with bounds on how slowly a client may send a request.

uvicorn bounds an idle kept-alive connection (``timeout_keep_alive``) but not a request
in progress: its keep-alive timer stops at the first byte, so a client that sends its
headers one byte every few seconds (slowloris) holds a connection, and a slot of the
process's descriptors, for as long as it likes. uvicorn has no option for it, so these
subclasses of its protocols keep two timers on each connection:

- the request line and headers must be complete within ``header_timeout`` of the
  connection opening, or of the previous response on a kept-alive connection;
- the body must be complete within ``body_timeout`` of the headers. The gateway's body
  reader answers 408 at the same bound; this timer is the backstop for routes that do
  not read their body, and it closes the connection a moment later.

Either way the connection is closed and one INFO line logged.

Each request's ASGI scope also carries ``extensions["gateway.abort"]``: a way for the SSE
fan-out (gateway.fanout) to drop the connection of a browser that stopped reading. ASGI
itself can only end a response politely, which waits for the unread bytes to drain, that
is forever for a reader that is stuck. And ``extensions["gateway.on_lost"]``: a callback
when the connection is lost, so that an idle SSE response needs no task of its own
waiting on ``receive()`` for ``http.disconnect``.

With httptools, the scope also carries ``extensions["gateway.direct"]``: given the scope,
a ``DirectWriter`` that writes body chunks of the started (chunked) response straight to
the connection. The SSE fan-out writes each event to every browser with it, synchronously
from the feed, instead of waking each browser's task to pass the frame through the ASGI
middleware chain and uvicorn's ``send`` (which was most of the gateway's CPU per
delivery). It frames chunks exactly as uvicorn does; the response's start and end still
go through ``send``. h11 keeps its own state of the response, so it offers no such writer
and its streams take the ASGI path.

Both of uvicorn's parsers get the same bounds: httptools (llhttp, in C; the default,
``RF_HTTP_PARSER=httptools``, since it parses and frames with less CPU per request) and
h11 (pure Python; ``RF_HTTP_PARSER=h11``). The choice is always explicit, never uvicorn's
"auto", so the bounds hold whatever extras are installed: an unbounded protocol is never
picked by accident.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("gateway.protocol")

# The body timer closes the connection this long after the bound, so that the gateway's
# own 408 (sent at the bound by the body reader) goes out first when a route reads.
BODY_BACKSTOP_GRACE_SECONDS = 1.0
# The scope extension that drops the connection at once (unsent bytes are discarded).
ABORT = "gateway.abort"
# The scope extension that calls back once when the connection is lost (at once if it
# already is; ``None`` unregisters): how an SSE response learns that its client went
# away without a task per response waiting on ASGI ``receive`` for ``http.disconnect``.
ON_LOST = "gateway.on_lost"
# The scope extension that gives a started chunked response's direct writer.
DIRECT = "gateway.direct"


class DirectWriter:
    """Body chunks of one started chunked response, written straight to its transport."""

    __slots__ = ("_cycle", "_transport")

    def __init__(self, cycle: Any, transport: asyncio.Transport) -> None:
        self._cycle = cycle
        self._transport = transport

    def write(self, chunk: bytes) -> bool:
        """Write one chunk (never waits); False if the connection is gone."""
        if self._cycle.disconnected or self._transport.is_closing():
            return False
        # uvicorn's chunked framing, in one write.
        self._transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        return True

    def buffered(self) -> int:
        """Bytes written but not yet taken by the socket."""
        return self._transport.get_write_buffer_size()


class _State:
    """A connection's own state here, in one attribute of the protocol.

    uvicorn's httptools protocol sets 28 attributes on itself; CPython keeps an
    instance's attributes in a compact dict shared in layout with its class's other
    instances only up to 29 (then each connection gets a 1.5 KiB dict of its own), so
    these bounds add one attribute, not four.
    """

    __slots__ = ("begun", "body_timer", "header_timer", "lost", "on_lost", "phase")

    def __init__(self) -> None:
        self.header_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        # httptools: the part of the request awaited, and whether any byte of it came.
        self.phase = "headers"
        self.begun = False
        self.lost = False
        self.on_lost: Callable[[], None] | None = None


class _Bounds:
    """The two timers, for a protocol that says which part of a request it awaits."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    client: tuple[str, int] | None
    _state: _State

    def _awaiting(self) -> str:
        """ "headers" (between requests, or in them), "body", or "" (the app's turn)."""
        raise NotImplementedError

    def _request_begun(self) -> bool:
        """Whether any byte of the awaited request has arrived."""
        raise NotImplementedError

    def _update_timers(self) -> None:
        """Arm the timer of the part of a request being waited for; stop the other."""
        if self.transport is None or self.transport.is_closing():
            return
        awaiting = self._awaiting()
        state = self._state
        if awaiting == "headers":
            self._cancel_body_timer()
            if state.header_timer is None:
                state.header_timer = self.loop.call_later(self.header_timeout, self._headers_late)
        elif awaiting == "body":
            self._cancel_header_timer()
            if state.body_timer is None:
                state.body_timer = self.loop.call_later(
                    self.body_timeout + BODY_BACKSTOP_GRACE_SECONDS, self._body_late
                )
        else:
            self._cancel_header_timer()
            self._cancel_body_timer()

    def _cancel_timers(self) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()

    def _cancel_header_timer(self) -> None:
        state = self._state
        if state.header_timer is not None:
            state.header_timer.cancel()
            state.header_timer = None

    def _cancel_body_timer(self) -> None:
        state = self._state
        if state.body_timer is not None:
            state.body_timer.cancel()
            state.body_timer = None

    def _headers_late(self) -> None:
        self._state.header_timer = None
        if self.transport.is_closing() or self._awaiting() != "headers":
            return
        if self._request_begun():
            # A request was under way: worth a line. An idle kept-alive connection that
            # simply sent nothing more is routine and closed quietly.
            log.info(
                "closed a connection whose request headers did not arrive within %ss",
                self.header_timeout,
                extra={"client": _client(self.client)},
            )
        self.transport.close()

    def _body_late(self) -> None:
        self._state.body_timer = None
        if self.transport.is_closing() or self._awaiting() != "body":
            return
        log.info(
            "closed a connection whose request body did not arrive within %ss",
            self.body_timeout,
            extra={"client": _client(self.client)},
        )
        self.transport.close()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _extensions(self) -> dict[str, object]:
        return {ABORT: self._abort, ON_LOST: self._watch_lost}

    def _watch_lost(self, callback: Callable[[], None] | None) -> None:
        state = self._state
        if callback is not None and state.lost:
            callback()
        else:
            state.on_lost = callback

    def _lost(self) -> None:
        state = self._state
        state.lost = True
        self._cancel_timers()
        callback, state.on_lost = state.on_lost, None
        if callback is not None:
            callback()


class BoundedH11Protocol(_Bounds, H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._state = _State()
        super().connection_made(transport)
        self._update_timers()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._lost()

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if cycle is not None and "extensions" not in cycle.scope:
            # The request's task has not started yet: the app sees this entry.
            cycle.scope["extensions"] = self._extensions()  # type: ignore[typeddict-item]
        self._update_timers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._update_timers()

    def _awaiting(self) -> str:
        state = self.conn.their_state
        if state is h11.IDLE:
            return "headers"
        return "body" if state is h11.SEND_BODY else ""

    def _request_begun(self) -> bool:
        pending, _ = self.conn.trailing_data
        return bool(pending)


class BoundedHttpToolsProtocol(_Bounds, HttpToolsProtocol):
    """The same bounds on uvicorn's httptools protocol, from its parser callbacks: the
    header timer runs from the connection (or the previous response) to the end of the
    headers, the body timer from there to the end of the message."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._state = _State()
        super().connection_made(transport)
        self._update_timers()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._lost()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._state.begun = True
        # The scope the request's cycle will carry (its task starts after the headers).
        self.scope["extensions"] = self._extensions()  # type: ignore[typeddict-item]

    def _extensions(self) -> dict[str, object]:
        return {ABORT: self._abort, ON_LOST: self._watch_lost, DIRECT: self._direct_writer}

    def _direct_writer(self, scope: Any) -> DirectWriter | None:
        """The direct writer of ``scope``'s response, once it has started chunked (None
        if it has not, has ended, or is not the response this connection is on)."""
        cycle = self.cycle
        if (
            cycle is None
            or cycle.scope is not scope
            or not cycle.response_started
            or cycle.response_complete
            or not cycle.chunked_encoding
            or scope.get("method") == "HEAD"
        ):
            return None
        return DirectWriter(cycle, self.transport)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._state.phase = "body"
        self._update_timers()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._state.phase = ""
        self._update_timers()

    def on_response_complete(self) -> None:
        # A pipelined request already parsed starts now: the app's turn, not the client's.
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        state = self._state
        if state.phase == "" and not pipelined:
            state.phase, state.begun = "headers", False
        self._update_timers()

    def _awaiting(self) -> str:
        return self._state.phase

    def _request_begun(self) -> bool:
        return self._state.begun


def _client(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else ""


PARSERS: dict[str, type[H11Protocol] | type[HttpToolsProtocol]] = {
    "h11": BoundedH11Protocol,
    "httptools": BoundedHttpToolsProtocol,
}


def bounded_protocol(
    header_timeout: float, body_timeout: float, parser: str = "httptools"
) -> type[H11Protocol] | type[HttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with these bounds."""
    base = PARSERS[parser]
    return type(
        f"Gateway{base.__name__}",
        (base,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )
