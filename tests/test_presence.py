"""Presence: who watches the account's queue, across servers, and a killed server's
engineers dropping out within the TTL."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from resolutionflow.v1 import handoff_pb2 as pb

from server.domain.types import Role
from tests.processes import ServerProcess
from tests.support import Client, stream_escalations, token, wait_until


async def presence(client: Client) -> pb.GetPresenceResponse:
    return await client.call("handoffs", "GetPresence", pb.GetPresenceRequest())


async def names(client: Client) -> list[str]:
    return [u.name for u in (await presence(client)).engineers]


async def test_presence_follows_open_queue_streams(
    client_for: Callable[..., Client], technician: Client, account: str
) -> None:
    erin = client_for(Role.ENGINEER, "erin", name="Erin Eng")
    sam = client_for(Role.ENGINEER, "sam", name="Sam Vpn")
    assert (await presence(technician)).engineers_online == 0
    first = stream_escalations(erin)
    second = stream_escalations(erin)  # two tabs: one engineer
    third = stream_escalations(sam)
    await wait_until(lambda: sees(erin, ["Erin Eng", "Sam Vpn"]), what="both online")
    told = await presence(technician)
    assert told.engineers_online == 2 and list(told.engineers) == []  # the count only
    other = client_for(Role.ADMIN, "erin", acct=f"{account}-other")
    assert (await presence(other)).engineers_online == 0
    first.cancel()
    await wait_until(lambda: sees(sam, ["Erin Eng", "Sam Vpn"]), what="a tab left")
    second.cancel()
    await wait_until(lambda: sees(sam, ["Sam Vpn"]), what="Erin gone")
    third.cancel()
    await wait_until(lambda: sees(sam, []), what="nobody")


async def sees(client: Client, expected: list[str]) -> bool:
    return await names(client) == expected


async def test_a_killed_servers_engineers_drop_out_within_the_ttl(
    database_url: str, tmp_path: Path, account: str
) -> None:
    one = ServerProcess(database_url, tmp_path, RF_PRESENCE_TTL_SECONDS="3")
    two = ServerProcess(database_url, tmp_path, RF_PRESENCE_TTL_SECONDS="3")
    await one.start()
    await two.start()
    try:
        async with (
            grpc.aio.insecure_channel(one.address) as ch1,
            grpc.aio.insecure_channel(two.address) as ch2,
        ):
            erin = Client(ch1, token(account, "erin", Role.ENGINEER, "Erin"), account, "erin")
            sam = Client(ch2, token(account, "sam", Role.ENGINEER, "Sam"), account, "sam")
            streams = [stream_escalations(erin), stream_escalations(sam)]
            for asker in (erin, sam):
                await wait_until(functools.partial(sees, asker, ["Erin", "Sam"]), what="both")
            await one.kill()
            killed = time.monotonic()
            await wait_until(lambda: sees(sam, ["Sam"]), timeout=15, what="Erin gone")
            assert time.monotonic() - killed < 3 + 2  # the TTL, and a refresh's slack
            for s in streams:
                s.cancel()
    finally:
        await one.stop()
        await two.stop()
