"""Optional tracing: one trace from the browser's HTTP request through the gateway into the
server, exported over OTLP/HTTP to a local collector."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.domain.types import Role
from tests.processes import (
    ServerProcess,
    free_port,
    gateway_args,
    http_serving,
    start_cli,
    stop_cli,
)
from tests.support import token, wait_until

trace_service = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    reason="tracing is an extra: pip install -e '.[otel]'",
)


async def test_one_trace_spans_gateway_and_server(
    database_url: str, tmp_path: Path, account: str
) -> None:
    spans: list[tuple[str, str, str]] = []  # (service, span name, trace id)

    async def traces(request: Request) -> Response:
        export = trace_service.ExportTraceServiceRequest.FromString(await request.body())
        for resource_spans in export.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                spans.extend((service, s.name, s.trace_id.hex()) for s in scope.spans)
        body = trace_service.ExportTraceServiceResponse().SerializeToString()
        return Response(body, media_type="application/x-protobuf")

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    collector = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])]),
            log_level="warning",
            lifespan="off",
        )
    )
    collector_task = asyncio.create_task(collector.serve(sockets=[sock]))
    endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    tracing_env = {"RF_OTEL_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    server = ServerProcess(database_url, tmp_path, **tracing_env)
    await server.start()
    http_port = free_port()
    gateway = await start_cli(tmp_path, *gateway_args(http_port, server.port), env=tracing_env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as http:
            await wait_until(lambda: http_serving(http, gateway), timeout=30, what="the gateway")
            response = await http.post(
                "/v1/handoffs",
                headers={"Authorization": f"Bearer {token(account, 't', Role.TECHNICIAN)}"},
                json={
                    "requestId": "traced",
                    "sessionId": "s",
                    "intent": "HANDOFF_INTENT_ESCALATE",
                    "problemSummary": "traced request",
                },
            )
            assert response.status_code == 201

        def joined() -> set[str]:
            gateway_traces = {
                t for svc, name, t in spans if svc == "resolutionflow-gateway" and "POST" in name
            }
            server_traces = {
                t
                for svc, name, t in spans
                if svc == "resolutionflow-server" and "CreateHandoff" in name
            }
            return gateway_traces & server_traces

        await wait_until(lambda: joined(), timeout=20, what="spans of one trace from both")
    finally:
        await stop_cli(gateway)
        await server.stop()
        collector.should_exit = True
        await collector_task
        sock.close()
