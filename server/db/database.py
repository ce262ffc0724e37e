"""Engine, sessions and the two kinds of transaction the core uses.

SQLite: pysqlite's default opens no transaction before a SELECT and a deferred one before
writes, which gives neither consistent snapshots nor early lock acquisition. We take over
BEGIN: writers say ``BEGIN IMMEDIATE`` (the write lock up front, so two writers never
deadlock upgrading from a read lock) and readers say ``BEGIN`` so a snapshot read (queue +
cursor) sees one state. Writers in one process also queue on an asyncio lock rather than
spinning in SQLite's busy handler. WAL lets readers run beside the writer.

PostgreSQL: writes run at READ COMMITTED (conditional updates and the per-account counter
row make them safe); snapshot reads run at REPEATABLE READ so the queue and its cursor
come from the same snapshot. Every session bounds its waits (``lock_timeout``,
``statement_timeout``, ``idle_in_transaction_session_timeout``): a replica that freezes
or loses its network while holding an account's counter row would otherwise stall every
writer of that account until TCP gives up; with the bounds the others wait at most the
lock timeout per call, and PostgreSQL ends the frozen session (releasing its locks) once it
sat idle in its transaction for the idle bound.

Failures are told apart for the caller: a lost connection or a lock wait past its bound is
UNAVAILABLE (nothing was committed; retrying is right), and a full disk is UNAVAILABLE
with reason ``STORAGE_FULL`` and says so, and marks the database as unable to write until
a probing write of normal size passes (health reports NOT_SERVING meanwhile).
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from server.db import sqlite_driver
from server.db.bounds import PgBounds, ms
from server.domain.types import Event
from server.errors import DomainError, Unavailable

T = TypeVar("T")

READ_ONLY = "rf_read_only"
# SQLite: no BEGIN at all (``Database.query``: one statement is its own transaction).
NO_BEGIN = "rf_no_begin"
# Written by the event log: each Event appended in a transaction, in sequence order.
APPENDED_EVENTS = "rf_appended_events"
# Read by the event log: whether a write transaction issues PostgreSQL NOTIFY itself.
PG_NOTIFY = "rf_pg_notify"


class Database:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        pg_bounds: PgBounds | None = None,
        sqlite_busy_timeout: float = 30,
    ) -> None:
        self.url = make_url(url)
        self.pg_bounds = pg_bounds or PgBounds()
        # Set when a write failed for lack of space; cleared when check_storage passes.
        self.storage_full = False
        # PostgreSQL: the server processes behind this pool's connections. A NOTIFY sent
        # by one of them is a commit of ours, which the commit listeners hand over.
        self.backend_pids: set[int] = set()
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            options: dict[str, Any] = {}
            if self.url.get_driver_name() == "aiosqlite":
                # One trip to aiosqlite's thread per statement instead of four.
                options["module"] = sqlite_driver.dbapi()
            self.engine = create_async_engine(
                self.url, connect_args={"timeout": sqlite_busy_timeout}, **options
            )
            _take_over_sqlite_transactions(self.engine, sqlite_busy_timeout)
            self._reader = self.engine.execution_options(**{READ_ONLY: True})
            self._single = self.engine.execution_options(**{READ_ONLY: True, NO_BEGIN: True})
        else:
            self.engine = create_async_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                connect_args={"server_settings": self.pg_bounds.server_settings()},
            )
            _ping_when_idle(self.engine)
            self._reader = self.engine.execution_options(isolation_level="REPEATABLE READ")
            self._single = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            _track_backend_pids(self.engine, self.backend_pids)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._commit_listeners: list[Callable[[list[Event]], None]] = []
        # Wake other replicas with NOTIFY inside each write transaction (the ``postgres``
        # wake-up). Off when another transport announces commits, or none does: NOTIFY
        # takes an instance-wide lock at commit that every notifying writer queues on.
        self.pg_notify = not self.is_sqlite
        # Batched writes waiting for the next shared transaction, and the task running them.
        self._batched: list[_Batched] = []
        self._batching: asyncio.Future[None] | None = None

    def on_commit(self, listener: Callable[[list[Event]], None]) -> None:
        """Call ``listener(events)`` with the events a transaction appended, after commit."""
        self._commit_listeners.append(listener)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One write transaction; commits on success, rolls back on error."""
        try:
            with self._failures_explained():
                async with (
                    self._write_lock or nullcontext(),
                    AsyncSession(
                        self.engine, expire_on_commit=False, info={PG_NOTIFY: self.pg_notify}
                    ) as session,
                    session.begin(),
                ):
                    yield session
        except Unavailable as e:
            if e.reason == STORAGE_FULL:
                self.storage_full = True
            raise
        appended: list[Event] = session.info.get(APPENDED_EVENTS, [])
        if appended:
            for listener in self._commit_listeners:
                listener(appended)

    async def write_batched(self, run: BatchWriter, item: Any) -> Any:
        """``item`` written by ``run`` in a write transaction shared with the batched writes
        that arrive while the previous batch commits (group commit); its outcome, or its
        error.

        ``run(session, items)`` writes all the items of a round that name the same ``run``
        and returns one outcome per item, in order: a value, or a ``DomainError`` for an
        item that fails alone (it must have changed nothing). A lone item runs at once.
        Any error ``run`` raises rolls the batch back, and each item is written again in a
        transaction of its own, so one item's failure is never another's; a failed commit
        fails the whole batch, as it would have failed each (outcome unknown).

        ``run`` orders its own locks: the batch holds each account's counter row from the
        moment it takes it until the commit, so every existing row it changes must be
        changed before it takes any counter row (a row held by a transaction that waits for
        one of those counter rows would deadlock), and counter rows are taken in one order
        (accounts sorted), so that batches of different replicas never wait on each other
        in a cycle.
        """
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batched.append((run, item, done))
        if self._batching is None:
            self._batching = asyncio.ensure_future(self._write_batches())
        # Shielded: a caller going away must not cancel the transaction others share.
        return await asyncio.shield(done)

    async def _write_batches(self) -> None:
        batch: list[_Batched] = []
        try:
            while self._batched:
                batch = self._batched[:WRITES_PER_BATCH]
                del self._batched[:WRITES_PER_BATCH]
                await self._write_batch(batch)
        except BaseException as e:
            # Whatever ended the rounds early (a cancellation at shutdown, an error outside
            # the batch's own handling): no caller may wait for ever on its shielded future.
            # Each gets UNAVAILABLE (outcome unknown, retried with its request id).
            failure = Unavailable(f"write interrupted: {type(e).__name__}")
            for _, _, done in [*batch, *self._batched]:
                _settle(done, error=failure)
            self._batched.clear()
            raise
        finally:
            self._batching = None

    async def _write_batch(self, batch: list[_Batched]) -> None:
        # The items of each writer, in the order the writers first appear.
        by_writer: dict[BatchWriter, list[_Batched]] = {}
        for entry in batch:
            by_writer.setdefault(entry[0], []).append(entry)
        outcomes: list[tuple[asyncio.Future[Any], Any]] = []
        statements_done = False
        try:
            async with self.write() as s:
                for run, entries in by_writer.items():
                    results = await run(s, [item for _, item, _ in entries])
                    outcomes += zip((done for _, _, done in entries), results, strict=True)
                statements_done = True
        except Exception as e:
            if statements_done or len(batch) == 1:
                for _, _, done in batch:
                    _settle(done, error=e)
                return
            for run, item, done in batch:
                try:
                    async with self.write() as s:
                        (result,) = await run(s, [item])
                except Exception as alone:
                    _settle(done, error=alone)
                else:
                    _settle(done, **_outcome(result))
            return
        for done, outcome in outcomes:
            _settle(done, **_outcome(outcome))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """One read transaction over a single consistent snapshot."""
        with self._failures_explained():
            async with (
                AsyncSession(self._reader, expire_on_commit=False) as session,
                session.begin(),
            ):
                yield session

    @asynccontextmanager
    async def query(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one read statement, outside any transaction: a single
        statement sees one consistent state by itself, so BEGIN and COMMIT around it would
        be two round trips for nothing. Several statements that must agree: ``read``."""
        with self._failures_explained():
            async with self._single.connect() as conn:
                yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def check_storage(self) -> None:
        """After a write failed for lack of space: can a write that needs fresh space
        succeed now? Raises UNAVAILABLE (reason STORAGE_FULL) while it cannot.

        PostgreSQL: a new table with an incompressible row the size of a large handoff,
        rolled back, needs fresh space as a real write would and leaves nothing behind.
        SQLite writes pages only at commit, so there the probe is the same amount of data
        written and synced to a file beside the database, on the same file system.

        Only a passing probe clears the condition: a small write may still fit in space
        the files already have while a normal one does not.
        """
        try:
            if self.is_sqlite:
                if self.url.database and self.url.database != ":memory:":
                    await asyncio.to_thread(_probe_file, Path(self.url.database + ".probe"))
            else:
                await self._probe_table()
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.storage_full = True
            raise _storage_full() from e
        except Unavailable as e:
            if e.reason == STORAGE_FULL:
                self.storage_full = True
            raise
        self.storage_full = False

    async def _probe_table(self) -> None:
        # A table of its own: an insert into an existing one may fit in free space its
        # files already have, which says nothing about whether the next write fits.
        name = f"rf_storage_probe_{uuid.uuid4().hex[:12]}"
        with self._failures_explained():
            async with self.engine.connect() as conn:
                transaction = await conn.begin()
                try:
                    await conn.execute(text(f"CREATE TABLE {name} (b bytea)"))
                    await conn.execute(
                        text(f"INSERT INTO {name} VALUES (:b)"),
                        {"b": os.urandom(STORAGE_PROBE_BYTES)},
                    )
                finally:
                    await transaction.rollback()

    @contextmanager
    def _failures_explained(self) -> Iterator[None]:
        """Database failures the caller can act on become UNAVAILABLE with what happened.

        Nothing was committed in these cases (or the commit's outcome is unknown and the
        client retries idempotently), so "try again" is the honest answer; the message
        and the ``reason`` say why.
        """
        try:
            yield
        except DBAPIError as e:
            explained = self._explain(e)
            if explained is not None:
                raise explained from e
            if e.connection_invalidated:
                raise Unavailable("the database connection was lost; retry shortly") from e
            if isinstance(e, _CONNECTION_ERRORS):
                raise Unavailable("the database is unavailable; retry shortly") from e
            raise
        except _CONNECTION_ERRORS as e:
            raise Unavailable("the database is unavailable; retry shortly") from e

    def _explain(self, e: DBAPIError) -> Unavailable | None:
        if _is_storage_full(e.orig):
            return _storage_full()
        state = _sqlstate(e.orig)
        if state == LOCK_NOT_AVAILABLE:
            return Unavailable(
                f"the account is busy: a lock was not granted within "
                f"{self.pg_bounds.lock_timeout:g}s (another writer holds it); retry shortly",
                reason=LOCK_TIMEOUT,
            )
        if state == QUERY_CANCELED:
            return Unavailable(
                f"the database did not answer within {self.pg_bounds.statement_timeout:g}s; "
                "retry shortly",
                reason=STATEMENT_TIMEOUT,
            )
        if state and state.startswith(INSUFFICIENT_RESOURCES_CLASS):
            return Unavailable(
                f"the database is short of resources (SQLSTATE {state}); retry shortly"
            )
        return None


# ErrorInfo reasons of the UNAVAILABLE answers above, for clients to branch on.
STORAGE_FULL = "STORAGE_FULL"
# The size of the storage probe: about the largest handoff and its event.
STORAGE_PROBE_BYTES = 64 * 1024
LOCK_TIMEOUT = "LOCK_TIMEOUT"
STATEMENT_TIMEOUT = "STATEMENT_TIMEOUT"
# PostgreSQL SQLSTATEs: class 53 is "insufficient resources", 53100 is disk_full.
DISK_FULL = "53100"
INSUFFICIENT_RESOURCES_CLASS = "53"
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"


def _storage_full() -> Unavailable:
    return Unavailable(
        "the database's storage is full: changes cannot be saved until space is freed; "
        "reads still work",
        reason=STORAGE_FULL,
    )


def _probe_file(path: Path) -> None:
    try:
        with path.open("wb") as f:
            f.write(os.urandom(STORAGE_PROBE_BYTES))
            f.flush()
            os.fsync(f.fileno())
    finally:
        path.unlink(missing_ok=True)


def _sqlstate(error: BaseException | None) -> str | None:
    """The SQLSTATE of an asyncpg error, whether SQLAlchemy wrapped it or not."""
    while error is not None:
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str):
            return state
        error = error.__cause__
    return None


def _is_storage_full(error: BaseException | None) -> bool:
    if _sqlstate(error) == DISK_FULL:
        return True
    while error is not None:
        if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        error = error.__cause__
    return False


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


# At most this many batched writes share a transaction (an account's counter row is held
# until the commit, so a batch is as long as its writes together).
WRITES_PER_BATCH = 32
# Writes a batch of items in the session's transaction: one outcome per item, in order
# (a value, or a DomainError for an item that fails alone).
BatchWriter = Callable[[AsyncSession, list[Any]], Awaitable[list[Any]]]
_Batched = tuple[BatchWriter, Any, "asyncio.Future[Any]"]


def _outcome(outcome: Any) -> dict[str, Any]:
    """``_settle``'s arguments for an outcome of a ``BatchWriter``."""
    return {"error": outcome} if isinstance(outcome, DomainError) else {"result": outcome}


def _settle(
    done: asyncio.Future[Any], result: Any = None, error: BaseException | None = None
) -> None:
    if done.done():
        return
    if error is not None:
        done.set_exception(error)
        # Retrieved here too: a caller that went away must not leave a warning behind.
        done.exception()
    else:
        done.set_result(result)


# A pooled connection unused for this long is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    """``pool_pre_ping``, but only for a connection that sat idle in the pool.

    A ping is one round trip per transaction, about a tenth of a busy server's CPU per
    write. A connection back in the pool within the last second was working then; one
    that idled longer may have been cut (the database restarted, a proxy timed out) and is
    pinged, and replaced if the ping fails, as ``pool_pre_ping`` would. A connection that
    breaks within the second fails its statement: UNAVAILABLE, and the pool replaces it.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as e:
            # The pool discards the connection and checks out another (a new one if none).
            raise DisconnectionError(str(e)) from e


_IDLE_SINCE = "rf_idle_since"


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


def _take_over_sqlite_transactions(engine: AsyncEngine, busy_timeout: float) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Another process holding the write lock (SQLite has no row locks) makes writers
        # wait this long, then answer UNAVAILABLE.
        cursor.execute(f"PRAGMA busy_timeout={ms(busy_timeout)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get(NO_BEGIN, False):
            return
        conn.exec_driver_sql("BEGIN" if options.get(READ_ONLY, False) else "BEGIN IMMEDIATE")
