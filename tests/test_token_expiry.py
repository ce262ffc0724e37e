"""A stream lives no longer than its token; clients that can get a new one resume exactly.

Real server (the session's, on SQLite and PostgreSQL), real gateway under uvicorn, the
Python client and the ``watch`` command as a separate process.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import jwt
import pytest
from resolutionflow.v1 import escalation_pb2 as esc
from resolutionflow.v1 import handoff_pb2 as pb

from clients import AsyncClient
from server.domain.types import Role
from server.runtime import ServerRuntime
from tests.gateway_support import SSEReader, event_json, subscribers
from tests.processes import REPO
from tests.support import JWT_SECRET, Client, token, wait_until

TTL = 2  # seconds; the token's exp is whole seconds, so it lasts between 1 and 2 s


def expiry(bearer: str) -> float:
    return float(jwt.decode(bearer, options={"verify_signature": False})["exp"])


@pytest.mark.parametrize("kind", ["escalations", "handoffs"])
async def test_a_stream_ends_unauthenticated_when_its_token_expires(
    server: ServerRuntime,
    client_for: Callable[..., Client],
    technician: Client,
    account: str,
    kind: str,
) -> None:
    role = Role.ENGINEER if kind == "escalations" else Role.TECHNICIAN
    user = "erin" if kind == "escalations" else technician.user
    short = Client(technician.channel, token(account, user, role, ttl=TTL), account, user)
    call: Any = (
        short.escalations.StreamEscalations(esc.StreamEscalationsRequest(), metadata=short.metadata)
        if kind == "escalations"
        else short.handoffs.WatchHandoffs(pb.WatchHandoffsRequest(), metadata=short.metadata)
    )
    assert (await asyncio.wait_for(call.read(), 15)).type == pb.EVENT_TYPE_SNAPSHOT
    created = await technician.create(problem_summary="arrives while the token is good")
    seen: list[Any] = []

    async def read_to_the_end() -> grpc.aio.AioRpcError:
        while True:
            try:
                message = await call.read()
            except grpc.aio.AioRpcError as e:
                return e
            assert message is not grpc.aio.EOF, "the stream ended without a status"  # type: ignore[attr-defined]
            seen.append(message)

    error = await asyncio.wait_for(read_to_the_end(), 15)
    ended = time.time()
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "token expired"
    assert expiry(short.token) <= ended < expiry(short.token) + 3
    assert created.id in {m.handoff.id for m in seen if m.type == pb.EVENT_TYPE_CREATED}
    # Nothing is delivered after the end, and the server let go of the subscriber.
    await wait_until(lambda: subscribers(server, account) == 0, what="subscriber freed")


async def test_the_gateway_forwards_expiry_as_an_error_frame(
    http: httpx.AsyncClient, account: str
) -> None:
    headers = {"Authorization": f"Bearer {token(account, 'erin', Role.ENGINEER, ttl=TTL)}"}
    reader = SSEReader(http, "/v1/escalations/stream", headers)
    try:
        await reader.wait_done(timeout=15)
        assert reader.response is not None and reader.response.status_code == 200
        assert [e.event for e in reader.data_events] == ["snapshot", "error"]
        error = event_json(reader.data_events[-1])
        assert error["code"] == "UNAUTHENTICATED"
        assert error["message"] == "token expired"
    finally:
        await reader.close()


async def test_client_with_a_token_provider_streams_across_expiries_exactly_once(
    server: ServerRuntime, technician: Client, account: str
) -> None:
    issued: list[str] = []

    def provider() -> str:
        issued.append(token(account, "erin", Role.ENGINEER, ttl=6))
        return issued[-1]

    received: list[pb.HandoffEvent] = []
    expected: list[str] = []

    def renewed(times: int) -> Callable[[], bool]:
        return lambda: len(issued) > times

    async with AsyncClient(f"127.0.0.1:{server.port}", token_provider=provider) as client:

        async def consume() -> None:
            async for event in client.stream_escalations():
                received.append(event)

        task = asyncio.create_task(consume())
        try:
            await wait_until(lambda: received, what="snapshot")
            for expired in (1, 2, 3):
                for n in range(3):
                    h = await technician.create(problem_summary=f"token {expired} item {n}")
                    expected.append(h.id)
                # The next batch is created after this token has run out and been renewed.
                await wait_until(renewed(expired), timeout=15, what="renewal")
            await wait_until(
                lambda: (
                    {e.handoff.id for e in received if e.type == pb.EVENT_TYPE_CREATED}
                    >= set(expected)
                ),
                what="every creation",
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    assert received[0].type == pb.EVENT_TYPE_SNAPSHOT
    assert sum(e.type == pb.EVENT_TYPE_SNAPSHOT for e in received) == 1
    created = [e.handoff.id for e in received if e.type == pb.EVENT_TYPE_CREATED]
    assert created == expected  # each exactly once, in creation order
    sequences = [e.sequence for e in received[1:] if e.type != pb.EVENT_TYPE_HEARTBEAT]
    assert sequences == sorted(set(sequences))  # no repeat, no reordering


async def _watch(server: ServerRuntime, account: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resolutionflow_cli",
        "watch",
        "--account",
        account,
        "--upstream",
        f"127.0.0.1:{server.port}",
        *args,
        cwd=REPO,
        env={**os.environ, "RF_JWT_SECRET": JWT_SECRET},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


class Lines:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def until(self, text: str, timeout: float = 20) -> str:
        async def loop() -> str:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                assert self.process.stdout is not None
                raw = await self.process.stdout.readline()
                assert raw, f"watch exited: {self.lines}"
                self.lines.append(raw.decode().rstrip("\n"))

        return await asyncio.wait_for(loop(), timeout)


async def test_watch_renews_its_own_token(
    server: ServerRuntime, technician: Client, account: str
) -> None:
    watch = await _watch(server, account, "--ttl", str(TTL))
    out = Lines(watch)
    try:
        said = await out.until("-- minted")
        assert "local engineer token" in said and "RF_JWT_SECRET" in said
        assert "renewed when it expires" in said
        await out.until("SNAPSHOT")
        before = await technician.create(problem_summary="before the renewal")
        await out.until(f"CREATED [NORMAL] {before.id}")
        await out.until("token expired; resuming with a fresh token")
        after = await technician.create(problem_summary="after the renewal")
        await out.until(f"CREATED [NORMAL] {after.id}")
        await out.until("token expired; resuming with a fresh token", timeout=20)
    finally:
        watch.kill()
        await watch.wait()
    assert sum("SNAPSHOT" in line for line in out.lines) == 1
    assert sum(f"CREATED [NORMAL] {before.id}" in line for line in out.lines) == 1


async def test_watch_with_a_given_token_says_so_and_stops_when_it_expires(
    server: ServerRuntime, account: str
) -> None:
    # The token's life starts before the process does: it must outlast a watch starting up
    # on a busy machine (several seconds of imports beside other tests), or it expires
    # before the snapshot this test waits for.
    ttl = 15
    watch = await _watch(server, account, "--token", token(account, "erin", Role.ENGINEER, ttl=ttl))
    out = Lines(watch)
    try:
        said = await out.until("-- using")
        assert "token from --token" in said and "not renewed" in said
        await out.until("SNAPSHOT")
        assert await asyncio.wait_for(watch.wait(), ttl + 15) == 1
        assert watch.stdout is not None
        out.lines += (await watch.stdout.read()).decode().splitlines()
        assert any("UNAUTHENTICATED: token expired" in line for line in out.lines), out.lines
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()


async def test_expiry_bookkeeping_stays_bounded_and_wakes_only_expired_streams(
    server: ServerRuntime, account: str
) -> None:
    """Thousands of streams that open and close with long tokens leave no trail in the
    hub's expiry heap, and one timer ends exactly the streams whose token ran out."""
    hub = server.hub
    far = time.time() + 3600
    for n in range(2000):
        sub, _ = hub.subscribe(account, f"u{n % 7}", 0, lambda e: True, far + n)
        hub.unsubscribe(sub)
    assert len(hub._expiries) <= 64 + 2 * hub._open
    soon, later = (
        hub.subscribe(account, "a", 0, lambda e: True, time.time() + 0.3)[0],
        hub.subscribe(account, "b", 0, lambda e: True, far)[0],
    )
    try:
        await wait_until(lambda: soon.expired, timeout=10, what="the short token's expiry")
        assert soon.wake.is_set() and not later.expired
    finally:
        hub.unsubscribe(soon)
        hub.unsubscribe(later)
