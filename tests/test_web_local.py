"""``POST /local/token``: offered by ``resolutionflow serve`` only, never by ``gateway``.

Whoever reaches that route can act as anyone in any account, so it answers only a page the
gateway served itself on a loopback address: a loopback ``Host`` with the gateway's port
(DNS rebinding sends the attacker's name there), no foreign ``Origin``, a JSON body (a
cross-site form or ``text/plain`` post is refused), and never an admin token unless
``serve --local-admin`` asked for it. On a non-loopback bind the route does not exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jwt

from gateway.serve import start_gateway
from gateway.settings import GatewaySettings
from server.auth import LocalSignIn, TokenCodec
from server.runtime import ServerRuntime
from tests import gateway_support
from tests.gateway_support import assert_error
from tests.processes import free_port, gateway_args, http_serving, serve_args, start_cli, stop_cli
from tests.support import JWT_SECRET, wait_until


def local_sign_in(allow_admin: bool = False) -> LocalSignIn:
    """What ``resolutionflow serve`` hands its gateway: the server's own token codec."""
    return LocalSignIn(TokenCodec(JWT_SECRET), allow_admin=allow_admin)


ENGINEER = {"account": "acct-local", "user": "erin", "role": "engineer", "name": "Erin"}


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
            # Never an admin unless `serve --local-admin` asked for it.
            admin = await http.post("/local/token", json={**ENGINEER, "role": "admin"})
            body = assert_error(admin, 403, "PERMISSION_DENIED")
            assert "--local-admin" in body["message"]
            assert "token" not in body
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


async def test_serve_with_local_admin_hands_out_admin_tokens(
    tmp_path: Path, database_url: str
) -> None:
    grpc_port, http_port = free_port(), free_port()
    args = (*serve_args(grpc_port, http_port, database_url), "--local-admin")
    proc = await start_cli(tmp_path, *args, local=True)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as http:
            await wait_until(lambda: http_serving(http, proc), timeout=30, what="serve is up")
            reply = await http.post("/local/token", json={**ENGINEER, "role": "admin"})
            assert reply.status_code == 200, reply.text
            claims = jwt.decode(reply.json()["token"], options={"verify_signature": False})
            assert claims["role"] == "admin"
    finally:
        code = await stop_cli(proc)
    assert code == 0, (tmp_path / "cli.log").read_text()[-3000:]


def _host(url: str) -> str:
    return url.removeprefix("http://")


async def test_local_sign_in_answers_only_its_own_page_on_a_loopback_name(
    server: ServerRuntime,
) -> None:
    async with gateway_support.running_gateway(
        f"127.0.0.1:{server.port}", local_sign_in=local_sign_in()
    ) as gw:
        port = gw.port
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:

            async def post(headers: dict[str, str], **kw: Any) -> httpx.Response:
                if "content" not in kw:
                    kw["json"] = ENGINEER
                return await http.post("/local/token", headers=headers, **kw)

            # The page's own request, by each loopback name: a token.
            for name in ("127.0.0.1", "localhost", "[::1]"):
                own = f"{name}:{port}"
                for same in ({}, {"Origin": f"http://{own}"}):
                    reply = await post({"Host": own, **same})
                    assert reply.status_code == 200, (own, same, reply.text)
                    assert reply.json()["token"]

            # DNS rebinding: the attacker's name in Host (and Origin), the request reaching
            # 127.0.0.1 all the same. Or the right Host with another port or no port.
            for host in (
                f"evil.example:{port}",
                f"127.0.0.1.evil.example:{port}",
                f"127.0.0.1:{port + 1}",
                "127.0.0.1",
                "",
            ):
                refused = await post({"Host": host, "Origin": f"http://{host}"})
                body = assert_error(refused, 403, "PERMISSION_DENIED")
                assert "loopback" in body["message"]

            # A foreign page posting to the loopback address: Origin gives it away.
            for origin in ("http://evil.example", "null", f"https://127.0.0.1:{port}"):
                refused = await post({"Host": _host(gw.url), "Origin": origin})
                body = assert_error(refused, 403, "PERMISSION_DENIED")
                assert "same origin" in body["message"]

            # Bodies a cross-site form or a no-preflight fetch can send: not JSON.
            payload = b'{"account": "a", "user": "u", "role": "engineer"}'
            for content_type in (
                "text/plain",
                "text/plain;charset=UTF-8",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/xml",
            ):
                refused = await post({"Content-Type": content_type}, content=payload)
                assert_error(refused, 415, "INVALID_ARGUMENT")
            refused = await post({}, content=payload)  # no Content-Type at all
            assert_error(refused, 415, "INVALID_ARGUMENT")

            admin = await http.post("/local/token", json={**ENGINEER, "role": "admin"})
            assert_error(admin, 403, "PERMISSION_DENIED")

    async with (
        gateway_support.running_gateway(
            f"127.0.0.1:{server.port}", local_sign_in=local_sign_in(allow_admin=True)
        ) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as http,
    ):
        admin = await http.post("/local/token", json={**ENGINEER, "role": "admin"})
        assert admin.status_code == 200, admin.text


async def test_local_sign_in_is_off_on_a_non_loopback_bind(server: ServerRuntime) -> None:
    gw = await start_gateway(
        GatewaySettings(http_addr="0.0.0.0:0", upstream=f"127.0.0.1:{server.port}"),
        log_level="warning",
        local_sign_in=local_sign_in(),
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}", timeout=10) as http:
            page = await http.get("/")
            assert 'data-local-mode="false"' in page.text
            reply = await http.post("/local/token", json=ENGINEER)
            assert reply.status_code in (404, 405), reply.text
            assert "token" not in reply.text
    finally:
        await gw.stop()


def test_the_gateway_holds_no_token_code_and_never_imports_the_server() -> None:
    """One JWT module: the local sign-in mints with ``server.auth``, handed in by ``serve``."""
    import ast

    gateway_dir = Path(__file__).resolve().parent.parent / "gateway"
    found = []
    for source in sorted(gateway_dir.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{source.name}: {n}" for n in names if n.split(".")[0] in ("jwt", "server")]
    assert not found, found
