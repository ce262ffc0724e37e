"""gRPC health follows the database: NOT_SERVING while it is gone, SERVING once it is back."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.runtime import ServerRuntime
from server.settings import Settings
from tests.pg import admin_url, fresh_database
from tests.support import wait_until


@pytest.fixture
def own_database(database_url: str):
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL database can be taken away and given back")
    with fresh_database() as url:
        yield url


async def test_health_follows_the_database(settings: Settings, own_database: str) -> None:
    runtime = ServerRuntime(
        settings.model_copy(update={"database_url": own_database, "health_check_seconds": 0.2})
    )
    await runtime.start()
    name = own_database.rsplit("/", 1)[1]
    admin = await asyncpg.connect(admin_url().rsplit("/", 1)[0] + "/postgres")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)

            async def status() -> int:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                return int(reply.status)

            assert await status() == health_pb2.HealthCheckResponse.SERVING
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )

            async def is_(expected: int) -> bool:
                return await status() == expected

            await wait_until(lambda: is_(health_pb2.HealthCheckResponse.NOT_SERVING), timeout=10)
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await wait_until(lambda: is_(health_pb2.HealthCheckResponse.SERVING), timeout=10)
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await runtime.stop(0)
