"""Presence: which engineers have the account's queue open right now, on any server.

Each server counts its own open queue streams per engineer in memory and mirrors the set
into the shared ``presence`` table: a row per (account, engineer, server) that the server
refreshes while the stream is open. Rows expire on their own, so a server that is killed
drops out within ``presence_ttl_seconds`` without anyone cleaning up after it; a clean
stop deletes its rows at once. Presence is deliberately not in the event log: it is a
fact about now, not history, and it would wake every stream at every connect.

An edge that serves the queue to many browsers from one shared stream per account (the
gateway) cannot be counted that way: its one stream stands for many engineers. It opens
its queue streams with ``REPORTER_KEY`` in the metadata, so this server does not count
them, and reports its browsers instead (``report``, from the ``ReportPresence`` RPC), each
by its own token, which the server verifies: rows per (account, engineer, reporter), with
the same TTL, each report replacing that reporter's previous one for the accounts it names.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, distinct, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.database import Database
from server.db.schema import PRESENCE
from server.domain.types import Caller, UserRef

log = logging.getLogger(__name__)

# Metadata of a queue stream whose presence its opener reports itself (``report``).
REPORTER_KEY = "rf-presence-reporter"
# Rows of reported presence carry the reporter's id under this prefix: no reporter can
# name (and so replace) a server's own rows.
EDGE_PREFIX = "edge:"


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
                await self._upsert(
                    s,
                    self.replica,
                    {key: self._names.get(key, "") for key in current},
                    expires,
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

    async def _upsert(
        self,
        s: AsyncSession,
        replica: str,
        watchers: Mapping[tuple[str, str], str],
        expires: datetime,
    ) -> None:
        """One statement for every row, however many: the cost of a refresh must not grow
        with a statement per engineer (idle cost at many accounts)."""
        insert = (pg_insert if not self.db.is_sqlite else sqlite_insert)(PRESENCE)
        await s.execute(
            insert.on_conflict_do_update(
                index_elements=["account_id", "user_id", "replica_id"],
                set_={"name": insert.excluded.name, "expires_at": insert.excluded.expires_at},
            ),
            [
                {
                    "account_id": account,
                    "user_id": user,
                    "replica_id": replica,
                    "name": name,
                    "expires_at": expires,
                }
                for (account, user), name in watchers.items()
            ],
        )

    async def report(
        self, reporter: str, accounts: Iterable[str], watchers: Iterable[Caller]
    ) -> None:
        """An edge's report: for each account in ``accounts`` the reporter's rows become
        exactly the ``watchers`` of that account (callers proven by their own tokens), for
        the TTL. One upsert and one delete per report."""
        replica = EDGE_PREFIX + reporter
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=self.ttl)
        rows = {(w.account_id, w.user_id): w.name for w in watchers}
        named = sorted(set(accounts))
        async with self.db.write() as s:
            if rows:
                await self._upsert(s, replica, rows, expires)
            # The reporter's rows of these accounts not written just now (browsers that
            # left), and anyone's that expired (an edge that died: servers whose engineers
            # all come through edges would otherwise never sweep them).
            await s.execute(
                delete(PRESENCE).where(
                    or_(
                        and_(
                            PRESENCE.c.replica_id == replica,
                            PRESENCE.c.account_id.in_(named),
                            PRESENCE.c.expires_at < expires,
                        ),
                        PRESENCE.c.expires_at < now,
                    )
                )
            )

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
