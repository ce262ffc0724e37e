"""SQLite through aiosqlite, one trip to the connection's thread per statement.

aiosqlite runs each call on a thread of its own per connection, and SQLAlchemy's adapter
makes four calls for a statement (open a cursor, execute, fetch the rows, close the
cursor): four hand-overs between the event loop and that thread, each a queue put, a
thread wake-up and a wake-up of the loop. They were most of what a write cost on SQLite.
The cursor here does the four in one function run on that thread; SQLAlchemy sees the
same DBAPI cursor (description, rows, rowcount, lastrowid) and errors as before.

Built on aiosqlite's ``Connection._execute`` (run a function on the connection's thread,
as SQLAlchemy's own adapter already does for ``isolation_level``) and its ``_conn``.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)


def _execute(
    conn: sqlite3.Connection, operation: str, parameters: Any
) -> tuple[Any, list[Any] | None, int | None, int]:
    cursor = conn.cursor()
    try:
        cursor.execute(operation, () if parameters is None else parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, rows, cursor.lastrowid, cursor.rowcount
    finally:
        cursor.close()


def _executemany(
    conn: sqlite3.Connection, operation: str, parameters: Sequence[Any]
) -> tuple[int | None, int]:
    cursor = conn.cursor()
    try:
        cursor.executemany(operation, parameters)
        return cursor.lastrowid, cursor.rowcount
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        connection: Any = self._connection  # an aiosqlite.Connection
        try:
            description, rows, lastrowid, rowcount = self.await_(
                connection._execute(lambda: _execute(connection._conn, operation, parameters))
            )
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        if description:
            self.description = description
            self.lastrowid = self.rowcount = -1
            self._rows = deque(rows or ())
        else:
            self.description = None
            self.lastrowid = lastrowid
            self.rowcount = rowcount

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        connection: Any = self._connection  # an aiosqlite.Connection
        try:
            self.lastrowid, self.rowcount = self.await_(
                connection._execute(
                    lambda: _executemany(connection._conn, operation, seq_of_parameters)
                )
            )
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self.description = None


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    def cursor(self, server_side: bool = False) -> AsyncAdapt_aiosqlite_cursor:
        if server_side:  # rows streamed on demand: the adapter's own cursor
            return super().cursor(server_side=True)
        return OneTripCursor(self)


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module for ``create_async_engine(..., module=...)``."""

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        adapted = super().connect(*arg, **kw)
        if type(adapted) is not AsyncAdapt_aiosqlite_connection:
            return adapted  # the sync fallback: left as it is
        return OneTripConnection(self, adapted._connection)


def dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)
