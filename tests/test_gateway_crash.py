"""A gateway SIGKILLed under 200 open SSE streams: after its restart every browser-like
client resumes from its Last-Event-ID and misses nothing, repeats nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import httpx

from server.domain.types import Role
from server.runtime import ServerRuntime
from tests.processes import REPO, free_port
from tests.support import JWT_SECRET, Client, token, wait_until

CLIENTS = 200


class Browser:
    """What the web page's stream module does: read frames, remember the id, resume."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.http = http
        self.headers = headers
        self.last_id: str | None = None
        self.created: list[str] = []
        self.ids: list[int] = []
        self.connects = 0
        self.snapshots = 0
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        while True:
            headers = dict(self.headers)
            if self.last_id is not None:
                headers["Last-Event-ID"] = self.last_id
            try:
                async with self.http.stream("GET", "/v1/escalations/stream", headers=headers) as r:
                    if r.status_code != 200:
                        raise httpx.TransportError(f"status {r.status_code}")
                    self.connects += 1
                    await self.read(r)
            except (httpx.HTTPError, OSError):
                pass
            await asyncio.sleep(0.2)  # a reconnect delay, as browsers have

    async def read(self, response: httpx.Response) -> None:
        event: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line:
                field, _, value = line.partition(":")
                event[field] = value.strip()
                continue
            if event.get("event") == "error":
                return
            if "id" in event and event.get("event") not in (None, "heartbeat"):
                self.last_id = event["id"]
                if event["event"] in ("snapshot", "reset"):
                    self.snapshots += 1
                else:
                    self.ids.append(int(event["id"]))
                if event["event"] == "created":
                    self.created.append(json.loads(event["data"])["handoff"]["id"])
            event = {}


async def start_gateway(port: int, upstream: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resolutionflow_cli",
        "gateway",
        "--http-addr",
        f"127.0.0.1:{port}",
        "--upstream",
        f"127.0.0.1:{upstream}",
        cwd=REPO,
        env={**os.environ, "RF_JWT_SECRET": JWT_SECRET},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_gateway_sigkill_with_200_streams(
    server: ServerRuntime, technician: Client, account: str
) -> None:
    port = free_port()
    gateway = await start_gateway(port, server.port)
    limits = httpx.Limits(max_connections=CLIENTS + 10)
    headers = {"Authorization": f"Bearer {token(account, 'erin', Role.ENGINEER)}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=httpx.Timeout(10, read=None)
    ) as http:
        browsers = [Browser(http, headers) for _ in range(CLIENTS)]
        try:
            await wait_until(
                lambda: all(b.snapshots for b in browsers), timeout=60, what="streams open"
            )
            first = await technician.create(problem_summary="before the crash")
            await wait_until(
                lambda: all(first.id in b.created for b in browsers), timeout=60, what="first"
            )
            gateway.send_signal(signal.SIGKILL)
            await gateway.wait()
            during = [await technician.create(problem_summary=f"while down {i}") for i in range(2)]
            gateway = await start_gateway(port, server.port)
            expected = [first.id, *(h.id for h in during)]
            await wait_until(
                lambda: all(b.created[-3:] == expected for b in browsers), timeout=60, what="all"
            )
            for b in browsers:
                assert b.connects >= 2
                assert b.snapshots == 1  # the resume replayed; it did not start over
                assert b.created == expected  # each once, in order
                assert b.ids == sorted(set(b.ids))  # no event id seen twice
        finally:
            for b in browsers:
                b.task.cancel()
            await asyncio.gather(*(b.task for b in browsers), return_exceptions=True)
            gateway.terminate()
            await gateway.wait()
