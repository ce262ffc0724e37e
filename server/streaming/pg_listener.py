"""One LISTEN connection per server process: other replicas' commits wake our feeds.

The log stays the truth: a notification only says "look" (and how far the log got).
Our own commits' notifications are skipped, since those are handed to the feeds after
commit. If the connection drops, we reconnect with backoff and run one log check once
connected (anything committed meanwhile is read then); the hub's periodic tick covers the
gap until then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

from server.models.events import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0
# Lets operators (and tests) find the LISTEN connections in pg_stat_activity.
APPLICATION_NAME = "resolutionflow-listen"


def parse(payload: str) -> tuple[str, int | None]:
    """A notification's account and the sequence its log reached (None: not said).

    The sequence comes last and has no space, so any account id survives; a payload
    without one (as older servers send) is just the account.
    """
    account, _, sequence = payload.rpartition(" ")
    if account and sequence.isdigit():
        return account, int(sequence)
    return payload, None


def asyncpg_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PgListener:
    def __init__(
        self,
        dsn: str,
        on_notify: Callable[[str], None],
        on_connect: Callable[[], None],
        check_seconds: float = 5.0,
        own_pids: set[int] | None = None,
    ) -> None:
        self.own_pids = own_pids if own_pids is not None else set()
        self.dsn = dsn
        self.on_notify = on_notify
        self.on_connect = on_connect
        self.check_seconds = check_seconds
        self.connections = 0
        # Notifications received, our own included (tests wait on it).
        self.notifications = 0
        self.backend_pid: int | None = None

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._listen_once()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", e, backoff)
            self.backend_pid = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _listen_once(self) -> None:
        conn = await asyncpg.connect(
            self.dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME}
        )
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _c: lost.set())

            def notified(_c: Any, pid: int, _channel: str, payload: str) -> None:
                self.notifications += 1
                # Our own commits are handed to the feeds after commit; reading the log
                # for them again would cost a query per commit. (A pid reused by another
                # replica's backend only delays a wake-up until the log check.)
                if pid not in self.own_pids:
                    self.on_notify(payload)

            await conn.add_listener(NOTIFY_CHANNEL, notified)
            self.connections += 1
            self.backend_pid = conn.get_server_pid()
            self.on_connect()
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), self.check_seconds)
                except TimeoutError:
                    # A half-open TCP connection never reports itself: ask.
                    await conn.fetchval("SELECT 1", timeout=self.check_seconds)
        finally:
            if not conn.is_closed():
                await conn.close(timeout=2)
        raise ConnectionError("LISTEN connection terminated")
