"""Pending assessments are retried while the server runs, and claimed once across replicas."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import grpc
import pytest
from pydantic import SecretStr
from resolutionflow.v1 import handoff_pb2
from sqlalchemy.engine import make_url

from server.domain.types import Role
from server.runtime import ServerRuntime
from server.settings import Settings
from server.streaming.pg_listener import asyncpg_dsn
from tests.fake_openai import Reply, answer, fake_openai
from tests.support import Client, settled, token, wait_until

pb = handoff_pb2


def openai_settings(settings: Settings, base_url: str, **more: object) -> Settings:
    return settings.model_copy(
        update={
            "assessment_provider": "openai",
            "openai_base_url": base_url,
            "openai_api_key": SecretStr("sk-test"),
            "openai_timeout_seconds": 30,
            "assessment_timeout_seconds": 60,
            **more,
        }
    )


@asynccontextmanager
async def writes_blocked(database_url: str, handoff_id: str) -> AsyncIterator[None]:
    """Another session holds what saving the handoff's assessment needs: the SQLite file's
    write lock, or the handoff's row on PostgreSQL."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(str(url.database), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    pg = await asyncpg.connect(asyncpg_dsn(url))
    try:
        async with pg.transaction():
            await pg.execute("SELECT 1 FROM handoffs WHERE id = $1 FOR UPDATE", handoff_id)
            yield
    finally:
        await pg.close()


async def status_of(client: Client, handoff_id: str) -> int:
    reply = await client.handoffs.GetHandoff(
        pb.GetHandoffRequest(handoff_id=handoff_id), metadata=client.metadata, timeout=10
    )
    return int(reply.handoff.assessment.status)


async def test_an_assessment_whose_save_failed_becomes_ready_without_a_restart(
    settings: Settings, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="server.assessment.worker")
    gate = asyncio.Event()
    async with fake_openai(Reply(body=answer("Saved at last.", "Call back"), gate=gate)) as fake:
        runtime = ServerRuntime(
            openai_settings(
                settings,
                fake.base_url,
                assessment_retry_seconds=0.5,
                pg_lock_timeout_seconds=0.5,
                sqlite_busy_timeout_seconds=0.5,
            )
        )
        await runtime.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
                tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
                created = await tech.create()
                await asyncio.wait_for(fake.received.wait(), 10)
                async with writes_blocked(settings.database_url, created.id):
                    gate.set()  # the provider answers; saving its verdict fails

                    def save_failed() -> bool:
                        return any(
                            created.id in r.getMessage() and "could not be saved" in r.getMessage()
                            for r in caplog.records
                        )

                    await wait_until(save_failed, timeout=20, what="a failed save")
                    assert await status_of(tech, created.id) == pb.ASSESSMENT_STATUS_PENDING
                await settled(tech, created.id, timeout=20)
                reply = await tech.handoffs.GetHandoff(
                    pb.GetHandoffRequest(handoff_id=created.id), metadata=tech.metadata, timeout=10
                )
                assert reply.handoff.assessment.status == pb.ASSESSMENT_STATUS_READY
                assert reply.handoff.assessment.summary == "Saved at last."
                assert len(fake.requests) == 1  # the verdict was kept, not asked for again
        finally:
            await runtime.stop(0)


async def test_two_replicas_never_assess_the_same_handoff(settings: Settings, account: str) -> None:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database")
    gate = asyncio.Event()
    async with fake_openai(Reply(body=answer("Once.", "Once"), gate=gate)) as fake:
        first = ServerRuntime(openai_settings(settings, fake.base_url))
        second = ServerRuntime(openai_settings(settings, fake.base_url))
        await first.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as ch:
                tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
                created = [await tech.create() for _ in range(3)]
                await wait_until(lambda: len(fake.requests) == 3, what="3 provider calls")
                # A replica starting while they are pending finds them claimed; it assesses
                # only what is its own (its requests reach the provider after any others
                # it would have taken, as its workers take its queue in order).
                await second.start()
                async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as ch2:
                    tech2 = Client(ch2, token(account, "t", Role.TECHNICIAN), account, "t")
                    created.append(await tech2.create(problem_summary="The fourth one"))
                    await wait_until(
                        lambda: any("The fourth one" in str(r["json"]) for r in fake.requests),
                        what="the fourth handoff's provider call",
                    )
                    gate.set()
                    await settled(tech2, *(h.id for h in created), timeout=30)
                for h in created:
                    assert await status_of(tech, h.id) == pb.ASSESSMENT_STATUS_READY
                assert len(fake.requests) == 4
        finally:
            await asyncio.gather(first.stop(0), second.stop(0))
