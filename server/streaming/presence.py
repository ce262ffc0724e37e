"""Presence: which engineers have the account's queue open right now, on any server.

Each server counts its own open queue streams per engineer in memory and mirrors the set
into the shared ``presence`` table: a row per (account, engineer, server) that the server
refreshes while the stream is open. Rows expire on their own, so a server that is killed
drops out within ``presence_ttl_seconds`` without anyone cleaning up after it; a clean
stop deletes its rows at once. Presence is deliberately not in the event log: it is a
fact about now, not history, and it would wake every stream at every connect.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, distinct, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from server.db.database import Database
from server.db.schema import PRESENCE
from server.domain.types import Caller, UserRef

log = logging.getLogger(__name__)


class Presence:
    def __init__(self, db: Database, ttl_seconds: float) -> None:
        self.db = db
        self.ttl = ttl_seconds
        self.replica = uuid.uuid4().hex
        self._open: Counter[tuple[str, str]] = Counter()
        self._names: dict[tuple[str, str], str] = {}
        self._written: set[tuple[str, str]] = set()
        self._written_at = 0.0

    def joined(self, caller: Caller) -> None:
        key = (caller.account_id, caller.user_id)
        self._open[key] += 1
        self._names[key] = caller.name

    def left(self, caller: Caller) -> None:
        key = (caller.account_id, caller.user_id)
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]
            self._names.pop(key, None)

    async def refresh(self) -> None:
        """Write the set when it changed, or when its rows near a third of their life."""
        now_mono = time.monotonic()
        current = set(self._open)
        if current == self._written and (not current or now_mono - self._written_at < self.ttl / 3):
            return
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=self.ttl)
        async with self.db.write() as s:
            if current:
                insert = (pg_insert if not self.db.is_sqlite else sqlite_insert)(PRESENCE)
                await s.execute(
                    insert.on_conflict_do_update(
                        index_elements=["account_id", "user_id", "replica_id"],
                        set_={
                            "name": insert.excluded.name,
                            "expires_at": insert.excluded.expires_at,
                        },
                    ),
                    [
                        {
                            "account_id": account,
                            "user_id": user,
                            "replica_id": self.replica,
                            "name": self._names.get((account, user), ""),
                            "expires_at": expires,
                        }
                        for account, user in current
                    ],
                )
            # Ours not refreshed just now (they left), and anyone's that expired (a server
            # that died).
            await s.execute(
                delete(PRESENCE).where(
                    PRESENCE.c.replica_id == self.replica, PRESENCE.c.expires_at < expires
                )
            )
            await s.execute(delete(PRESENCE).where(PRESENCE.c.expires_at < now))
        self._written = current
        self._written_at = now_mono

    async def clear(self) -> None:
        """On a clean stop: this server's engineers are gone now, not after the TTL."""
        async with self.db.write() as s:
            await s.execute(delete(PRESENCE).where(PRESENCE.c.replica_id == self.replica))

    async def online(self, account_id: str) -> list[UserRef]:
        """The engineers and admins watching the account's queue on any server, by name."""
        async with self.db.read() as s:
            rows = await s.execute(
                select(distinct(PRESENCE.c.user_id), PRESENCE.c.name)
                .where(
                    PRESENCE.c.account_id == account_id,
                    PRESENCE.c.expires_at > datetime.now(UTC),
                )
                .order_by(PRESENCE.c.name, PRESENCE.c.user_id)
            )
            seen: dict[str, str] = {}
            for user_id, name in rows:
                seen.setdefault(user_id, name)
        return [UserRef(id=u, name=n) for u, n in seen.items()]
