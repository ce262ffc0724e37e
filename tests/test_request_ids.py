"""One browser action, followed by its request id through the gateway and the server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import httpx

from server.domain.types import Role
from tests.processes import REPO, free_port
from tests.support import JWT_SECRET, token, wait_until


def json_lines(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


async def test_request_id_appears_in_gateway_and_server_logs(tmp_path: Path, account: str) -> None:
    grpc_port, http_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--grpc-addr",
            f"127.0.0.1:{grpc_port}",
            "--http-addr",
            f"127.0.0.1:{http_port}",
            "--database-url",
            f"sqlite+aiosqlite:///{tmp_path / 'rf.db'}",
            cwd=REPO,
            env={**os.environ, "RF_JWT_SECRET": JWT_SECRET, "RF_LOG_FORMAT": "json"},
            stdout=out,
            stderr=out,
        )
    try:
        base = f"http://127.0.0.1:{http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:

            async def up() -> bool:
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(up, timeout=30, what="serve to answer")
            response = await http.post(
                "/v1/handoffs",
                headers={
                    "Authorization": f"Bearer {token(account, 'tina', Role.TECHNICIAN)}",
                    "X-Request-ID": "browser-click-42",
                },
                json={
                    "requestId": "r1",
                    "sessionId": "s1",
                    "intent": "HANDOFF_INTENT_ESCALATE",
                    "problemSummary": "Printer offline",
                },
            )
        assert response.status_code == 201
        assert response.headers["x-request-id"] == "browser-click-42"

        def tagged() -> list[dict[str, object]]:
            return [e for e in json_lines(log) if e.get("request_id") == "browser-click-42"]

        await wait_until(lambda: len(tagged()) >= 2, what="both log lines")
        by_logger = {e["logger"]: e for e in tagged()}
        assert by_logger["gateway.access"]["path"] == "/v1/handoffs"
        assert by_logger["gateway.access"]["status"] == 201
        assert by_logger["resolutionflow.access"]["method"] == "CreateHandoff"
        assert by_logger["resolutionflow.access"]["user_id"] == "tina"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
