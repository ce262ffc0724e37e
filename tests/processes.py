"""Real ``resolutionflow server`` processes for tests that kill, restart or replicate."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import JWT_SECRET, free_port

REPO = Path(__file__).resolve().parent.parent


class ServerProcess:
    """A server in its own process; ``env`` adds RF_* settings."""

    def __init__(self, database_url: str, log_dir: Path, **env: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.log_path = log_dir / f"server-{self.port}.log"
        self.env = {
            **os.environ,
            "RF_JWT_SECRET": JWT_SECRET,
            "RF_VAR_DIR": str(log_dir),
            "RF_SHUTDOWN_GRACE_SECONDS": "2",
            "RF_CREATES_PER_MINUTE": "1000000",
            "RF_CREATE_BURST": "100000",
            "RF_MAX_STREAMS_PER_USER": "10000",
            **env,
        }
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "resolutionflow_cli",
            "server",
            "--grpc-addr",
            self.address,
            "--database-url",
            self.database_url,
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=log,
        )
        log.close()
        await self.wait_serving(timeout)

    async def wait_serving(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"server not serving: {self.log_path.read_text()[-2000:]}")
                await asyncio.sleep(0.05)

    async def signal_and_wait(self, sig: signal.Signals, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        await self.signal_and_wait(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                await self.signal_and_wait(signal.SIGTERM)
            except TimeoutError:
                await self.kill()


# ---- the CLI as a process (``serve``, ``gateway``) ----------------------------------------


async def start_cli(
    tmp_path: Path, *args: str, local: bool = False, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """``python -m resolutionflow_cli ARGS``, logging to ``tmp_path/cli.log``.

    ``local``: no RF_JWT_SECRET, as on a newcomer's machine (the secret is then created
    under RF_VAR_DIR); otherwise the tests' secret. ``env``: more variables.
    """
    full = {k: v for k, v in os.environ.items() if k != "RF_JWT_SECRET"}
    if not local:
        full["RF_JWT_SECRET"] = JWT_SECRET
    full |= env or {}
    log = (tmp_path / "cli.log").open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "resolutionflow_cli",
            *args,
            cwd=REPO,
            env={**full, "RF_VAR_DIR": str(tmp_path)},
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()


def serve_args(grpc_port: int, http_port: int, database_url: str) -> tuple[str, ...]:
    return (
        "serve",
        *("--grpc-addr", f"127.0.0.1:{grpc_port}"),
        *("--http-addr", f"127.0.0.1:{http_port}"),
        *("--database-url", database_url),
    )


def gateway_args(http_port: int, upstream_port: int) -> tuple[str, ...]:
    return (
        "gateway",
        *("--http-addr", f"127.0.0.1:{http_port}"),
        *("--upstream", f"127.0.0.1:{upstream_port}"),
    )


async def http_serving(client: httpx.AsyncClient, proc: asyncio.subprocess.Process) -> bool:
    assert proc.returncode is None, "the process exited"
    try:
        return (await client.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def stop_cli(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM, and the exit code (SIGKILL and fail if it does not exit within 20 s)."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 20)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
