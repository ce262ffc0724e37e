"""``resolutionflow serve`` (gRPC + gateway in one process) and ``resolutionflow gateway``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.domain.types import Role
from server.runtime import ServerRuntime
from tests.gateway_support import bearer, handoff_body
from tests.processes import REPO, free_port
from tests.support import JWT_SECRET, wait_until


async def start(tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    log = (tmp_path / "cli.log").open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.cli",
            *args,
            cwd=REPO,
            env={**os.environ, "RF_JWT_SECRET": JWT_SECRET, "RF_VAR_DIR": str(tmp_path)},
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()


async def serving(client: httpx.AsyncClient, proc: asyncio.subprocess.Process) -> bool:
    assert proc.returncode is None, "the process exited"
    try:
        return (await client.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 20)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise


async def test_serve_runs_grpc_and_the_gateway_in_one_process(
    tmp_path: Path, database_url: str, account: str
) -> None:
    grpc_port, http_port = free_port(), free_port()
    proc = await start(
        tmp_path,
        "serve",
        "--grpc-addr",
        f"127.0.0.1:{grpc_port}",
        "--http-addr",
        f"127.0.0.1:{http_port}",
        "--database-url",
        database_url,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as http:
            await wait_until(lambda: serving(http, proc), timeout=30, what="serve is up")
            created = await http.post(
                "/v1/handoffs", json=handoff_body(), headers=bearer(account, Role.TECHNICIAN)
            )
            assert created.status_code == 201, created.text
            queue = await http.get("/v1/escalations", headers=bearer(account, Role.ENGINEER))
            assert [h["id"] for h in queue.json()["escalations"]] == [
                created.json()["handoff"]["id"]
            ]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        code = await stop(proc)
    assert code == 0, (tmp_path / "cli.log").read_text()[-3000:]


async def test_gateway_command_runs_the_gateway_alone(
    tmp_path: Path, server: ServerRuntime, account: str
) -> None:
    http_port = free_port()
    proc = await start(
        tmp_path,
        "gateway",
        "--http-addr",
        f"127.0.0.1:{http_port}",
        "--upstream",
        f"127.0.0.1:{server.port}",
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as http:
            await wait_until(lambda: serving(http, proc), timeout=30, what="gateway is up")
            queue = await http.get("/v1/escalations", headers=bearer(account, Role.ENGINEER))
            assert queue.status_code == 200
            assert queue.json() == {}  # empty queue, cursor 0: defaults are omitted
    finally:
        code = await stop(proc)
    assert code == 0, (tmp_path / "cli.log").read_text()[-3000:]
