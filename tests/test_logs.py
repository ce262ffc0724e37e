"""One structured log line per RPC, carrying the caller's request id."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from server.domain.types import Role
from tests.processes import ServerProcess
from tests.support import Client, create_request, token, wait_until


def json_lines(path: Path) -> list[dict[str, object]]:
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


async def test_rpc_log_line_carries_request_id_and_caller(
    database_url: str, tmp_path: Path, account: str
) -> None:
    server = ServerProcess(database_url, tmp_path, RF_LOG_FORMAT="json")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            tech = Client(ch, token(account, "tina", Role.TECHNICIAN), account, "tina")
            await tech.handoffs.CreateHandoff(
                create_request(),
                metadata=(*tech.metadata, ("x-request-id", "req-abc-123")),
                timeout=10,
            )

        def logged() -> list[dict[str, object]]:
            return [
                line
                for line in json_lines(server.log_path)
                if line.get("request_id") == "req-abc-123"
            ]

        await wait_until(lambda: logged(), what="the access log line")
        (line,) = [entry for entry in logged() if entry.get("msg") == "rpc"]
        assert line["method"] == "CreateHandoff"
        assert line["code"] == "OK"
        assert line["account_id"] == account
        assert line["user_id"] == "tina"
        assert isinstance(line["duration_ms"], float)
    finally:
        await server.stop()
