"""Alembic, driven from code: ``resolutionflow db upgrade`` and start-up migration."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Passed as an attribute, not an ini option: ini interpolation would mangle '%'.
    config.attributes["database_url"] = database_url
    return config


async def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate to ``revision``; Alembic's env runs its own event loop, so use a thread."""
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), revision)
