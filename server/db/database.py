"""Engine, sessions and the two kinds of transaction the core uses.

SQLite: pysqlite's default opens no transaction before a SELECT and a deferred one before
writes, which gives neither consistent snapshots nor early lock acquisition. We take over
BEGIN: writers say ``BEGIN IMMEDIATE`` (the write lock up front, so two writers never
deadlock upgrading from a read lock) and readers say ``BEGIN`` so a snapshot read (queue +
cursor) sees one state. Writers in one process also queue on an asyncio lock rather than
spinning in SQLite's busy handler. WAL lets readers run beside the writer.

PostgreSQL: writes run at READ COMMITTED (conditional updates and the per-account counter
row make them safe); snapshot reads run at REPEATABLE READ so the queue and its cursor
come from the same snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from server.domain.types import Event
from server.errors import Unavailable

READ_ONLY = "rf_read_only"
# Written by the event log: each Event appended in a transaction, in sequence order.
APPENDED_EVENTS = "rf_appended_events"
# Read by the event log: whether a write transaction issues PostgreSQL NOTIFY itself.
PG_NOTIFY = "rf_pg_notify"


class Database:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = make_url(url)
        # PostgreSQL: the server processes behind this pool's connections. A NOTIFY sent
        # by one of them is a commit of ours, which the commit listeners hand over.
        self.backend_pids: set[int] = set()
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_async_engine(self.url, connect_args={"timeout": 30})
            _take_over_sqlite_transactions(self.engine)
            self._reader = self.engine.execution_options(**{READ_ONLY: True})
        else:
            self.engine = create_async_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            self._reader = self.engine.execution_options(isolation_level="REPEATABLE READ")
            _track_backend_pids(self.engine, self.backend_pids)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._commit_listeners: list[Callable[[list[Event]], None]] = []
        # Wake other replicas with NOTIFY inside each write transaction (the ``postgres``
        # wake-up). Off when another transport announces commits, or none does: NOTIFY
        # takes an instance-wide lock at commit that every notifying writer queues on.
        self.pg_notify = not self.is_sqlite

    def on_commit(self, listener: Callable[[list[Event]], None]) -> None:
        """Call ``listener(events)`` with the events a transaction appended, after commit."""
        self._commit_listeners.append(listener)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One write transaction; commits on success, rolls back on error."""
        with _connection_loss_is_unavailable():
            async with (
                self._write_lock or nullcontext(),
                AsyncSession(
                    self.engine, expire_on_commit=False, info={PG_NOTIFY: self.pg_notify}
                ) as session,
                session.begin(),
            ):
                yield session
        appended: list[Event] = session.info.get(APPENDED_EVENTS, [])
        if appended:
            for listener in self._commit_listeners:
                listener(appended)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """One read transaction over a single consistent snapshot."""
        with _connection_loss_is_unavailable():
            async with (
                AsyncSession(self._reader, expire_on_commit=False) as session,
                session.begin(),
            ):
                yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


# asyncpg's own errors appear unwrapped while connecting to a database that refuses
# connections (shutting down, starting up, or closed to new connections).
_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
)


@contextmanager
def _connection_loss_is_unavailable() -> Iterator[None]:
    """A lost or refused database connection is "try again" for the caller, not a bug.

    Nothing was committed in that case (or the commit's outcome is unknown and the client
    retries idempotently), so UNAVAILABLE is the honest answer.
    """
    try:
        yield
    except _CONNECTION_ERRORS as e:
        raise Unavailable("the database is unavailable; retry shortly") from e
    except DBAPIError as e:
        if e.connection_invalidated:
            raise Unavailable("the database connection was lost; retry shortly") from e
        raise


def _track_backend_pids(engine: AsyncEngine, pids: set[int]) -> None:
    def pid_of(dbapi_connection: Any) -> int | None:
        try:
            return int(dbapi_connection.driver_connection.get_server_pid())
        except Exception:
            return None

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        pid = pid_of(dbapi_connection)
        if pid is not None:
            pids.add(pid)

    @event.listens_for(engine.sync_engine, "close")
    @event.listens_for(engine.sync_engine, "close_detached")
    def _close(dbapi_connection: Any, *_: Any) -> None:
        pids.discard(pid_of(dbapi_connection) or -1)


def _take_over_sqlite_transactions(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
