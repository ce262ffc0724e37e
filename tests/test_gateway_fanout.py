"""Edge fan-out (gateway.fanout): browsers of one audience share one upstream stream.

Real server (the session's, on SQLite and PostgreSQL), real uvicorn gateway in this event
loop, real HTTP clients: httpx-sse readers, and a raw socket that stops reading.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.serve import RunningGateway
from server.domain.types import Caller, Intent, NewHandoff, Priority, Role, Step
from server.models import batch
from server.runtime import ServerRuntime
from tests.gateway_support import (
    SSEReader,
    bearer,
    event_json,
    handoff_body,
    running_gateway,
    subscribers,
)
from tests.processes import ServerProcess
from tests.support import TLS, token, wait_until


@pytest.fixture
async def gw(server: ServerRuntime) -> AsyncIterator[RunningGateway]:
    async with running_gateway(
        f"127.0.0.1:{server.port}", sse_queue_frames=200, sse_send_timeout_seconds=2
    ) as gateway:
        yield gateway


@pytest.fixture
async def client(gw: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.url, timeout=30, verify=TLS) as c:
        yield c


async def metrics(client: httpx.AsyncClient) -> dict[str, float]:
    """The gateway's /metrics samples, by name and labels."""
    text = (await client.get("/metrics")).text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


async def write_escalations(server: ServerRuntime, account: str, count: int) -> None:
    """``count`` escalations committed by the server's own write path, in big batches
    (the REST route would spend minutes on this machine for what is needed here)."""
    caller = Caller("tina", account, Role.TECHNICIAN, "Tina")
    settings = server.settings
    for start in range(0, count, 500):
        async with server.db.write() as s:
            for n in range(start, min(count, start + 500)):
                new = NewHandoff(
                    request_id=None,
                    session_id="s",
                    intent=Intent.ESCALATE,
                    priority=Priority.HIGH,
                    problem_summary=f"bulk {n}",
                    steps_tried=(Step("rebooted", "no change"),),
                    notes="",
                )
                await batch.create(
                    s,
                    caller,
                    new,
                    datetime.now(UTC),
                    settings.sla_target_seconds(Priority.HIGH),
                    settings.assessment_lease_seconds(),
                )


def ids_after_snapshot(reader: SSEReader) -> list[int]:
    return [int(e.id) for e in reader.data_events if e.event not in ("snapshot", "reset")]


# ---- sharing ----------------------------------------------------------------------------


async def test_browsers_of_one_account_share_one_upstream_stream(
    gw: RunningGateway, client: httpx.AsyncClient, server: ServerRuntime, account: str
) -> None:
    """Eight tabs of four engineers and an admin's: one server stream. (Presence is reported
    by the gateway, tests/test_gateway_presence.py.)"""
    before = await metrics(client)
    users = [(Role.ENGINEER, f"e{n % 4}") for n in range(7)] + [(Role.ADMIN, "a0")]
    readers = [
        SSEReader(client, "/v1/escalations/stream", bearer(account, role, user))
        for role, user in users
    ]
    try:
        for reader in readers:
            await reader.wait_for(lambda r: bool(r.of("snapshot")))
        # Each browser's own call (its snapshot, its proof of token) hands over to the
        # one shared call: the server holds one stream for the eight.
        await wait_until(lambda: subscribers(server, account) == 1, timeout=5)
        after = await metrics(client)
        shared = "resolutionflow_gateway_sse_upstream_streams{kind=shared}"
        own = "resolutionflow_gateway_sse_upstream_streams{kind=own}"
        assert after[shared] - before.get(shared, 0) == 1
        assert after[own] - before.get(own, 0) == 0
        browsers = "resolutionflow_gateway_sse_browsers"
        assert after[browsers] - before.get(browsers, 0) == 8
        assert list(gw.app.state.streams.fanout.feeds) == [f"escalations/{account}"]

        await write_escalations(server, account, 3)
        for reader in readers:
            await reader.wait_for(lambda r: len(r.of("created")) == 3)
        sent = "resolutionflow_gateway_sse_frames_sent_total"
        direct = "resolutionflow_gateway_sse_frames_direct_total"
        now = await metrics(client)
        assert now[sent] - before.get(sent, 0) >= 8 * 4
        # Once joined, each event went from the feed straight to every browser's
        # connection (no browser task woken per frame).
        assert now[direct] - before.get(direct, 0) >= 8 * 3
        assert len({tuple(e.data for e in r.of("created")) for r in readers}) == 1
    finally:
        for reader in readers:
            await reader.close()
    # The last browser gone, the feed lingers briefly, then its call is cancelled.
    await wait_until(lambda: not gw.app.state.streams.fanout.feeds, timeout=5)
    await wait_until(lambda: subscribers(server, account) == 0, timeout=5)
    final = await metrics(client)
    assert final[browsers] == before.get(browsers, 0)


async def test_with_the_h11_parser_browsers_are_served_through_their_queues(
    server: ServerRuntime, account: str
) -> None:
    """h11 keeps its own state of a response, so no frame is written past it: every frame
    goes through the browser's writer and ASGI, and arrives all the same."""
    async with (
        running_gateway(f"127.0.0.1:{server.port}", http_parser="h11") as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as client,
    ):
        before = await metrics(client)
        readers = [
            SSEReader(client, "/v1/escalations/stream", bearer(account, Role.ENGINEER, f"e{n}"))
            for n in range(3)
        ]
        try:
            for reader in readers:
                await reader.wait_for(lambda r: bool(r.of("snapshot")))
            await wait_until(lambda: subscribers(server, account) == 1, timeout=5)
            await write_escalations(server, account, 3)
            for reader in readers:
                await reader.wait_for(lambda r: len(r.of("created")) == 3)
            assert len({tuple(e.data for e in r.of("created")) for r in readers}) == 1
            after = await metrics(client)
            direct = "resolutionflow_gateway_sse_frames_direct_total"
            assert after.get(direct, 0) == before.get(direct, 0)
        finally:
            for reader in readers:
                await reader.close()


async def test_technicians_share_only_their_own_handoffs(
    gw: RunningGateway, client: httpx.AsyncClient, server: ServerRuntime, account: str
) -> None:
    tina = [SSEReader(client, "/v1/handoffs/stream", bearer(account, Role.TECHNICIAN, "tina"))]
    tina.append(SSEReader(client, "/v1/handoffs/stream", bearer(account, Role.TECHNICIAN, "tina")))
    tom = SSEReader(client, "/v1/handoffs/stream", bearer(account, Role.TECHNICIAN, "tom"))
    eng = SSEReader(client, "/v1/handoffs/stream", bearer(account, Role.ENGINEER))
    everyone = [*tina, tom, eng]
    try:
        for reader in everyone:
            await reader.wait_for(lambda r: bool(r.of("snapshot")))
        await wait_until(lambda: len(gw.app.state.streams.fanout.feeds) == 3, timeout=5)
        assert set(gw.app.state.streams.fanout.feeds) == {
            f"handoffs/{account}/user/tina",
            f"handoffs/{account}/user/tom",
            f"handoffs/{account}",
        }
        await write_escalations(server, account, 2)  # created by tina
        await eng.wait_for(lambda r: len(r.of("created")) == 2)
        for reader in tina:
            await reader.wait_for(lambda r: len(r.of("created")) == 2)
        assert not tom.of("created")
    finally:
        for reader in everyone:
            await reader.close()


# ---- slow browsers ----------------------------------------------------------------------


class RawReader:
    """An SSE request over a bare socket with a tiny receive buffer, read on demand.

    Its segments are small too (TCP_MAXSEG, announced in its SYN): on loopback the
    gateway's send buffer grows with the segment size (64 KiB segments let it hold about
    4,300 events, 2.8 MB), and only past what the kernel holds does the gateway see a
    browser that reads nothing. With 536-byte segments about 250 events fill it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""

    @classmethod
    async def open(cls, gw: RunningGateway, headers: dict[str, str]) -> RawReader:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.port))
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        # HTTP/1.0: the body ends when the connection does (no chunked framing to undo).
        request = f"GET /v1/escalations/stream HTTP/1.0\r\nHost: gw\r\n{lines}\r\n"
        await asyncio.get_running_loop().sock_sendall(sock, request.encode())
        return cls(sock)

    async def read_until(self, marker: bytes, timeout: float = 15) -> None:
        async def loop() -> None:
            while marker not in self.data:
                chunk = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
                assert chunk, "the connection closed"
                self.data += chunk

        await asyncio.wait_for(loop(), timeout)

    async def read_to_end(self, timeout: float = 30) -> None:
        async def loop() -> None:
            while True:
                try:
                    chunk = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
                except ConnectionResetError:
                    return
                if not chunk:
                    return
                self.data += chunk

        await asyncio.wait_for(loop(), timeout)

    def frames(self) -> list[dict[str, str]]:
        """Complete frames only: a frame cut by the disconnect is not delivered."""
        body = self.data.split(b"\r\n\r\n", 1)[1].decode(errors="replace")
        frames = []
        for block in body.split("\n\n")[:-1]:
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                name, _, value = line.partition(": ")
                fields[name] = value
            frames.append(fields)
        return frames


@pytest.mark.timeout(240)  # 1,500 events written and read three ways on a busy machine
async def test_a_browser_that_stops_reading_is_cut_off_and_resumes_losing_nothing(
    gw: RunningGateway, client: httpx.AsyncClient, server: ServerRuntime, account: str
) -> None:
    # The slow browser is cut off after about 450 (the kernel's buffers, then its queue of
    # 200 frames): three times that, so the cut-off never depends on the machine's pace.
    total = 1500
    eng = bearer(account, Role.ENGINEER)
    before = await metrics(client)
    slow = await RawReader.open(gw, eng)
    # The same engineer's other tabs: on the slow one's shared feed.
    fast = [SSEReader(client, "/v1/escalations/stream", eng) for _ in range(3)]
    try:
        await slow.read_until(b"event: snapshot")
        await slow.read_until(b"\n\n", timeout=15)
        for reader in fast:
            await reader.wait_for(lambda r: bool(r.of("snapshot")))
        start = int(fast[0].of("snapshot")[0].id)
        # The slow one reads no more from here on.
        writer = asyncio.create_task(write_escalations(server, account, total))
        for reader in fast:
            await reader.wait_for(lambda r: len(r.of("created")) >= total, timeout=90)
        await writer
        head = start + total
        for reader in fast:
            ids = ids_after_snapshot(reader)
            assert ids[:total] == list(range(start + 1, head + 1))
        slow_key = "resolutionflow_gateway_sse_slow_disconnects_total"

        async def cut_off() -> bool:
            return (await metrics(client))[slow_key] - before.get(slow_key, 0) >= 1

        await wait_until(cut_off, timeout=15, what="the slow browser cut off")
        assert (await metrics(client))[slow_key] - before.get(slow_key, 0) == 1
        # What the slow browser holds: a prefix, in order, up to its last complete frame.
        await slow.read_to_end()
        got = [int(f["id"]) for f in slow.frames() if "id" in f and f.get("event") != "snapshot"]
        assert got == list(range(start + 1, start + 1 + len(got)))
        assert len(got) < total
        last = got[-1] if got else start
        resumed = SSEReader(client, "/v1/escalations/stream", {**eng, "Last-Event-ID": str(last)})
        try:
            await resumed.wait_for(
                lambda r: bool(r.data_events) and int(r.data_events[-1].id) >= head, timeout=60
            )
            assert ids_after_snapshot(resumed)[: head - last] == list(range(last + 1, head + 1))
            assert not resumed.of("snapshot") and not resumed.of("reset")
        finally:
            await resumed.close()
    finally:
        slow.sock.close()
        for reader in fast:
            await reader.close()


async def test_the_gateway_ends_a_stream_when_its_token_expires(
    gw: RunningGateway, client: httpx.AsyncClient, server: ServerRuntime, account: str
) -> None:
    """Also on the shared feed, where the server no longer sees this browser's token."""
    short = token(account, "erin", Role.ENGINEER, ttl=3)
    long = SSEReader(client, "/v1/escalations/stream", bearer(account, Role.ENGINEER, "ed"))
    reader = SSEReader(client, "/v1/escalations/stream", {"Authorization": f"Bearer {short}"})
    try:
        await long.wait_for(lambda r: bool(r.of("snapshot")))
        await reader.wait_for(lambda r: bool(r.of("snapshot")))
        await wait_until(lambda: subscribers(server, account) == 1, timeout=5)
        await reader.wait_done(timeout=15)
        assert [e.event for e in reader.data_events] == ["snapshot", "error"]
        error = event_json(reader.of("error")[0])
        assert (error["code"], error["message"]) == ("UNAUTHENTICATED", "token expired")
        assert not long.ended
    finally:
        await long.close()
        await reader.close()


# ---- upstream RESET ---------------------------------------------------------------------


async def test_a_reset_from_upstream_reaches_every_browser(
    database_url: str, tmp_path: Path, account: str
) -> None:
    """While the server is away the log moves on and the events after the feed's position
    are pruned: the resumed call gets the server's RESET, and every browser of the feed
    receives it on its open stream."""
    upstream = ServerProcess(database_url, tmp_path)
    await upstream.start()
    try:
        async with (
            running_gateway(upstream.address, upstream_max_backoff_seconds=0.5) as gw,
            httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
        ):
            readers = [
                SSEReader(client, "/v1/escalations/stream", bearer(account, Role.ENGINEER, f"e{n}"))
                for n in range(3)
            ]
            for reader in readers:
                await reader.wait_for(lambda r: bool(r.of("snapshot")))
            tech = bearer(account, Role.TECHNICIAN, "tina")
            reply = await client.post("/v1/handoffs", json=handoff_body(), headers=tech)
            assert reply.status_code == 201, reply.text
            kept = reply.json()["handoff"]["id"]
            for reader in readers:
                await reader.wait_for(lambda r: bool(r.of("created")))

            await upstream.kill()
            engine = create_async_engine(database_url)
            try:
                async with engine.begin() as c:
                    params = {"account": account}
                    await c.execute(text("DELETE FROM events WHERE account_id = :account"), params)
                    await c.execute(
                        text(
                            "UPDATE account_sequences SET last_sequence = last_sequence + 10 "
                            "WHERE account_id = :account"
                        ),
                        params,
                    )
            finally:
                await engine.dispose()
            await upstream.start()

            for reader in readers:
                await reader.wait_for(lambda r: bool(r.of("reset")), timeout=30)
                body = event_json(reader.of("reset")[0])
                assert "retention" in body["resetReason"]
                assert [h["id"] for h in body["snapshot"]] == [kept]
                assert not reader.ended and not reader.of("error")
            for reader in readers:
                await reader.close()
    finally:
        await upstream.stop()
