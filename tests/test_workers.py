"""``--workers N``: N processes on one port, replicas of one PostgreSQL, one parent."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from resolutionflow.v1 import handoff_pb2

from server.domain.types import Role
from tests.processes import start_cli, stop_cli
from tests.support import (
    TLS,
    Client,
    StreamReader,
    free_port,
    of_type,
    stream_escalations,
    token,
    wait_until,
    within,
)

pb = handoff_pb2
CHANNELS = 12


def free_port_pair() -> int:
    """A port P with P + 1 free as well (worker i serves its metrics on P + i)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports")


async def scrape(client: httpx.AsyncClient, port: int) -> str:
    return (await client.get(f"http://127.0.0.1:{port}/metrics")).text


def worker_pid(metrics: str) -> int:
    match = re.search(r'^resolutionflow_worker\{index="\d+",pid="(\d+)"\} 1\.0$', metrics, re.M)
    assert match, "no worker gauge"
    return int(match.group(1))


def counted(metrics: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def pg_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("workers share a port as replicas of one PostgreSQL")
    return database_url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=2, verify=TLS) as client:
        yield client


def own_connection(port: int) -> grpc.aio.Channel:
    # A subchannel pool of its own: a TCP connection of its own, so the kernel picks a
    # worker for each channel.
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


async def test_two_workers_share_a_port_replicate_restart_and_stop_cleanly(
    pg_url: str, tmp_path: Path, account: str, http: httpx.AsyncClient
) -> None:
    port, metrics = free_port(), free_port_pair()
    parent = await start_cli(
        tmp_path,
        *("server", "--workers", "2", "--grpc-addr", f"127.0.0.1:{port}"),
        *("--database-url", pg_url),
        env={
            "RF_METRICS_ADDR": f"127.0.0.1:{metrics}",
            "RF_SHUTDOWN_GRACE_SECONDS": "2",
            "RF_CREATES_PER_MINUTE": "1000000",
            "RF_CREATE_BURST": "100000",
        },
    )
    channels = [own_connection(port) for _ in range(CHANNELS)]
    try:

        async def both_up() -> bool:
            assert parent.returncode is None, (tmp_path / "cli.log").read_text()[-3000:]
            try:
                await scrape(http, metrics)
                await scrape(http, metrics + 1)
            except httpx.TransportError:
                return False
            return True

        await wait_until(both_up, timeout=60, what="both workers' metrics")
        pids = [worker_pid(await scrape(http, metrics + i)) for i in range(2)]
        assert len(set(pids)) == 2 and parent.pid not in pids

        techs = [
            Client(ch, token(account, f"tech{i}", Role.TECHNICIAN), account, f"tech{i}")
            for i, ch in enumerate(channels)
        ]
        engs = [
            Client(ch, token(account, f"eng{i}", Role.ENGINEER), account, f"eng{i}")
            for i, ch in enumerate(channels)
        ]
        readers = [stream_escalations(eng) for eng in engs]  # a snapshot first
        await wait_until(
            lambda: all(r.messages for r in readers), timeout=20, what="every stream open"
        )
        created = [(await tech.create()).id for tech in techs]

        def saw_all(reader: StreamReader) -> bool:
            return {e.handoff.id for e in of_type(reader, pb.EVENT_TYPE_CREATED)} >= set(created)

        for reader in readers:
            await reader.wait_for(saw_all, timeout=20)

        # Connections went to both workers: each served creates and holds streams, so a
        # stream on one saw the creates made through the other.
        for i in range(2):
            text = await scrape(http, metrics + i)
            assert counted(text, "resolutionflow_rpcs_total", method="CreateHandoff") > 0, i
            assert counted(text, "resolutionflow_open_streams") > 0, i
        for reader in readers:
            sequences = reader.sequences
            assert sequences == sorted(set(sequences))

        # A worker that dies after serving is restarted with its index (and its port).
        os.kill(pids[1], signal.SIGKILL)

        async def replaced() -> bool:
            try:
                return worker_pid(await scrape(http, metrics + 1)) not in pids
            except httpx.TransportError:
                return False

        await wait_until(replaced, timeout=60, what="worker 1 restarted")

        # SIGTERM on the parent: every worker ends its streams resumably, exit 0.
        assert await within(40, stop_cli(parent), "the parent to exit") == 0
        for reader in readers:
            await reader.wait_done()
            if reader.error is None:
                continue  # its worker was the one killed above: the stream broke then
            assert reader.error.code() in (grpc.StatusCode.UNAVAILABLE,)
        stopped = [r for r in readers if r.error and "after_sequence=" in (r.error.details() or "")]
        assert stopped, "no stream ended with a resumable position"
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        await asyncio.gather(*(ch.close(None) for ch in channels))
        if parent.returncode is None:
            await stop_cli(parent)


@pytest.mark.parametrize("command", ["server", "serve"])
async def test_workers_need_postgresql(database_url: str, tmp_path: Path, command: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the SQLite refusal")
    proc = await start_cli(
        tmp_path,
        *(command, "--workers", "2", "--grpc-addr", f"127.0.0.1:{free_port()}"),
        *("--database-url", database_url),
    )
    assert await within(30, proc.wait(), "the refusal") == 2
    log = (tmp_path / "cli.log").read_text()
    assert "--workers 2 needs PostgreSQL" in log


async def test_a_busy_port_stops_workers_from_starting(database_url: str, tmp_path: Path) -> None:
    """The port check of N = 1 holds for N > 1: never join another program's port."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        proc = await start_cli(
            tmp_path,
            *("server", "--workers", "2", "--grpc-addr", f"127.0.0.1:{port}"),
            *("--database-url", "postgresql+asyncpg://nobody@127.0.0.1:1/none"),
        )
        assert await within(30, proc.wait(), "the start-up error") == 1
    assert "cannot listen on" in (tmp_path / "cli.log").read_text()


async def test_gateway_workers_serve_on_one_port_and_stop(
    tmp_path: Path, http: httpx.AsyncClient, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("no database involved: once is enough")
    port = free_port()
    parent = await start_cli(
        tmp_path,
        *("gateway", "--workers", "2", "--http-addr", f"127.0.0.1:{port}"),
        *("--upstream", f"127.0.0.1:{free_port()}"),
    )
    try:

        async def listening() -> bool:
            assert parent.returncode is None, (tmp_path / "cli.log").read_text()[-3000:]
            return "2 workers serving" in (tmp_path / "cli.log").read_text()

        await wait_until(listening, timeout=60, what="both gateway workers")
        for _ in range(4):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as fresh:
                assert (await fresh.get("/livez")).status_code == 200
        children_file = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
        children = (await asyncio.to_thread(children_file.read_text)).split()
        assert len(children) == 2
        assert await within(40, stop_cli(parent), "the parent to exit") == 0
    finally:
        if parent.returncode is None:
            await stop_cli(parent)


async def test_serve_workers_share_both_ports(
    pg_url: str, tmp_path: Path, account: str, http: httpx.AsyncClient
) -> None:
    grpc_port, http_port = free_port(), free_port()
    parent = await start_cli(
        tmp_path,
        *("serve", "--workers", "2", "--grpc-addr", f"127.0.0.1:{grpc_port}"),
        *("--http-addr", f"127.0.0.1:{http_port}", "--database-url", pg_url),
        env={"RF_SHUTDOWN_GRACE_SECONDS": "2"},
    )
    try:

        async def serving() -> bool:
            assert parent.returncode is None, (tmp_path / "cli.log").read_text()[-3000:]
            return "2 workers serving" in (tmp_path / "cli.log").read_text()

        await wait_until(serving, timeout=60, what="both serve workers")
        bearer = token(account, "tech", Role.TECHNICIAN)
        for _ in range(4):  # a connection of its own each: whichever worker takes it
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as fresh:
                reply = await fresh.get(
                    "/v1/handoffs", headers={"Authorization": f"Bearer {bearer}"}
                )
                assert reply.status_code == 200, reply.text
        assert await within(40, stop_cli(parent), "the parent to exit") == 0
    finally:
        if parent.returncode is None:
            await stop_cli(parent)


async def test_workers_end_when_their_parent_is_killed(tmp_path: Path, database_url: str) -> None:
    """No orphan keeps serving on the port after a SIGKILL of the parent."""
    if not database_url.startswith("sqlite"):
        pytest.skip("no database involved: once is enough")
    parent = await start_cli(
        tmp_path,
        *("gateway", "--workers", "2", "--http-addr", f"127.0.0.1:{free_port()}"),
        *("--upstream", f"127.0.0.1:{free_port()}"),
    )
    children_file = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")

    async def serving() -> bool:
        assert parent.returncode is None, (tmp_path / "cli.log").read_text()[-3000:]
        return "2 workers serving" in (tmp_path / "cli.log").read_text()

    await wait_until(serving, timeout=60, what="both gateway workers")
    children = [int(c) for c in (await asyncio.to_thread(children_file.read_text)).split()]
    assert len(children) == 2
    parent.kill()
    await parent.wait()

    def running(pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat[stat.rindex(")") + 2] != "Z"  # a zombie has exited (no reaper here)

    def gone() -> bool:
        return not any(running(pid) for pid in children)

    await wait_until(gone, timeout=30, what="the orphaned workers to exit")
