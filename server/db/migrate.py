"""Alembic, driven from code: ``resolutionflow db upgrade`` and start-up migration.

Several processes may migrate one database at once (replicas, or ``serve`` beside ``db
upgrade``). On PostgreSQL an advisory lock in the migration environment makes them take
turns; SQLite has no such lock, so an exclusive file lock beside the database file does
the same: the later process waits, then finds the schema at head and does nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Passed as an attribute, not an ini option: ini interpolation would mangle '%'.
    config.attributes["database_url"] = database_url
    return config


def migration_lock_path(database_url: str) -> Path | None:
    """The lock file that serializes migrations of an SQLite file (None elsewhere)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database + ".migrate-lock")


def _upgrade(database_url: str, revision: str) -> None:
    lock_path = migration_lock_path(database_url)
    if lock_path is None:
        command.upgrade(alembic_config(database_url), revision)
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        # Released by the kernel when the file closes, also if this process dies.
        fcntl.flock(lock, fcntl.LOCK_EX)
        command.upgrade(alembic_config(database_url), revision)


async def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate to ``revision``; Alembic's env runs its own event loop, so use a thread."""
    await asyncio.to_thread(_upgrade, database_url, revision)
