"""PostgreSQL going away mid-run: clear UNAVAILABLE answers, then recovery with nothing lost."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import grpc
import pytest
from resolutionflow.v1 import handoff_pb2

from server.domain.types import Role
from server.runtime import ServerRuntime
from server.settings import Settings
from server.streaming.pg_listener import APPLICATION_NAME
from tests.pg import admin_url, fresh_database
from tests.support import Client, of_type, settled, stream_escalations, token, wait_until

pb = handoff_pb2


@pytest.fixture
def own_database(database_url: str) -> Iterator[str]:
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL database can be taken away and given back")
    with fresh_database() as url:
        yield url


async def test_outage_answers_unavailable_then_recovers(
    settings: Settings, own_database: str, account: str
) -> None:
    runtime = ServerRuntime(
        settings.model_copy(update={"database_url": own_database, "log_poll_seconds": 0.2})
    )
    await runtime.start()
    name = own_database.rsplit("/", 1)[1]
    admin = await asyncpg.connect(admin_url())

    async def listeners() -> int:
        return int(
            await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = $1 AND application_name = $2",
                name,
                APPLICATION_NAME,
            )
        )

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
            tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
            eng = Client(ch, token(account, "e", Role.ENGINEER), account, "e")
            before = await tech.create(problem_summary="before the outage")
            await settled(tech, before.id)
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await tech.create(problem_summary="during the outage")
                assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "database" in (failed.value.details() or "")
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

            async def created_again() -> bool:
                try:
                    await tech.create(problem_summary="after the outage")
                except grpc.aio.AioRpcError as e:
                    assert e.code() == grpc.StatusCode.UNAVAILABLE
                    return False
                return True

            await wait_until(created_again, timeout=15, what="creates to work again")
            await wait_until(lambda: listeners(), timeout=15, what="LISTEN back on its own")
            reader = stream_escalations(eng, after=0)
            await reader.wait_for(lambda r: len(of_type(r, pb.EVENT_TYPE_CREATED)) >= 2)
            summaries = [e.handoff.problem_summary for e in of_type(reader, pb.EVENT_TYPE_CREATED)]
            assert summaries == ["before the outage", "after the outage"]
            assert reader.sequences == list(range(1, len(reader.sequences) + 1))
            reader.cancel()
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await runtime.stop(0)
