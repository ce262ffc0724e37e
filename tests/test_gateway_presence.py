"""Presence through the gateway: browsers of many engineers share one upstream queue
stream per account, and each engineer is still present, as the server verified from that
browser's own token (ReportPresence), on SQLite and PostgreSQL.

Real server (the session's, and a process of its own for the SIGKILL), real uvicorn
gateway (in this loop, or the ``gateway`` command as a process), real HTTP readers.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY
from resolutionflow.v1 import escalation_pb2, handoff_pb2_grpc
from resolutionflow.v1 import handoff_pb2 as pb

from gateway.presence import PresenceReporter
from gateway.serve import RunningGateway
from server.domain.types import Role
from server.runtime import ServerRuntime
from tests.gateway_support import SSEReader, bearer, running_gateway
from tests.processes import ServerProcess, gateway_args, http_serving, start_cli, stop_cli
from tests.support import Client, free_port, token, wait_until


def queue_streams() -> float:
    """The server's own gauge of open StreamEscalations calls (this process's server)."""
    value = REGISTRY.get_sample_value(
        "resolutionflow_open_streams", {"method": "StreamEscalations"}
    )
    return value or 0.0


async def online(http: httpx.AsyncClient, account: str) -> list[str]:
    """Who the server says watches the account's queue, asked as one of its admins."""
    reply = await http.get("/v1/presence", headers=bearer(account, Role.ADMIN, "asker"))
    assert reply.status_code == 200, reply.text
    return sorted(u["name"] for u in reply.json().get("engineers", []))


async def test_browsers_of_an_account_share_one_stream_and_each_is_present(
    gateway: RunningGateway, http: httpx.AsyncClient, server: ServerRuntime
) -> None:
    """30 browsers of 30 engineers over 3 accounts: 3 server streams; presence names each
    engineer of their own account only, and drops one within seconds of their leaving."""
    accounts = [f"acct-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    readers: dict[tuple[str, str], SSEReader] = {}
    for account in accounts:
        for n in range(10):
            name = f"{account[-4:]} Eng {n:02d}"
            headers = bearer(account, Role.ENGINEER, f"e{n}", name)
            readers[(account, name)] = SSEReader(http, "/v1/escalations/stream", headers)
    try:
        for reader in readers.values():
            await reader.wait_for(lambda r: bool(r.of("snapshot")))
        # Every browser's own call has handed over to its account's shared one: one stream
        # per account on the server (counted per account: the process-wide gauge also
        # moves with what earlier tests' streams are still closing).
        await wait_until(
            lambda: streams_of(server, accounts) == [1, 1, 1], timeout=10, what="3 streams"
        )
        feeds = set(gateway.app.state.streams.fanout.feeds)
        assert feeds >= {f"escalations/{a}" for a in accounts}
        assert not any(f.startswith(tuple(f"escalations/{a}/" for a in accounts)) for f in feeds)
        for account in accounts:
            expected = sorted(n for a, n in readers if a == account)
            await wait_until(
                functools.partial(_sees, http, account, expected),
                timeout=5,
                what=f"{account}'s ten engineers",
            )
        # One engineer closes the tab: gone within seconds, not after the TTL; the
        # others stay, and the account keeps its one stream.
        leaver = (accounts[0], f"{accounts[0][-4:]} Eng 03")
        await readers.pop(leaver).close()
        left = time.monotonic()
        rest = sorted(n for a, n in readers if a == accounts[0])
        await wait_until(lambda: _sees(http, accounts[0], rest), timeout=5, what="one left")
        assert time.monotonic() - left < server.settings.presence_ttl_seconds
        assert streams_of(server, accounts) == [1, 1, 1]
    finally:
        for reader in readers.values():
            await reader.close()
    for account in accounts:
        await wait_until(functools.partial(_sees, http, account, []), timeout=5)
    await wait_until(lambda: streams_of(server, accounts) == [0, 0, 0], what="streams closed")


def streams_of(server: ServerRuntime, accounts: list[str]) -> list[int]:
    """The server's open streams of each account."""
    feeds = [server.hub.feeds.get(a) for a in accounts]
    return [len(f.subscribers) if f is not None else 0 for f in feeds]


async def _sees(http: httpx.AsyncClient, account: str, expected: list[str]) -> bool:
    return await online(http, account) == expected


async def test_a_direct_queue_stream_still_counts_beside_the_gateways(
    http: httpx.AsyncClient,
    client_for: Callable[..., Client],
    account: str,
) -> None:
    """A gRPC client's own stream makes its engineer present, as before; the gateway's
    shared stream (opened with one browser's token) does not stand for that engineer."""
    erin = SSEReader(
        http, "/v1/escalations/stream", bearer(account, Role.ENGINEER, "erin", "Erin Eng")
    )
    sam = client_for(Role.ENGINEER, "sam", name="Sam Vpn")
    stream = sam.escalations.StreamEscalations(
        escalation_pb2.StreamEscalationsRequest(), metadata=sam.metadata
    )
    try:
        await erin.wait_for(lambda r: bool(r.of("snapshot")))
        await wait_until(lambda: _sees(http, account, ["Erin Eng", "Sam Vpn"]), timeout=5)
        await erin.close()
        await wait_until(lambda: _sees(http, account, ["Sam Vpn"]), timeout=5, what="Erin left")
    finally:
        stream.cancel()
        await erin.close()
    await wait_until(lambda: _sees(http, account, []), timeout=5, what="nobody")


async def report(
    client: Client, reporter: str, groups: dict[str, list[str]]
) -> pb.ReportPresenceResponse:
    request = pb.ReportPresenceRequest(
        reporter_id=reporter,
        accounts=[pb.PresenceGroup(account_id=a, tokens=t) for a, t in groups.items()],
    )
    reply: pb.ReportPresenceResponse = await client.call("handoffs", "ReportPresence", request)
    return reply


async def names(client: Client) -> list[str]:
    reply = await client.call("handoffs", "GetPresence", pb.GetPresenceRequest())
    return sorted(u.name for u in reply.engineers)


async def test_each_reported_token_is_verified_on_its_own(
    client_for: Callable[..., Client], account: str
) -> None:
    """The reporter vouches for nobody: an expired token, a forged one, another account's
    and a technician's record nothing, and are named as refused."""
    other = f"{account}-other"
    reporter = uuid.uuid4().hex
    erin = token(account, "erin", Role.ENGINEER, "Erin Eng")
    edge = client_for(Role.ENGINEER, "erin", name="Erin Eng")
    admin = client_for(Role.ADMIN, "asker")
    elsewhere = client_for(Role.ADMIN, "asker", acct=other)
    reply = await report(
        edge,
        reporter,
        {
            account: [
                erin,
                token(account, "old", Role.ENGINEER, "Old Token", ttl=-60),
                erin[:-4] + "AAAA",
                token(other, "bob", Role.ENGINEER, "Bob Other"),
                token(account, "tina", Role.TECHNICIAN, "Tina Tech"),
            ]
        },
    )
    assert reply.accepted == 1
    assert [(r.index, r.reason) for r in reply.refused] == [
        (1, "token expired"),
        (2, "invalid token"),
        (3, "another account"),
        (4, "not an engineer or admin"),
    ]
    assert 0 < reply.report_every_seconds <= 10
    assert await names(admin) == ["Erin Eng"]
    assert await names(elsewhere) == []  # Bob's token did not make him present anywhere
    # A report replaces the reporter's last one for the accounts it names.
    await report(edge, reporter, {account: []})
    assert await names(admin) == []


async def test_only_staff_may_report_and_reports_are_bounded(
    client_for: Callable[..., Client], account: str
) -> None:
    tina = client_for(Role.TECHNICIAN, "tina")
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await report(tina, uuid.uuid4().hex, {account: []})
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    erin = client_for(Role.ENGINEER, "erin")
    for bad in ("", "x" * 49, "edge:1", "a b"):
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await report(erin, bad, {account: []})
        assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT, bad


async def test_a_killed_gateways_engineers_drop_out_within_the_ttl(
    database_url: str, tmp_path: Path
) -> None:
    account = f"acct-{uuid.uuid4().hex[:10]}"
    upstream = ServerProcess(database_url, tmp_path, RF_PRESENCE_TTL_SECONDS="3")
    await upstream.start()
    port = free_port()
    gateway = await start_cli(tmp_path, *gateway_args(port, int(upstream.address.split(":")[1])))
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
            grpc.aio.insecure_channel(upstream.address) as channel,
        ):
            await wait_until(lambda: http_serving(http, gateway), timeout=30, what="gateway up")
            asker = Client(channel, token(account, "asker", Role.ADMIN, "Asker"), account, "a")
            erin = SSEReader(
                http, "/v1/escalations/stream", bearer(account, Role.ENGINEER, "erin", "Erin")
            )
            try:
                await erin.wait_for(lambda r: bool(r.of("snapshot")))
                await wait_until(lambda: _named(asker, ["Erin"]), timeout=5, what="Erin")
                gateway.kill()
                killed = time.monotonic()
                await wait_until(lambda: _named(asker, []), timeout=15, what="Erin gone")
                assert time.monotonic() - killed < 3 + 2  # the TTL, and a refresh's slack
            finally:
                await erin.close()
    finally:
        await stop_cli(gateway)
        await upstream.stop()


async def _named(client: Client, expected: list[str]) -> bool:
    return await names(client) == expected


async def test_a_stopped_gateway_reports_its_engineers_gone_at_once(
    server: ServerRuntime, client_for: Callable[..., Client], account: str
) -> None:
    admin = client_for(Role.ADMIN, "asker")
    async with (
        running_gateway(f"127.0.0.1:{server.port}") as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
    ):
        erin = SSEReader(
            http, "/v1/escalations/stream", bearer(account, Role.ENGINEER, "erin", "Erin")
        )
        await erin.wait_for(lambda r: bool(r.of("snapshot")))
        await wait_until(lambda: _named(admin, ["Erin"]), timeout=5)
        try:
            await gateway.stop()
        finally:
            await erin.close()
    stopped = time.monotonic()
    await wait_until(lambda: _named(admin, []), timeout=15, what="Erin gone")
    assert time.monotonic() - stopped < server.settings.presence_ttl_seconds


class CountingStub:
    """The real HandoffService stub, counting the ReportPresence calls and their sizes."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = handoff_pb2_grpc.HandoffServiceStub(channel)
        self.calls: list[list[int]] = []

    def ReportPresence(self, request: pb.ReportPresenceRequest, **kwargs: object) -> object:
        self.calls.append([len(g.tokens) for g in request.accounts])
        return self.stub.ReportPresence(request, **kwargs)


async def test_a_report_goes_in_calls_of_whole_accounts(
    channel: grpc.aio.Channel, client_for: Callable[..., Client], account: str
) -> None:
    stub = CountingStub(channel)
    # A debounce longer than the test: only the reports made here are sent.
    reporter = PresenceReporter(lambda: stub, chunk_tokens=3, debounce_seconds=60)
    accounts = [f"{account}-{n}" for n in range(3)]
    until = time.time() + 3600
    added = {
        a: [
            reporter.add(a, f"Bearer {token(a, u, Role.ENGINEER, f'{a[-1]} {u}')}", until)
            for u in ("ann", "bob")
        ]
        for a in accounts
    }
    try:
        assert await reporter.report(accounts)
        # Two tokens per account, at most three per call: one account per call, never half.
        assert stub.calls == [[2], [2], [2]]
        for a in accounts:
            asker = client_for(Role.ADMIN, "asker", acct=a)
            assert await names(asker) == [f"{a[-1]} ann", f"{a[-1]} bob"]
        for t in added[accounts[0]]:
            reporter.remove(accounts[0], t)
        assert await reporter.report([accounts[0]])
        assert stub.calls[-1] == [0]  # listed empty, once
        assert accounts[0] not in reporter.watching
        assert await names(client_for(Role.ADMIN, "asker", acct=accounts[0])) == []
    finally:
        await reporter.close()
    # Stopped cleanly: every account it served is reported empty.
    for a in accounts[1:]:
        assert await names(client_for(Role.ADMIN, "asker", acct=a)) == []


async def test_a_report_naming_no_account_keeps_rows_alive_and_a_lapse_asks_for_all(
    database_url: str, tmp_path: Path
) -> None:
    """Reported rows live on the reporter's one liveness row: a report naming no account
    keeps them past the TTL; once it lapses they are gone and the next report is told to
    resync (report every account again)."""
    account = f"acct-{uuid.uuid4().hex[:10]}"
    ttl = 2.0
    server = ServerProcess(database_url, tmp_path, RF_PRESENCE_TTL_SECONDS=str(ttl))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            erin = token(account, "erin", Role.ENGINEER, "Erin")
            edge = Client(channel, erin, account, "erin")
            asker = Client(channel, token(account, "asker", Role.ADMIN, "Asker"), account, "a")
            reporter = uuid.uuid4().hex
            assert (await report(edge, reporter, {account: [erin]})).resync  # new reporter
            assert await names(asker) == ["Erin"]
            held_until = time.monotonic() + 2.5 * ttl
            while time.monotonic() < held_until:  # keep-alives alone, past the TTL twice
                assert not (await report(edge, reporter, {})).resync
                assert await names(asker) == ["Erin"]
                await asyncio.sleep(ttl / 3)  # a reporter's pace, not a wait for anything
            await wait_until(lambda: _named(asker, []), timeout=ttl * 3, what="lapsed")
            assert (await report(edge, reporter, {})).resync
            await report(edge, reporter, {account: [erin]})
            assert await names(asker) == ["Erin"]
    finally:
        await server.stop()
