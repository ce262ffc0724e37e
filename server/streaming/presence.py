"""Presence: which engineers have the account's queue open right now, on any server.

Each server counts its own open queue streams per engineer in memory and mirrors the set
into the shared ``presence`` table: a row per (account, engineer, server). Rows are written
only when the set changes (a first tab opens, a last tab closes), so a server costs the
database what its engineers' comings and goings cost, not a write per watching engineer
every few seconds. What keeps the rows alive is one row of the server's own in
``presence_replicas``, whose expiry the server pushes forward every third of
``presence_ttl_seconds``: one statement per tick however many engineers watch. A server
that is killed stops pushing, so its engineers drop out of ``online()`` (which joins the
two tables) within the TTL without anyone cleaning up after it; whoever refreshes next
deletes the dead server's rows. A clean stop deletes its rows at once. Presence is
deliberately not in the event log: it is a fact about now, not history, and it would wake
every stream at every connect. Why this shape: README, "Design notes".

An edge that serves the queue to many browsers from one shared stream per account (the
gateway) cannot be counted that way: its one stream stands for many engineers. It opens
its queue streams with ``REPORTER_KEY`` in the metadata, so this server does not count
them, and reports its browsers instead (``report``, from the ``ReportPresence`` RPC), each
by its own token, which the server verifies. The reporter is kept alive like a server, by
one liveness row: a report that names accounts replaces the reporter's rows of those
accounts; one that names none only pushes the liveness forward. So an edge's refresh
costs one row too, and a connect or disconnect costs the rows of one account.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, distinct, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.database import Database
from server.db.schema import PRESENCE, PRESENCE_REPLICAS
from server.domain.types import Caller, UserRef

log = logging.getLogger(__name__)

# Metadata of a queue stream whose presence its opener reports itself (``report``).
REPORTER_KEY = "rf-presence-reporter"
# Rows of reported presence carry the reporter's id under this prefix: no reporter can
# name (and so replace) a server's own rows.
EDGE_PREFIX = "edge:"

# Rows removed per DELETE: the (account, user) pairs go into one IN list.
_DELETE_CHUNK = 500


class Presence:
    def __init__(self, db: Database, ttl_seconds: float) -> None:
        self.db = db
        self.ttl = ttl_seconds
        self.replica = uuid.uuid4().hex
        self._open: Counter[tuple[str, str]] = Counter()
        self._names: dict[tuple[str, str], str] = {}
        # What the table holds of ours, and when our liveness row was last pushed forward.
        self._written: set[tuple[str, str]] = set()
        self._alive_at = 0.0
        # Whether the set of keys changed since the last write: a tick with nobody coming
        # or going must not even compare 10,000 keys.
        self._changed = False

    def joined(self, caller: Caller) -> None:
        key = (caller.account_id, caller.user_id)
        if key not in self._open:
            self._changed = True
        self._open[key] += 1
        self._names[key] = caller.name

    def left(self, caller: Caller) -> None:
        key = (caller.account_id, caller.user_id)
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]
            self._names.pop(key, None)
            self._changed = True

    async def refresh(self) -> None:
        """Write what changed since the last call; push our liveness forward when it is a
        third of the way through its life. Nothing at all while nobody watches here."""
        now_mono = time.monotonic()
        due = now_mono - self._alive_at >= self.ttl / 3
        if not self._changed and not (due and self._written):
            return
        current = set(self._open)
        self._changed = False
        try:
            await self._write(current, now_mono, due)
        except BaseException:
            self._changed = True  # try the whole change again next tick
            raise

    async def _write(self, current: set[tuple[str, str]], now_mono: float, due: bool) -> None:
        if not current and not self._written:
            return
        if now_mono - self._alive_at > self.ttl:
            # Our liveness lapsed (a stalled process): another server may have deleted our
            # rows as a dead server's, so write them all again.
            self._written = set()
        added = current - self._written
        removed = self._written - current
        if not added and not removed and not due:
            return
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=self.ttl)
        insert = sqlite_insert if self.db.is_sqlite else pg_insert
        async with self.db.write() as s:
            if current and (due or added):
                # Liveness first: rows of a server without a live row are not online.
                alive = insert(PRESENCE_REPLICAS)
                await s.execute(
                    alive.values(replica_id=self.replica, expires_at=expires).on_conflict_do_update(
                        index_elements=["replica_id"], set_={"expires_at": expires}
                    )
                )
            if added:
                rows = insert(PRESENCE)
                await s.execute(
                    rows.on_conflict_do_update(
                        index_elements=["account_id", "user_id", "replica_id"],
                        set_={"name": rows.excluded.name},
                    ),
                    [
                        {
                            "account_id": account,
                            "user_id": user,
                            "replica_id": self.replica,
                            "name": self._names.get((account, user), ""),
                        }
                        for account, user in added
                    ],
                )
            gone = sorted(removed)
            for i in range(0, len(gone), _DELETE_CHUNK):
                await s.execute(
                    delete(PRESENCE).where(
                        PRESENCE.c.replica_id == self.replica,
                        tuple_(PRESENCE.c.account_id, PRESENCE.c.user_id).in_(
                            gone[i : i + _DELETE_CHUNK]
                        ),
                    )
                )
            if not current:
                await s.execute(
                    delete(PRESENCE_REPLICAS).where(PRESENCE_REPLICAS.c.replica_id == self.replica)
                )
            if due:
                await self._forget_dead(s, now)
        self._written = current
        if due or (current and added):
            self._alive_at = now_mono

    async def report(
        self, reporter: str, accounts: Iterable[str], watchers: Iterable[Caller]
    ) -> bool:
        """An edge's report: for each account in ``accounts`` the reporter's rows become
        exactly the ``watchers`` of that account (callers proven by their own tokens), and
        the reporter's liveness moves forward. Returns True when the reporter had lapsed
        (its rows may have been forgotten as a dead one's): it must report every account."""
        replica = EDGE_PREFIX + reporter
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=self.ttl)
        named = sorted(set(accounts))
        rows = {(w.account_id, w.user_id): w.name for w in watchers if w.account_id in named}
        insert = sqlite_insert if self.db.is_sqlite else pg_insert
        async with self.db.write() as s:
            alive_until = await s.scalar(
                select(PRESENCE_REPLICAS.c.expires_at).where(
                    PRESENCE_REPLICAS.c.replica_id == replica
                )
            )
            alive = insert(PRESENCE_REPLICAS)
            await s.execute(
                alive.values(replica_id=replica, expires_at=expires).on_conflict_do_update(
                    index_elements=["replica_id"], set_={"expires_at": expires}
                )
            )
            for i in range(0, len(named), _DELETE_CHUNK):
                await s.execute(
                    delete(PRESENCE).where(
                        PRESENCE.c.replica_id == replica,
                        PRESENCE.c.account_id.in_(named[i : i + _DELETE_CHUNK]),
                    )
                )
            if rows:
                await s.execute(
                    insert(PRESENCE).on_conflict_do_nothing(),
                    [
                        {"account_id": a, "user_id": u, "replica_id": replica, "name": n}
                        for (a, u), n in rows.items()
                    ],
                )
            # Servers whose engineers all come through edges have no presence tick of their
            # own with rows to keep: reports sweep dead reporters too.
            await self._forget_dead(s, now)
        return alive_until is None or alive_until < now

    async def _forget_dead(self, s: AsyncSession, now: datetime) -> None:
        """Rows of servers that stopped refreshing (killed), and their liveness rows."""
        dead = select(PRESENCE_REPLICAS.c.replica_id).where(PRESENCE_REPLICAS.c.expires_at < now)
        await s.execute(delete(PRESENCE).where(PRESENCE.c.replica_id.in_(dead)))
        await s.execute(delete(PRESENCE_REPLICAS).where(PRESENCE_REPLICAS.c.expires_at < now))

    async def clear(self) -> None:
        """On a clean stop: this server's engineers are gone now, not after the TTL."""
        async with self.db.write() as s:
            await s.execute(delete(PRESENCE).where(PRESENCE.c.replica_id == self.replica))
            await s.execute(
                delete(PRESENCE_REPLICAS).where(PRESENCE_REPLICAS.c.replica_id == self.replica)
            )
        self._written = set()

    async def online(self, account_id: str) -> list[UserRef]:
        """The engineers and admins watching the account's queue on any live server."""
        async with self.db.read() as s:
            rows = await s.execute(
                select(distinct(PRESENCE.c.user_id), PRESENCE.c.name)
                .join(
                    PRESENCE_REPLICAS,
                    PRESENCE_REPLICAS.c.replica_id == PRESENCE.c.replica_id,
                )
                .where(
                    PRESENCE.c.account_id == account_id,
                    PRESENCE_REPLICAS.c.expires_at > datetime.now(UTC),
                )
                .order_by(PRESENCE.c.name, PRESENCE.c.user_id)
            )
            seen: dict[str, str] = {}
            for user_id, name in rows:
                seen.setdefault(user_id, name)
        return [UserRef(id=u, name=n) for u, n in seen.items()]
