"""uvicorn's HTTP/1.1 protocol with bounds on how slowly a client may send a request.

uvicorn bounds an idle kept-alive connection (``timeout_keep_alive``) but not a request
in progress: its keep-alive timer stops at the first byte, so a client that sends its
headers one byte every few seconds (slowloris) holds a connection, and a slot of the
process's descriptors, for as long as it likes. uvicorn has no option for it, so this
subclass of its h11 protocol keeps two timers on each connection:

- the request line and headers must be complete within ``header_timeout`` of the
  connection opening, or of the previous response on a kept-alive connection;
- the body must be complete within ``body_timeout`` of the headers. The gateway's body
  reader answers 408 at the same bound; this timer is the backstop for routes that do
  not read their body, and it closes the connection a moment later.

Either way the connection is closed and one INFO line logged.

Each request's ASGI scope also carries ``extensions["gateway.abort"]``: a way for the SSE
fan-out (gateway.fanout) to drop the connection of a browser that stopped reading. ASGI
itself can only end a response politely, which waits for the unread bytes to drain, that
is forever for a reader that is stuck. The h11 protocol is used
always (not uvicorn's "auto" choice of httptools when installed), so the bounds hold
whatever extras are installed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("gateway.protocol")

# The body timer closes the connection this long after the bound, so that the gateway's
# own 408 (sent at the bound by the body reader) goes out first when a route reads.
BODY_BACKSTOP_GRACE_SECONDS = 1.0
# The scope extension that drops the connection at once (unsent bytes are discarded).
ABORT = "gateway.abort"


class BoundedH11Protocol(H11Protocol):
    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._update_timers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if cycle is not None and "extensions" not in cycle.scope:
            # The request's task has not started yet: the app sees this entry.
            cycle.scope["extensions"] = {ABORT: self._abort}  # type: ignore[dict-item]
        self._update_timers()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._update_timers()

    def _update_timers(self) -> None:
        """Arm the timer of the part of a request being waited for; stop the other."""
        if self.transport is None or self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            self._cancel_body_timer()
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)
        elif state is h11.SEND_BODY:
            self._cancel_header_timer()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(
                    self.body_timeout + BODY_BACKSTOP_GRACE_SECONDS, self._body_late
                )
        else:
            self._cancel_header_timer()
            self._cancel_body_timer()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        pending, _ = self.conn.trailing_data
        if pending:
            # A request was under way: worth a line. An idle kept-alive connection that
            # simply sent nothing more is routine and closed quietly.
            log.info(
                "closed a connection whose request headers did not arrive within %ss",
                self.header_timeout,
                extra={"client": _client(self.client)},
            )
        self.transport.close()

    def _body_late(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        log.info(
            "closed a connection whose request body did not arrive within %ss",
            self.body_timeout,
            extra={"client": _client(self.client)},
        )
        self.transport.close()


def _client(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else ""


def bounded_protocol(header_timeout: float, body_timeout: float) -> type[H11Protocol]:
    """The protocol class uvicorn instantiates per connection, with these bounds."""
    return type(
        "GatewayH11Protocol",
        (BoundedH11Protocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )
