"""Wake-ups over core NATS: "account X's log moved to N", published after commit.

Why NATS instead of PostgreSQL NOTIFY: a transaction that notifies takes an
instance-wide lock during commit (so that notifications queue in commit order), and every
notifying writer waits on it. Here nothing is added to the write transaction; the
committing process publishes after commit, on a subject per account, and other replicas
wake only the feed of that account, and only when it has not seen that sequence yet.

The log stays the truth. Core NATS delivers at most once and keeps nothing: a wake-up
lost while the bus is down, or published by a process that crashed after commit, is
found by the periodic log check, and a reconnect triggers one check at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from server.domain.types import Event

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "resolutionflow.log."
MAX_BACKOFF = 5.0
# An account id that is a valid NATS subject token is used as it is (readable in `nats
# sub`); any other is base64url-encoded behind "~", which no plain token contains.
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")


def subject(account_id: str) -> str:
    if _PLAIN.fullmatch(account_id):
        return SUBJECT_PREFIX + account_id
    encoded = base64.urlsafe_b64encode(account_id.encode()).decode().rstrip("=")
    return SUBJECT_PREFIX + "~" + encoded


def account_of(subject_name: str) -> str:
    token = subject_name.removeprefix(SUBJECT_PREFIX)
    if not token.startswith("~"):
        return token
    encoded = token[1:]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()


class NatsWakeup:
    def __init__(
        self,
        url: str,
        on_moved: Callable[[str, int], None],
        on_connect: Callable[[], None],
        ping_seconds: float = 5.0,
    ) -> None:
        self.url = url
        self.on_moved = on_moved
        self.on_connect = on_connect
        self.ping_seconds = ping_seconds
        self.client: NatsClient | None = None
        self.connections = 0
        # Heads committed here and not yet published: coalesced per account, so a burst
        # of commits to one account costs one message.
        self._pending: dict[str, int] = {}
        self._ready = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.is_connected

    def committed(self, events: list[Event]) -> None:
        """Database commit listener: announce each account's new head (after commit)."""
        for event in events:
            if event.sequence > self._pending.get(event.account_id, 0):
                self._pending[event.account_id] = event.sequence
        self._ready.set()

    async def run(self) -> None:
        backoff = 0.1
        while self.client is None:
            try:
                self.client = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("NATS unreachable (%s); retrying in %.1fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        try:
            await self._publish_forever(self.client)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.close(), 2)

    async def _connect(self) -> NatsClient:
        async def reconnected() -> None:
            self._connected()

        async def disconnected() -> None:
            log.warning("NATS connection lost; the log check covers wake-ups meanwhile")

        async def error(e: Exception) -> None:
            log.debug("NATS: %s", e)

        client = await nats.connect(
            self.url,
            name="resolutionflow-wakeup",
            # Our own wake-ups need not come back: this process handed its commits to
            # its feeds already.
            no_echo=True,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=min(MAX_BACKOFF, 1.0),
            # A half-open connection never reports itself: ask, as the LISTEN one does.
            ping_interval=self.ping_seconds,
            max_outstanding_pings=2,
            connect_timeout=5,
            reconnected_cb=reconnected,
            disconnected_cb=disconnected,
            error_cb=error,
        )
        await client.subscribe(SUBJECT_PREFIX + ">", cb=self._received)
        # A round trip: the server has taken the subscription before this replica counts
        # as connected. Without it, a wake-up published right after could reach the server
        # first and miss us (then only the log check would bring that commit).
        await client.flush(timeout=5)
        self._connected()
        return client

    def _connected(self) -> None:
        self.connections += 1
        self.on_connect()

    async def _received(self, msg: Any) -> None:
        try:
            account_id, head = account_of(msg.subject), int(msg.data)
        except ValueError:
            log.warning("ignoring a malformed wake-up on %s", msg.subject)
            return
        self.on_moved(account_id, head)

    async def _publish_forever(self, client: NatsClient) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            pending, self._pending = self._pending, {}
            for account_id, head in pending.items():
                try:
                    await client.publish(subject(account_id), str(head).encode())
                except Exception as e:
                    # Lost: the other replicas' log check finds it within its interval.
                    log.debug("wake-up for %s not published: %s", account_id, e)
