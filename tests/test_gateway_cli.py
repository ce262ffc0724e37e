"""``resolutionflow serve`` (gRPC + gateway in one process) and ``resolutionflow gateway``."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.domain.types import Role
from server.runtime import ServerRuntime
from tests.gateway_support import bearer, handoff_body
from tests.processes import free_port, gateway_args, http_serving, serve_args, start_cli, stop_cli
from tests.support import wait_until


async def test_serve_runs_grpc_and_the_gateway_in_one_process(
    tmp_path: Path, database_url: str, account: str
) -> None:
    grpc_port, http_port = free_port(), free_port()
    proc = await start_cli(tmp_path, *serve_args(grpc_port, http_port, database_url))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as http:
            await wait_until(lambda: http_serving(http, proc), timeout=30, what="serve is up")
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
        code = await stop_cli(proc)
    assert code == 0, (tmp_path / "cli.log").read_text()[-3000:]


async def test_gateway_command_runs_the_gateway_alone(
    tmp_path: Path, server: ServerRuntime, account: str
) -> None:
    http_port = free_port()
    proc = await start_cli(tmp_path, *gateway_args(http_port, server.port))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as http:
            await wait_until(lambda: http_serving(http, proc), timeout=30, what="gateway is up")
            queue = await http.get("/v1/escalations", headers=bearer(account, Role.ENGINEER))
            assert queue.status_code == 200
            assert queue.json() == {}  # empty queue, cursor 0: defaults are omitted
    finally:
        code = await stop_cli(proc)
    assert code == 0, (tmp_path / "cli.log").read_text()[-3000:]
