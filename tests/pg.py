"""PostgreSQL for the tests: a fresh database per test session on a server that answers,
or, where none answers but the binaries are installed, a throwaway cluster of our own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from tests.support import free_port

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
INSTALL_HINT = (
    "PostgreSQL is needed for the tests: start a server (or set RF_TEST_DATABASE_URL), "
    "or install it (Debian: apt-get install -y postgresql) so the tests can run their own."
)


def admin_url() -> str:
    return os.environ.get("RF_TEST_DATABASE_URL", DEFAULT_ADMIN_URL).replace(
        "postgresql+asyncpg://", "postgresql://"
    )


async def answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


def pg_bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent if candidates else None


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """initdb + pg_ctl start on a free port; as root, run them as the postgres user."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise RuntimeError(INSTALL_HINT)
    data = Path(tempfile.mkdtemp(prefix="rf-pg-"))
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "-A", "trust")
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data / "db"),
        "-w",
        "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
        "-l",
        str(data / "log"),
        "start",
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def fresh_database() -> Iterator[str]:
    """Yield an asyncpg SQLAlchemy URL of a new database, dropped afterwards."""
    url = admin_url()
    if asyncio.run(answers(url)):
        with _database_on(url) as db_url:
            yield db_url
        return
    with throwaway_cluster() as cluster_url, _database_on(cluster_url) as db_url:
        yield db_url


@contextmanager
def _database_on(server_url: str) -> Iterator[str]:
    name = f"rf_test_{uuid.uuid4().hex[:12]}"

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    base, _, _ = server_url.rpartition("/")
    try:
        yield base.replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + name
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
