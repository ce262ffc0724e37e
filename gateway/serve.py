"""Running the gateway under uvicorn inside an existing event loop.

``start_gateway`` binds the listening socket itself (so port 0 works and a busy port is a
plain ``OSError`` at once), runs ``uvicorn.Server.serve`` as a task beside whatever else
the loop runs (``resolutionflow serve`` puts the gRPC server there too), and returns when
the gateway accepts requests. Signals belong to the caller: uvicorn's own signal capture
is switched off so one SIGTERM stops everything in the process in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
from collections.abc import Generator
from typing import Any

import uvicorn
from fastapi import FastAPI

from gateway.app import LocalSignIn, create_app
from gateway.protocol import bounded_protocol
from gateway.settings import GatewaySettings, split_addr

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the process owner handles SIGTERM/SIGINT and calls RunningGateway.stop()


class RunningGateway:
    def __init__(
        self, app: FastAPI, server: uvicorn.Server, task: asyncio.Task[None], host: str, port: int
    ) -> None:
        self.app = app
        self.server = server
        self.task = task
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """End open streams (with ``event: error``), stop accepting, wait for uvicorn."""
        self.app.state.streams.shut_down()
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def _bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and accepted ones inherit it. Without it Nagle holds each response's body behind its
    # headers until the client's delayed ACK: about 40 ms on every request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # a worker of ``gateway --workers N``: the parent checked the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def start_gateway(
    settings: GatewaySettings,
    *,
    access_log: bool = False,
    log_level: str = "info",
    startup_timeout: float = 30,
    local_sign_in: LocalSignIn | None = None,
    reuse_port: bool = False,
) -> RunningGateway:
    app = create_app(settings, local_sign_in=local_sign_in)
    host, port = split_addr(settings.http_addr)
    sock = _bind(host, port, reuse_port)
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        log_level=log_level,
        access_log=access_log,
        ws="none",
        # Bounds on slow headers and bodies (gateway.protocol), whichever the parser.
        http=bounded_protocol(
            settings.http_header_timeout_seconds,
            settings.http_body_timeout_seconds,
            settings.http_parser,
        ),
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace_seconds)),
    )
    server = _Server(config)

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as e:  # uvicorn exits on a failed startup; keep the loop alive
            raise RuntimeError(f"the gateway could not start on {host}:{port}") from e

    task = asyncio.create_task(serve(), name="gateway")
    deadline = asyncio.get_running_loop().time() + startup_timeout
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the gateway stopped during startup")
        if asyncio.get_running_loop().time() > deadline:
            server.should_exit = True
            raise TimeoutError("the gateway did not start in time")
        await asyncio.sleep(0.01)
    return RunningGateway(app, server, task, host, port)


def upstream_for(grpc_addr: str, port: int) -> str:
    """Where a gateway in the same process reaches the gRPC server bound at ``grpc_addr``."""
    host, _ = split_addr(grpc_addr)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def wait_for_signal(*also: asyncio.Future[Any]) -> None:
    """Until SIGTERM/SIGINT (or one of ``also`` finishes)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter, *also}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def run_gateway(
    settings: GatewaySettings, *, reuse_port: bool = False, ready_fd: int | None = None
) -> None:
    """``resolutionflow gateway``: the gateway alone, until SIGTERM/SIGINT.

    ``reuse_port`` and ``ready_fd``: a worker of ``gateway --workers N`` shares the port
    and writes one byte to ``ready_fd`` once it serves."""
    gateway = await start_gateway(settings, reuse_port=reuse_port)
    print(f"resolutionflow: gateway on {gateway.url}, upstream {settings.upstream}", flush=True)
    if ready_fd is not None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
    await wait_for_signal(gateway.task)
    print("resolutionflow: shutting down", flush=True)
    await gateway.stop()
