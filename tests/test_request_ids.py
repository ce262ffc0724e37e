"""One browser action, followed by its request id through the gateway and the server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from server.domain.types import Role
from tests.processes import free_port, http_serving, serve_args, start_cli, stop_cli
from tests.support import token, wait_until


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
    log = tmp_path / "cli.log"
    proc = await start_cli(
        tmp_path,
        *serve_args(grpc_port, http_port, f"sqlite+aiosqlite:///{tmp_path / 'rf.db'}"),
        env={"RF_LOG_FORMAT": "json"},
    )
    try:
        base = f"http://127.0.0.1:{http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            await wait_until(lambda: http_serving(http, proc), timeout=30, what="serve is up")
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
        await stop_cli(proc)
