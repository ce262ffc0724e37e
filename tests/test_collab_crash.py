"""Comments across a server crash: a client retrying with the same request_id gets every
comment stored exactly once, whether the crash came before or after the commit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from resolutionflow.v1 import handoff_pb2 as pb

from clients import AsyncClient
from clients.errors import ResolutionFlowError
from server.domain.types import Role
from tests.processes import ServerProcess
from tests.support import token

TRANSIENT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
)


async def test_comments_posted_while_the_server_is_killed_are_neither_lost_nor_doubled(
    database_url: str, tmp_path: Path, account: str
) -> None:
    server = ServerProcess(database_url, tmp_path)
    await server.start()
    tech = AsyncClient(server.address, token=token(account, "tina", Role.TECHNICIAN), timeout=5)
    handoff = await tech.create_handoff("VPN drops", session_id="s")
    answered: dict[int, str] = {}
    enough = asyncio.Event()

    async def post(i: int) -> None:
        # The same request_id on every attempt, as a client retrying a lost answer does.
        while True:
            try:
                comment = await tech.add_comment(handoff.id, f"comment {i}", f"key-{i}")
            except ResolutionFlowError as e:
                assert e.code in TRANSIENT, e
                await asyncio.sleep(0.05)  # a retry's pause, not a synchronization
                continue
            answered[i] = comment.id
            if len(answered) >= 5:
                enough.set()
            return

    async def writer(start: int) -> None:
        for i in range(start, 60, 4):
            await post(i)

    try:
        writers = [asyncio.create_task(writer(n)) for n in range(4)]
        await asyncio.wait_for(enough.wait(), 30)
        await server.kill()  # with comments in flight
        await server.start()
        await asyncio.wait_for(asyncio.gather(*writers), 90)
        events = await tech.history(handoff.id)
    finally:
        await tech.close()
        await server.stop()
    comments = [e.comment for e in events if e.type == pb.EVENT_TYPE_COMMENTED]
    assert sorted(c.body for c in comments) == sorted(f"comment {i}" for i in range(60))
    assert {c.id for c in comments} == set(answered.values())
