"""``POST /local/token``: offered by ``resolutionflow serve`` only, never by ``gateway``."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt

from server.runtime import ServerRuntime
from tests.processes import free_port, gateway_args, http_serving, serve_args, start_cli, stop_cli
from tests.support import wait_until


async def test_serve_offers_local_tokens_signed_with_the_servers_secret(
    tmp_path: Path, database_url: str, account: str
) -> None:
    grpc_port, http_port = free_port(), free_port()
    proc = await start_cli(tmp_path, *serve_args(grpc_port, http_port, database_url), local=True)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as http:
            await wait_until(lambda: http_serving(http, proc), timeout=30, what="serve is up")
            page = await http.get("/")
            assert 'data-local-mode="true"' in page.text
            reply = await http.post(
                "/local/token",
                json={"account": account, "user": "erin", "role": "engineer", "name": "Erin"},
            )
            assert reply.status_code == 200, reply.text
            token = reply.json()["token"]
            claims = jwt.decode(token, options={"verify_signature": False})
            assert {k: claims[k] for k in ("sub", "account", "role", "name")} == {
                "sub": "erin",
                "account": account,
                "role": "engineer",
                "name": "Erin",
            }
            assert claims["exp"] > claims["iat"]
            # The server accepts it: signed with the secret `serve` resolved for itself.
            queue = await http.get("/v1/escalations", headers={"Authorization": f"Bearer {token}"})
            assert queue.status_code == 200, queue.text
            bodies: list[object] = [
                {"account": account, "user": "x", "role": "root"},
                {"user": "x"},
                [],
            ]
            for bad in bodies:
                refused = await http.post("/local/token", json=bad)
                assert refused.status_code == 400
                assert refused.json()["code"] == "INVALID_ARGUMENT"
    finally:
        code = await stop_cli(proc)
    assert code == 0, (tmp_path / "cli.log").read_text()[-3000:]


async def test_the_gateway_command_has_no_local_token_route(
    tmp_path: Path, server: ServerRuntime
) -> None:
    http_port = free_port()
    proc = await start_cli(tmp_path, *gateway_args(http_port, server.port), local=True)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as http:
            await wait_until(lambda: http_serving(http, proc), timeout=30, what="gateway is up")
            reply = await http.post(
                "/local/token", json={"account": "a", "user": "u", "role": "admin"}
            )
            assert reply.status_code in (404, 405)
            page = await http.get("/")
            assert 'data-local-mode="false"' in page.text
            script = await http.get("/static/stream.js")
            assert script.status_code == 200
            assert "export function openStream" in script.text
            assert script.headers["content-type"].startswith("text/javascript")
    finally:
        code = await stop_cli(proc)
    assert code == 0, (tmp_path / "cli.log").read_text()[-3000:]
