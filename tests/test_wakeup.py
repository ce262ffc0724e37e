"""Wake-up transports between replicas (RF_WAKEUP): the log stays the truth.

Two server runtimes on one PostgreSQL database, per transport: an event committed
through one reaches a stream on the other, gap-free. With ``nats`` nothing is added to
the write transaction, and a NATS server that goes away and comes back costs latency
(the log check delivers meanwhile), never an event.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from pydantic import ValidationError
from resolutionflow.v1 import handoff_pb2

from server.domain.types import Role
from server.runtime import ServerRuntime
from server.settings import Settings
from server.streaming.nats_wakeup import account_of, subject
from server.streaming.pg_listener import parse
from tests.processes import ServerProcess
from tests.support import (
    Client,
    StreamReader,
    free_port,
    of_type,
    stream_escalations,
    token,
    wait_until,
)
from tests.test_gateway_crash import Browser, start_gateway
from tests.test_idle import statements

pb = handoff_pb2
NATS_SERVER = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")


class NatsServer:
    """A nats-server of the test's own, on a free port, that the test can stop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if NATS_SERVER is None:
            pytest.skip("nats-server is not installed (.ci/run installs it)")
        self.process = await asyncio.create_subprocess_exec(
            NATS_SERVER,
            *("-a", "127.0.0.1", "-p", str(self.port)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        def accepting() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        await wait_until(accepting, what="nats-server accepting")

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 10)
            self.process = None


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    server = NatsServer()
    yield server
    await server.stop()


@pytest.fixture
def postgres_settings(settings: Settings) -> Settings:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("wake-ups between replicas need a shared PostgreSQL database")
    return settings


@asynccontextmanager
async def replicas(settings: Settings, **update: Any) -> AsyncIterator[list[ServerRuntime]]:
    started: list[ServerRuntime] = []
    try:
        for _ in range(2):
            rt = ServerRuntime(settings.model_copy(update=update))
            await rt.start()
            started.append(rt)
        yield started
    finally:
        for rt in started:
            await rt.stop(0)


def gap_free(reader: StreamReader) -> bool:
    sequences = reader.sequences
    return sequences == list(range(1, len(sequences) + 1))


async def create_and_see(
    tech: Client, reader: StreamReader, n: int, timeout: float = 15
) -> list[str]:
    """n creates through one replica (some at once); all must reach the reader."""
    ids = [(await tech.create()).id for _ in range(n // 2)]
    ids += [h.id for h in await asyncio.gather(*(tech.create() for _ in range(n - n // 2)))]

    def arrived() -> bool:
        return set(ids) <= {e.handoff.id for e in of_type(reader, pb.EVENT_TYPE_CREATED)}

    await reader.wait_for(lambda _r: arrived(), timeout=timeout)
    return ids


@asynccontextmanager
async def clients(
    a: ServerRuntime, b: ServerRuntime, account: str
) -> AsyncIterator[tuple[Client, StreamReader]]:
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as ch_a,
        grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as ch_b,
    ):
        tech = Client(ch_a, token(account, "tech", Role.TECHNICIAN), account, "tech")
        eng = Client(ch_b, token(account, "eng", Role.ENGINEER), account, "eng")
        reader = stream_escalations(eng, after=0)
        # Live on b before anything is committed, so events come by the wake-up (or the
        # log check), not by the stream's own first read of the log.
        await wait_until(
            lambda: account in b.hub.feeds and b.hub.feeds[account].ready.is_set(),
            what="the stream's feed on b",
        )
        try:
            yield tech, reader
        finally:
            reader.cancel()


@pytest.mark.parametrize("wakeup", ["postgres", "nats", "none"])
async def test_a_commit_on_one_replica_reaches_a_stream_on_the_other(
    postgres_settings: Settings,
    nats_server: NatsServer,
    account: str,
    wakeup: str,
) -> None:
    await nats_server.start()
    # With a wake-up transport the log check is out of the way, so delivery must come
    # from the wake-up; with none, the log check is all there is.
    poll = 0.2 if wakeup == "none" else 3600
    async with (
        replicas(
            postgres_settings, wakeup=wakeup, nats_url=nats_server.url, log_poll_seconds=poll
        ) as (a, b),
        clients(a, b, account) as (tech, reader),
    ):
        if wakeup == "nats":
            await wait_until(lambda: a.nats and b.nats and a.nats.connected and b.nats.connected)
        await create_and_see(tech, reader, 10)
        assert gap_free(reader)


@pytest.mark.parametrize(("wakeup", "notifies"), [("postgres", True), ("nats", False)])
async def test_only_the_postgres_wakeup_notifies_inside_the_write(
    postgres_settings: Settings,
    nats_server: NatsServer,
    account: str,
    wakeup: str,
    notifies: bool,
) -> None:
    await nats_server.start()
    rt = ServerRuntime(
        postgres_settings.model_copy(update={"wakeup": wakeup, "nats_url": nats_server.url})
    )
    await rt.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{rt.port}") as ch:
            tech = Client(ch, token(account, "tech", Role.TECHNICIAN), account, "tech")
            with statements(rt.db) as seen:
                await tech.create()
        assert any("pg_notify" in s for s in seen) is notifies
    finally:
        await rt.stop(0)


async def test_nats_down_then_back_loses_nothing(
    postgres_settings: Settings, nats_server: NatsServer, account: str
) -> None:
    await nats_server.start()
    async with (
        replicas(
            postgres_settings, wakeup="nats", nats_url=nats_server.url, log_poll_seconds=0.3
        ) as (a, b),
        clients(a, b, account) as (tech, reader),
    ):
        na, nb = a.nats, b.nats
        assert na is not None and nb is not None
        await wait_until(lambda: na.connected and nb.connected, what="both replicas on NATS")
        await create_and_see(tech, reader, 4)

        await nats_server.stop()
        await wait_until(lambda: not na.connected and not nb.connected, what="NATS gone")
        # The bus is gone: the log check (0.3 s) carries every event meanwhile.
        await create_and_see(tech, reader, 6)

        before_a, before_b = na.connections, nb.connections
        await nats_server.start()
        await wait_until(
            lambda: na.connected and nb.connected, timeout=30, what="both back on NATS"
        )
        await wait_until(
            lambda: na.connections > before_a and nb.connections > before_b,
            what="each reconnect runs a log check",
        )
        await create_and_see(tech, reader, 4)
        assert gap_free(reader)


@pytest.mark.parametrize("account_id", ["acct-1_A", "acme.corp", "a b*>~", "ünïcode/ß"])
def test_every_account_id_has_a_subject_of_its_own(account_id: str) -> None:
    name = subject(account_id)
    token_part = name.removeprefix("resolutionflow.log.")
    assert "." not in token_part and " " not in token_part
    assert "*" not in token_part and ">" not in token_part
    assert account_of(name) == account_id


async def test_a_replica_does_not_read_the_log_back_for_its_own_notified_commits(
    postgres_settings: Settings, account: str
) -> None:
    # Its own NOTIFY reaches its LISTEN connection too; the commit was handed to the feed
    # already, so a read would be a query per commit for nothing.
    rt = ServerRuntime(postgres_settings.model_copy(update={"log_poll_seconds": 3600}))
    await rt.start()
    sub, feed = rt.hub.subscribe(account, "eng", 0, lambda e: True)
    sub.lagging = False  # live from sequence 0: every event is pushed to its buffer
    try:
        await feed.ready.wait()
        await wait_until(lambda: rt.listener is not None and rt.listener.backend_pid)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{rt.port}") as ch:
            tech = Client(ch, token(account, "tech", Role.TECHNICIAN), account, "tech")
            with statements(rt.db) as seen:
                for n in range(1, 6):
                    await tech.create()
                    # CREATED, then ASSESSMENT_READY: one at a time, so no gap is possible.
                    await wait_until(lambda: feed.last_seen == 2 * n)  # noqa: B023
                listener = rt.listener
                assert listener is not None
                await wait_until(lambda: listener.notifications >= 10, what="all 10 NOTIFYs")
        assert [s for s, _ in sub.buffer] == list(range(1, 11))
        assert not feed.wake.is_set()
        assert not [s for s in seen if "FROM events" in s]
    finally:
        rt.hub.unsubscribe(sub)
        await rt.stop(0)


@pytest.mark.parametrize(
    ("payload", "parsed"),
    [("acct-1 42", ("acct-1", 42)), ("a b 7", ("a b", 7)), ("acct-1", ("acct-1", None))],
)
def test_notification_payloads(payload: str, parsed: tuple[str, int | None]) -> None:
    assert parse(payload) == parsed


async def test_replicas_start_while_nats_is_down_and_join_it_later(
    postgres_settings: Settings, nats_server: NatsServer, account: str
) -> None:
    async with (
        replicas(
            postgres_settings, wakeup="nats", nats_url=nats_server.url, log_poll_seconds=0.3
        ) as (a, b),
        clients(a, b, account) as (tech, reader),
    ):
        na, nb = a.nats, b.nats
        assert na is not None and nb is not None
        assert not na.connected and not nb.connected
        await create_and_see(tech, reader, 4)  # through the log check alone
        await nats_server.start()
        await wait_until(lambda: na.connected and nb.connected, timeout=30, what="both join NATS")
        await create_and_see(tech, reader, 4)
        assert gap_free(reader)


async def replica_processes(
    settings: Settings, nats: NatsServer, tmp_path: Path, wakeup: str
) -> tuple[ServerProcess, ServerProcess]:
    """Two server processes (not started) on one database, waking each other by ``wakeup``."""
    await nats.start()
    env = {"RF_WAKEUP": wakeup, "RF_NATS_URL": nats.url, "RF_LOG_POLL_SECONDS": "0.3"}
    return (
        ServerProcess(settings.database_url, tmp_path, **env),
        ServerProcess(settings.database_url, tmp_path, **env),
    )


@pytest.mark.parametrize("wakeup", ["postgres", "nats", "none"])
async def test_sigkilled_reader_replica_resumes_with_nothing_lost_or_repeated(
    postgres_settings: Settings,
    nats_server: NatsServer,
    account: str,
    tmp_path: Path,
    wakeup: str,
) -> None:
    """Server processes: writes go to a; b, holding the stream, is SIGKILLed mid-burst,
    restarted, and the stream resumes from its last sequence there."""
    a, b = await replica_processes(postgres_settings, nats_server, tmp_path, wakeup)
    try:
        await a.start()
        await b.start()
        async with (
            grpc.aio.insecure_channel(a.address) as ch_a,
            grpc.aio.insecure_channel(b.address) as ch_b,
        ):
            tech = Client(ch_a, token(account, "tech", Role.TECHNICIAN), account, "tech")
            eng = Client(ch_b, token(account, "eng", Role.ENGINEER), account, "eng")
            reader = stream_escalations(eng, after=0)
            await create_and_see(tech, reader, 4)
            burst = asyncio.gather(*(tech.create() for _ in range(8)))
            await b.kill()
            await reader.wait_done()
            created = [h.id for h in await burst]
            seen = reader.sequences
            await b.start()
            async with grpc.aio.insecure_channel(b.address) as ch_b2:
                eng2 = Client(ch_b2, token(account, "eng", Role.ENGINEER), account, "eng")
                resumed = stream_escalations(eng2, after=seen[-1])
                created += await create_and_see(tech, resumed, 4)

                def all_created() -> bool:
                    ids = {e.handoff.id for e in of_type(reader, pb.EVENT_TYPE_CREATED)}
                    ids |= {e.handoff.id for e in of_type(resumed, pb.EVENT_TYPE_CREATED)}
                    return set(created) <= ids

                await resumed.wait_for(lambda _r: all_created())
                resumed.cancel()
            together = seen + resumed.sequences
            assert together == list(range(1, len(together) + 1))
    finally:
        await a.stop()
        await b.stop()


async def test_sqlite_wakes_in_process_whatever_rf_wakeup_says(tmp_path: Path) -> None:
    for wakeup in ("postgres", "nats", "none"):
        rt = ServerRuntime(
            Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'rf.db'}", wakeup=wakeup)
        )
        assert rt.wakeup == "local"
        assert rt.listener is None and rt.nats is None
        assert rt.db.pg_notify is False
        await rt.db.dispose()


def test_rf_wakeup_accepts_only_the_three_transports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RF_WAKEUP", "nats")
    assert Settings().wakeup == "nats"
    monkeypatch.setenv("RF_WAKEUP", "redis")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("wakeup", ["postgres", "nats", "none"])
async def test_two_replicas_and_a_gateway_lose_nothing_across_a_sigkill(
    postgres_settings: Settings,
    nats_server: NatsServer,
    account: str,
    tmp_path: Path,
    wakeup: str,
) -> None:
    """Writes through both replicas; browsers behind a gateway whose upstream replica is
    SIGKILLed mid-burst and restarted; a gRPC stream on the other replica. Every reader
    gets every escalation once, in order, with no sequence skipped."""
    a, b = await replica_processes(postgres_settings, nats_server, tmp_path, wakeup)
    port = free_port()
    gateway = None
    browsers: list[Browser] = []
    try:
        await a.start()
        await b.start()
        gateway = await start_gateway(port, int(b.address.rsplit(":", 1)[1]))
        headers = {"Authorization": f"Bearer {token(account, 'erin', Role.ENGINEER)}"}
        async with (
            grpc.aio.insecure_channel(a.address) as ch_a,
            grpc.aio.insecure_channel(b.address) as ch_b,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(10, read=None)
            ) as http,
        ):
            via_a = Client(ch_a, token(account, "tech", Role.TECHNICIAN), account, "tech")
            via_b = Client(ch_b, token(account, "tech", Role.TECHNICIAN), account, "tech")
            eng = Client(ch_a, token(account, "sam", Role.ENGINEER), account, "sam")
            reader = stream_escalations(eng, after=0)
            browsers = [Browser(http, headers) for _ in range(5)]
            await wait_until(lambda: all(x.snapshots for x in browsers), timeout=30, what="open")
            created = [h.id for h in await asyncio.gather(*(via_b.create() for _ in range(4)))]
            burst = asyncio.gather(*(via_a.create() for _ in range(8)))
            await b.kill()
            created += [h.id for h in await burst]
            await b.start()
            created += [h.id for h in await asyncio.gather(*(via_a.create() for _ in range(4)))]
            async with grpc.aio.insecure_channel(b.address) as ch_b2:
                again = Client(ch_b2, token(account, "tech", Role.TECHNICIAN), account, "tech")
                created += [(await again.create()).id for _ in range(4)]

            def everyone_has_all() -> bool:
                grpc_ids = {e.handoff.id for e in of_type(reader, pb.EVENT_TYPE_CREATED)}
                return set(created) <= grpc_ids and all(
                    set(created) <= set(x.created) for x in browsers
                )

            await wait_until(everyone_has_all, timeout=60, what="every create everywhere")
            assert gap_free(reader)
            for x in browsers:
                assert sorted(x.created) == sorted(created)  # each once
                assert len(x.created) == len(set(x.created))
                assert x.ids == list(range(x.ids[0], x.ids[0] + len(x.ids)))  # none skipped
            reader.cancel()
    finally:
        for x in browsers:
            x.task.cancel()
        await asyncio.gather(*(x.task for x in browsers), return_exceptions=True)
        if gateway is not None:
            gateway.terminate()
            await gateway.wait()
        await a.stop()
        await b.stop()
