"""A full disk is named as such, and health says NOT_SERVING until space is freed.

The disk is a real one: a small tmpfs holding the SQLite file, or the tablespace of a
fresh PostgreSQL database, filled to the last byte with a file the test deletes later.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from resolutionflow.v1 import handoff_pb2
from sqlalchemy.engine import make_url

from server.domain.types import Role
from server.runtime import ServerRuntime
from server.settings import Settings
from tests.pg import admin_url
from tests.support import Client, token, wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@contextlib.contextmanager
def small_disk(size: str) -> Iterator[Path]:
    """A tmpfs of ``size``, readable by the PostgreSQL server's user too."""
    mount_point = Path(tempfile.mkdtemp(prefix="rf-disk-"))
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)],
            capture_output=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small file system here: {done.stderr.decode().strip()}")
        try:
            yield mount_point
        finally:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
    finally:
        mount_point.rmdir()


def fill(disk: Path) -> Path:
    """Write a file until the file system is full; deleting it frees the space again."""
    filler = disk / "filler"
    chunk = os.urandom(64 * 1024)
    with filler.open("wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


@pytest.fixture
async def full_disk_url(settings: Settings) -> AsyncIterator[tuple[str, Path]]:
    if settings.database_url.startswith("sqlite"):
        with small_disk("4m") as disk:
            yield f"sqlite+aiosqlite:///{disk / 'rf.db'}", disk
        return
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("the PostgreSQL server's user is not on this machine")
    name = f"rf_full_{uuid.uuid4().hex[:10]}"
    server = admin_url()
    if make_url(server).host not in ("127.0.0.1", "localhost", "::1", None):
        pytest.skip("the tablespace must be on this machine's file system")
    with small_disk("24m") as disk:
        location = disk / "tablespace"
        location.mkdir()
        os.chown(location, owner.pw_uid, owner.pw_gid)
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f"CREATE TABLESPACE {name} LOCATION '{location}'")
            await admin.execute(f'CREATE DATABASE "{name}" TABLESPACE {name}')
            base = server.rpartition("/")[0].replace("postgresql://", "postgresql+asyncpg://")
            yield f"{base}/{name}", disk
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f"DROP TABLESPACE IF EXISTS {name}")
            await admin.close()


async def test_full_disk_is_reported_and_health_recovers(
    settings: Settings, full_disk_url: tuple[str, Path], account: str
) -> None:
    url, disk = full_disk_url
    runtime = ServerRuntime(
        settings.model_copy(update={"database_url": url, "health_check_seconds": 0.2})
    )
    await runtime.start()
    filler: Path | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")

            async def health_is(expected: int) -> bool:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                return bool(reply.status == expected)

            before = await tech.create()
            filler = fill(disk)
            # Space left in files the database already grew may take a few more writes.
            refused: grpc.aio.AioRpcError | None = None
            for _ in range(500):
                try:
                    await tech.create(notes=os.urandom(3000).hex())
                except grpc.aio.AioRpcError as e:
                    refused = e
                    break
            assert refused is not None, "the database never ran out of space"
            assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused
            assert "storage is full" in (refused.details() or ""), refused.details()
            await wait_until(lambda: health_is(NOT_SERVING), timeout=10, what="NOT_SERVING")
            # Reads still work meanwhile.
            got = await tech.handoffs.GetHandoff(
                handoff_pb2.GetHandoffRequest(handoff_id=before.id),
                metadata=tech.metadata,
                timeout=10,
            )
            assert got.handoff.id == before.id

            filler.unlink()
            filler = None
            await wait_until(lambda: health_is(SERVING), timeout=10, what="SERVING again")
            await tech.create()
    finally:
        if filler is not None:
            filler.unlink(missing_ok=True)
        await runtime.stop(0)
