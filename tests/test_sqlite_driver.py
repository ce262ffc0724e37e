"""SQLite statements take one trip to aiosqlite's thread each (server/db/sqlite_driver.py),
and SQLAlchemy still sees rows, row counts, last row ids and errors as the DBAPI gives them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from server.db.database import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    yield database
    await database.dispose()


async def test_each_statement_is_one_trip_and_answers_as_before(db: Database) -> None:
    async with db.query() as conn:
        raw: Any = (await conn.get_raw_connection()).driver_connection
        trips = 0
        original = raw._execute

        async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal trips
            trips += 1
            return await original(fn, *args, **kwargs)

        raw._execute = counted
        try:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
            assert trips == 1
            inserted = await conn.execute(text("INSERT INTO t (v) VALUES ('a')"))
            assert (inserted.rowcount, inserted.lastrowid, trips) == (1, 1, 2)
            many = await conn.execute(
                text("INSERT INTO t (v) VALUES (:v)"), [{"v": "b"}, {"v": "c"}, {"v": "d"}]
            )
            assert (many.rowcount, trips) == (3, 3)
            rows = await conn.execute(
                text("SELECT id, v FROM t WHERE id > :after ORDER BY id"), {"after": 1}
            )
            assert [tuple(r) for r in rows] == [(2, "b"), (3, "c"), (4, "d")]
            assert trips == 4
            changed = await conn.execute(text("UPDATE t SET v = v || '!' WHERE id >= 3"))
            assert (changed.rowcount, trips) == (2, 5)
            with pytest.raises(IntegrityError):
                await conn.execute(text("INSERT INTO t (v) VALUES ('a')"))
            assert trips == 6
        finally:
            raw._execute = original
