"""The gateway's Server-Sent Events: framing, heartbeats, resume, disconnects, upstream loss.

A real uvicorn on a free port in the test's event loop, the real server behind it (the
session's in-process server, or a separate server process where it must die), real HTTP
clients (httpx + httpx-sse, and curl).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from resolutionflow.v1 import handoff_pb2

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.sse import Framer
from server.domain.types import Role
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
from tests.support import wait_until


async def create(http: httpx.AsyncClient, account: str, user: str = "tina", **fields: Any) -> Any:
    response = await http.post(
        "/v1/handoffs",
        json=handoff_body(**fields),
        headers=bearer(account, Role.TECHNICIAN, user, user.title()),
    )
    assert response.status_code == 201, response.text
    return response.json()["handoff"]


async def settled(http: httpx.AsyncClient, account: str, *ids: str) -> int:
    """Wait for the background assessments, then return the account's head sequence."""
    admin = bearer(account, Role.ADMIN)

    async def done() -> bool:
        for handoff_id in ids:
            reply = await http.get(f"/v1/handoffs/{handoff_id}", headers=admin)
            if reply.json()["handoff"]["assessment"]["status"] == "ASSESSMENT_STATUS_PENDING":
                return False
        return True

    await wait_until(done, timeout=15, what="assessments recorded")
    queue = await http.get("/v1/escalations", headers=admin)
    return int(queue.json()["sequence"])


class RawStream:
    """The exact bytes of a stream, split into blocks at blank lines."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.raw = b""
        self._chunks = response.aiter_raw()

    @property
    def blocks(self) -> list[str]:
        return self.raw.decode().split("\n\n")[:-1]

    async def until(self, predicate: Callable[[list[str]], bool], timeout: float = 15) -> None:
        async def read() -> None:
            while not predicate(self.blocks):
                self.raw += await self._chunks.__anext__()

        await asyncio.wait_for(read(), timeout)


@pytest.fixture
async def fast_heartbeat_gateway(server: ServerRuntime) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway that pings every 0.2 s in front of a server whose heartbeat is 15 s."""
    assert server.settings.heartbeat_seconds >= 15
    async with (
        running_gateway(f"127.0.0.1:{server.port}", heartbeat_seconds=0.2) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
    ):
        yield client


# ---- framing ----------------------------------------------------------------------------


async def test_framing_headers_and_retry_hint(http: httpx.AsyncClient, account: str) -> None:
    first = await create(http, account, problemSummary="already waiting")
    eng = bearer(account, Role.ENGINEER)
    async with http.stream("GET", "/v1/escalations/stream", headers=eng) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-length" not in response.headers
        stream = RawStream(response)
        await stream.until(lambda blocks: len(blocks) >= 2)
        assert stream.blocks[0] == "retry: 3000"
        id_line, event_line, data_line = stream.blocks[1].split("\n")
        assert event_line == "event: snapshot"
        snapshot = json.loads(data_line.removeprefix("data: "))
        assert id_line == f"id: {snapshot['sequence']}"
        assert snapshot["type"] == "EVENT_TYPE_SNAPSHOT"
        assert [h["id"] for h in snapshot["snapshot"]] == [first["id"]]
        assert snapshot["snapshot"][0]["problemSummary"] == "already waiting"

        second = await create(http, account, problemSummary="new one")
        await stream.until(lambda blocks: any("\nevent: created\n" in b for b in blocks))
        block = next(b for b in stream.blocks if "\nevent: created\n" in b)
        id_line, event_line, data_line = block.split("\n")
        created = json.loads(data_line.removeprefix("data: "))
        assert id_line == f"id: {created['sequence']}" == f"id: {second['sequence']}"
        assert created["type"] == "EVENT_TYPE_CREATED"
        assert created["handoff"]["id"] == second["id"]
        assert created["handoff"]["status"] == "HANDOFF_STATUS_OPEN"
        assert b"\r" not in stream.raw


async def test_comment_heartbeat_while_idle(
    fast_heartbeat_gateway: httpx.AsyncClient, account: str
) -> None:
    eng = bearer(account, Role.ENGINEER)
    async with fast_heartbeat_gateway.stream(
        "GET", "/v1/escalations/stream", headers=eng
    ) as response:
        stream = RawStream(response)
        await stream.until(lambda blocks: blocks.count(": ping") >= 3, timeout=10)
        # The pings came from the gateway (the server's heartbeat is 15 s away).
        assert not any("event: heartbeat" in b for b in stream.blocks)


async def test_httpx_sse_reads_events_with_ids_and_retry(
    http: httpx.AsyncClient, account: str
) -> None:
    reader = SSEReader(http, "/v1/escalations/stream", bearer(account, Role.ENGINEER))
    try:
        await reader.wait_for(lambda r: bool(r.of("snapshot")))
        assert reader.events[0].retry == 3000
        handoff = await create(http, account)
        await reader.wait_for(lambda r: bool(r.of("created")))
        created = reader.of("created")[0]
        assert created.id == handoff["sequence"]
        assert event_json(created)["handoff"]["id"] == handoff["id"]
    finally:
        await reader.close()


# ---- resume -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["last-event-id", "after", "header-wins"])
async def test_resume_replays_exactly_the_missed_events(
    http: httpx.AsyncClient, account: str, how: str
) -> None:
    eng = bearer(account, Role.ENGINEER)
    seen = await create(http, account, problemSummary="seen live")
    await settled(http, account, seen["id"])
    reader = SSEReader(http, "/v1/escalations/stream", eng)
    await reader.wait_for(lambda r: bool(r.of("snapshot")))
    last_id = int(reader.data_events[-1].id)
    await reader.close()

    missed = [await create(http, account, problemSummary=f"missed {n}") for n in range(3)]
    head = await settled(http, account, *(h["id"] for h in missed))
    assert head > last_id

    path, headers = "/v1/escalations/stream", dict(eng)
    if how == "last-event-id":
        headers["Last-Event-ID"] = str(last_id)
    elif how == "after":
        path += f"?after={last_id}"
    else:  # a reconnecting EventSource sends the header on the original URL
        path += "?after=0"
        headers["Last-Event-ID"] = str(last_id)
    resumed = SSEReader(http, path, headers)
    try:
        await resumed.wait_for(lambda r: bool(r.data_events) and int(r.data_events[-1].id) >= head)
        ids = [int(e.id) for e in resumed.data_events]
        assert ids == list(range(last_id + 1, head + 1))  # no gap, no duplicate, no snapshot
        created = [event_json(e)["handoff"]["id"] for e in resumed.of("created")]
        assert created == [h["id"] for h in missed]
        assert {e.event for e in resumed.data_events} <= {"created", "assessment_ready"}
    finally:
        await resumed.close()


async def test_cursor_ahead_of_the_log_resets(http: httpx.AsyncClient, account: str) -> None:
    handoff = await create(http, account)
    headers = {**bearer(account, Role.ENGINEER), "Last-Event-ID": "999999"}
    reader = SSEReader(http, "/v1/escalations/stream", headers)
    try:
        await reader.wait_for(lambda r: bool(r.data_events))
        reset = reader.data_events[0]
        assert reset.event == "reset"
        body = event_json(reset)
        assert "ahead" in body["resetReason"]
        assert [h["id"] for h in body["snapshot"]] == [handoff["id"]]
    finally:
        await reader.close()


async def test_watch_handoffs_shows_a_technician_only_their_own(
    http: httpx.AsyncClient, account: str
) -> None:
    reader = SSEReader(http, "/v1/handoffs/stream", bearer(account, Role.TECHNICIAN, "tina"))
    try:
        await reader.wait_for(lambda r: bool(r.of("snapshot")))
        await create(http, account, user="tom", problemSummary="tom's")
        mine = await create(http, account, user="tina", intent="HANDOFF_INTENT_REASSIGN")
        await reader.wait_for(lambda r: bool(r.of("created")))
        assert [event_json(e)["handoff"]["id"] for e in reader.of("created")] == [mine["id"]]
    finally:
        await reader.close()


# ---- errors -----------------------------------------------------------------------------


async def test_errors_before_the_first_byte_are_http_errors(
    http: httpx.AsyncClient, server: ServerRuntime, account: str
) -> None:
    eng = bearer(account, Role.ENGINEER)
    cases: list[tuple[str, dict[str, str], int, str]] = [
        ("/v1/escalations/stream", {}, 401, "UNAUTHENTICATED"),
        ("/v1/handoffs/stream", {"Authorization": "Bearer nope"}, 401, "UNAUTHENTICATED"),
        ("/v1/escalations/stream", bearer(account, Role.TECHNICIAN), 403, "PERMISSION_DENIED"),
        ("/v1/escalations/stream", {**eng, "Last-Event-ID": "abc"}, 400, "INVALID_ARGUMENT"),
        ("/v1/escalations/stream?after=-1", eng, 400, "INVALID_ARGUMENT"),
    ]
    for path, headers, status, code in cases:
        response = await http.get(path, headers=headers)
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == code
    assert subscribers(server, account) == 0


async def test_gateway_shutdown_ends_streams_with_an_error_event(
    server: ServerRuntime, account: str
) -> None:
    async with running_gateway(f"127.0.0.1:{server.port}") as gw:
        client = httpx.AsyncClient(base_url=gw.url, timeout=30)
        reader = SSEReader(client, "/v1/escalations/stream", bearer(account, Role.ENGINEER))
        await reader.wait_for(lambda r: bool(r.of("snapshot")))
        await asyncio.wait_for(gw.stop(), 10)
        await reader.wait_done()
        assert event_json(reader.of("error")[0])["code"] == "UNAVAILABLE"
        await client.aclose()
    await wait_until(lambda: subscribers(server, account) == 0, timeout=2)


# ---- disconnects (docs/design.md invariant 10) ------------------------------------------


async def test_closing_the_connection_frees_the_server_subscriber(
    http: httpx.AsyncClient, gateway: Any, server: ServerRuntime, account: str
) -> None:
    for path in ("/v1/escalations/stream", "/v1/handoffs/stream"):
        reader = SSEReader(http, path, bearer(account, Role.ENGINEER))
        await reader.wait_for(lambda r: bool(r.of("snapshot")))
        # The browser's own call hands over to the shared one: one server stream after.
        await wait_until(lambda: subscribers(server, account) == 1, timeout=2)
        await reader.close()  # the stream is idle: only the disconnect can tell
        await wait_until(lambda: subscribers(server, account) == 0, timeout=2)
        await wait_until(lambda: gateway.app.state.upstream.open_streams == 0, timeout=2)


@contextlib.asynccontextmanager
async def stock_uvicorn(server: ServerRuntime) -> AsyncIterator[tuple[Any, int]]:
    """The gateway's app under plain uvicorn (its own h11 protocol), without the gateway's
    protocol and so without its ``gateway.on_lost`` extension: another ASGI server."""
    app = create_app(GatewaySettings(http_addr="127.0.0.1:0", upstream=f"127.0.0.1:{server.port}"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    stock = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_config=None, http="h11", ws="none")
    )
    task = asyncio.create_task(stock.serve(sockets=[sock]))
    try:
        await wait_until(lambda: stock.started, timeout=15, what="uvicorn started")
        yield app, int(sock.getsockname()[1])
    finally:
        app.state.streams.shut_down()
        stock.should_exit = True
        await task


@pytest.mark.parametrize("serving", ["httptools", "h11", "stock uvicorn"])
async def test_a_silent_stream_is_released_as_soon_as_its_client_goes_away(
    server: ServerRuntime, account: str, serving: str
) -> None:
    """Nothing is written to an idle stream for a heartbeat interval (15 s), so only the
    connection can tell: the gateway's protocol calls the response back when it is lost
    (``gateway.on_lost``, either parser); under a server without that extension, a task
    waiting on ASGI ``receive()`` for ``http.disconnect`` does it."""
    async with contextlib.AsyncExitStack() as stack:
        if serving == "stock uvicorn":
            app, port = await stack.enter_async_context(stock_uvicorn(server))
        else:
            gw = await stack.enter_async_context(
                running_gateway(f"127.0.0.1:{server.port}", http_parser=serving)
            )
            app, port = gw.app, gw.port
        streams = app.state.streams
        assert streams.heartbeat_seconds >= 15
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            auth = bearer(account, Role.ENGINEER)["Authorization"]
            writer.write(
                b"GET /v1/escalations/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Authorization: {auth}\r\n\r\n".encode()
            )
            received = b""
            while b"event: snapshot" not in received:
                chunk = await asyncio.wait_for(reader.read(65536), 10)
                assert chunk, received
                received += chunk
            assert received.startswith(b"HTTP/1.1 200 ")
            await wait_until(lambda: subscribers(server, account) == 1, timeout=5)
            assert len(streams.browsers) == 1
            writer.close()
            await wait_until(lambda: not streams.browsers, timeout=5, what="the browser released")
            await wait_until(lambda: app.state.upstream.open_streams <= 1, timeout=5)
        # The last browser gone, the shared feed lingers a second, then the server's stream.
        await wait_until(lambda: subscribers(server, account) == 0, timeout=5)


async def test_200_open_close_cycles_leak_nothing(
    http: httpx.AsyncClient, gateway: Any, server: ServerRuntime, account: str
) -> None:
    eng = bearer(account, Role.ENGINEER)
    for n in range(200):
        path = "/v1/escalations/stream" if n % 2 else "/v1/handoffs/stream"
        async with http.stream("GET", path, headers=eng) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line == "event: snapshot":
                    break
    # The last browser gone, each shared feed lingers RF_SSE_FEED_LINGER_SECONDS (1 s).
    await wait_until(lambda: not gateway.app.state.streams.fanout.feeds, timeout=3)
    await wait_until(lambda: subscribers(server, account) == 0, timeout=2)
    await wait_until(lambda: gateway.app.state.upstream.open_streams == 0, timeout=2)
    assert account not in server.hub.feeds


# ---- one rendering per event per gateway ------------------------------------------------


def test_the_frame_cache_is_bounded_in_bytes_as_well_as_entries() -> None:
    """Snapshots are cached too; a few hundred distinct ones of a large queue must not
    stay cached: the oldest go once the cache's keys and frames pass its byte bound."""
    bound = 256 * 1024
    framer = Framer(max_bytes=bound)

    def snapshot(sequence: int) -> handoff_pb2.HandoffEvent:
        return handoff_pb2.HandoffEvent(
            sequence=sequence,
            type=handoff_pb2.EVENT_TYPE_SNAPSHOT,
            snapshot=[
                handoff_pb2.Handoff(id=f"h{n}", problem_summary="printer jam " * 40)
                for n in range(20)
            ],
        )

    first = framer.frame(snapshot(1))
    assert framer.frame(snapshot(1)) is first and framer.rendered == 1  # shared
    for sequence in range(2, 201):
        framer.frame(snapshot(sequence))
    assert framer.rendered == 200
    assert bound - 2 * len(first) < framer.cached_bytes <= bound
    framer.frame(snapshot(200))  # the newest is still cached
    assert framer.rendered == 200
    framer.frame(snapshot(1))  # the oldest is not
    assert framer.rendered == 201


async def test_each_event_is_framed_once_for_all_subscribers(
    server: ServerRuntime, account: str
) -> None:
    async with (
        running_gateway(f"127.0.0.1:{server.port}") as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
    ):
        handoff = await create(client, account)
        head = await settled(client, account, handoff["id"])
        framer = gw.app.state.streams.framer
        before = framer.rendered
        readers = [
            SSEReader(client, "/v1/escalations/stream?after=0", bearer(account, Role.ENGINEER))
            for _ in range(5)
        ]
        try:
            for reader in readers:
                await reader.wait_for(lambda r: len(r.data_events) >= head)
            assert {tuple(e.data for e in r.data_events) for r in readers} == {
                tuple(e.data for e in readers[0].data_events)
            }
            assert framer.rendered - before == head
        finally:
            for reader in readers:
                await reader.close()


# ---- the upstream goes away and comes back ----------------------------------------------


def assert_in_order(reader: SSEReader) -> list[int]:
    """The reader's event ids: strictly increasing (no gap is checked by the caller)."""
    ids = [int(e.id) for e in reader.events if e.id and e.data]
    assert ids == sorted(set(ids)), ids
    return ids


async def test_upstream_down_then_back(database_url: str, tmp_path: Path, account: str) -> None:
    """The server dies and comes back: a browser's stream stays open and misses nothing."""
    upstream = ServerProcess(database_url, tmp_path)
    await upstream.start()
    try:
        async with (
            running_gateway(upstream.address, upstream_max_backoff_seconds=0.5) as gw,
            httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
        ):
            eng = bearer(account, Role.ENGINEER)
            assert (await client.get("/v1/escalations", headers=eng)).status_code == 200
            live = SSEReader(client, "/v1/escalations/stream", eng)
            await live.wait_for(lambda r: bool(r.of("snapshot")))
            before = [await create(client, account, problemSummary=f"before {n}") for n in range(3)]
            await live.wait_for(lambda r: len(r.of("created")) == 3)

            await upstream.kill()
            down = await client.get("/v1/escalations", headers=eng)
            assert down.status_code == 503
            assert down.json()["code"] == "UNAVAILABLE"
            assert "unavailable" in down.json()["message"]
            created = await client.post("/v1/handoffs", json=handoff_body(), headers=eng)
            assert created.status_code == 503
            assert (await client.get("/healthz")).status_code == 503
            # A stream asked for while the server is down says so in-band, so that any
            # client (EventSource too) reconnects after the retry hint.
            during = SSEReader(client, "/v1/escalations/stream", eng)
            await during.wait_done()
            assert during.response is not None and during.response.status_code == 200
            assert event_json(during.of("error")[0])["code"] == "UNAVAILABLE"

            await upstream.start()

            async def rest_back() -> bool:
                reply = await client.get("/v1/escalations", headers=eng)
                return reply.status_code == 200

            await wait_until(rest_back, timeout=20, what="REST recovers")
            after = [await create(client, account, problemSummary=f"after {n}") for n in range(3)]
            # The open stream was resumed by the gateway from its last sequence: the new
            # events arrive on the same connection, none lost, none twice.
            await live.wait_for(lambda r: len(r.of("created")) == 6, timeout=20)
            assert not live.ended and not live.of("error")
            assert [event_json(e)["handoff"]["id"] for e in live.of("created")] == [
                h["id"] for h in before + after
            ]
            assert_in_order(live)
            again = SSEReader(client, "/v1/escalations/stream", eng)
            try:
                await again.wait_for(lambda r: bool(r.of("snapshot")))
                snapshot = event_json(again.of("snapshot")[0])
                assert {h["id"] for h in snapshot["snapshot"]} == {h["id"] for h in before + after}
            finally:
                await again.close()
                await live.close()
            assert (await client.get("/healthz")).json() == {"status": "SERVING"}
    finally:
        await upstream.stop()


async def test_upstream_down_for_too_long_ends_streams(
    database_url: str, tmp_path: Path, account: str
) -> None:
    """Past sse_upstream_resume_seconds the gateway stops retrying and tells the browser."""
    upstream = ServerProcess(database_url, tmp_path)
    await upstream.start()
    try:
        async with (
            running_gateway(
                upstream.address,
                upstream_max_backoff_seconds=0.2,
                sse_upstream_resume_seconds=1,
            ) as gw,
            httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
        ):
            live = SSEReader(client, "/v1/escalations/stream", bearer(account, Role.ENGINEER))
            await live.wait_for(lambda r: bool(r.of("snapshot")))
            await wait_until(lambda: len(gw.app.state.streams.fanout.feeds) == 1, timeout=5)
            await upstream.kill()
            await live.wait_done()
            error = event_json(live.of("error")[0])
            assert error["code"] == "UNAVAILABLE"
            assert "unavailable" in error["message"]
            await wait_until(lambda: not gw.app.state.streams.fanout.feeds, timeout=5)
    finally:
        await upstream.stop()


# ---- curl -------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_shows_the_live_queue(
    http: httpx.AsyncClient, gateway: Any, account: str
) -> None:
    eng = bearer(account, Role.ENGINEER, "erin")
    curl = await asyncio.create_subprocess_exec(
        "curl",
        "-N",
        "-s",
        "-H",
        f"Authorization: {eng['Authorization']}",
        f"{gateway.url}/v1/escalations/stream",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert curl.stdout is not None
    lines: list[str] = []

    async def read_until(wanted: str, more: int = 0) -> None:
        """Lines up to ``wanted`` and ``more`` after it."""

        async def loop() -> None:
            while wanted not in lines or len(lines) <= lines.index(wanted) + more:
                assert curl.stdout is not None
                line = await curl.stdout.readline()
                assert line, f"curl ended: {lines}"
                lines.append(line.decode().rstrip("\n"))

        await asyncio.wait_for(loop(), 15)

    try:
        await read_until("event: snapshot")
        handoff = await create(http, account, problemSummary="printer on fire")
        await read_until("event: created", more=1)
        data = lines[lines.index("event: created") + 1]
        assert data.startswith("data: ")
        assert json.loads(data.removeprefix("data: "))["handoff"]["id"] == handoff["id"]
    finally:
        if curl.returncode is None:
            curl.terminate()
        await asyncio.wait_for(curl.wait(), 10)


async def test_the_queue_stream_takes_filters(http: httpx.AsyncClient, account: str) -> None:
    await create(http, account, priority="PRIORITY_LOW")
    urgent = await create(http, account, priority="PRIORITY_URGENT")
    path = "/v1/escalations/stream?priorities=PRIORITY_URGENT&priorities=PRIORITY_HIGH"
    reader = SSEReader(http, path, bearer(account, Role.ENGINEER))
    try:
        await reader.wait_for(lambda r: bool(r.of("snapshot")))
        snapshot = event_json(reader.of("snapshot")[0])["snapshot"]
        assert [h["id"] for h in snapshot] == [urgent["id"]]
        await create(http, account, priority="PRIORITY_LOW")
        high = await create(http, account, priority="PRIORITY_HIGH")
        await reader.wait_for(lambda r: bool(r.of("created")))
        assert [event_json(e)["handoff"]["id"] for e in reader.of("created")] == [high["id"]]
    finally:
        await reader.close()
    held = SSEReader(http, "/v1/escalations/stream?held_by_me=true", bearer(account, Role.ENGINEER))
    try:
        await held.wait_for(lambda r: bool(r.of("snapshot")))
        assert "snapshot" not in event_json(held.of("snapshot")[0])  # nothing held: empty
    finally:
        await held.close()
    bad = await http.get(
        "/v1/escalations/stream?priorities=PRIORITY_SOON", headers=bearer(account, Role.ENGINEER)
    )
    assert bad.status_code == 400 and "priorities" in bad.text
