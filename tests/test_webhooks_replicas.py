"""Webhooks across server processes: a SIGKILL mid-attempt, and two replicas sharing work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from resolutionflow.v1 import webhook_pb2, webhook_pb2_grpc

from server.domain.types import Role
from tests.conftest import TEST_WEBHOOKS
from tests.processes import ServerProcess
from tests.support import Client, token, wait_until
from tests.webhook_receiver import Receiver

pb = webhook_pb2
ENV = {f"RF_{k.upper()}": str(v).lower() for k, v in TEST_WEBHOOKS.items()} | {
    "RF_WEBHOOK_LEASE_SECONDS": "2",
    "RF_WEBHOOK_TIMEOUT_SECONDS": "1.5",
}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def subscribe(admin: Client, receiver: Receiver) -> str:
    reply: Any = await webhook_pb2_grpc.WebhookServiceStub(admin.channel).CreateWebhookEndpoint(
        pb.CreateWebhookEndpointRequest(url=receiver.url, event_types=["escalation.created"]),
        metadata=admin.metadata,
        timeout=30,
    )
    receiver.secret = reply.secret
    return str(reply.endpoint.id)


async def test_an_attempt_cut_by_sigkill_is_sent_again_with_the_same_id(
    database_url: str, tmp_path: Path, account: str, receiver: Receiver
) -> None:
    receiver.mode = "hang"
    first = ServerProcess(database_url, tmp_path, **ENV)
    second = ServerProcess(database_url, tmp_path, **ENV)
    await first.start()
    try:
        async with grpc.aio.insecure_channel(first.address) as ch:
            admin = Client(ch, token(account, "a", Role.ADMIN), account, "a")
            tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
            await subscribe(admin, receiver)
            await tech.create()
            await receiver.wait_for(lambda r: r.hanging >= 1)
        cut = receiver.seen[0]["webhook-id"]
        await first.kill()
        receiver.mode = "ok"
        await second.start()
        await receiver.wait_for(lambda r: len(r.received) >= 1)
        assert receiver.received[0].id == cut
        assert receiver.failures == []
    finally:
        await first.stop()
        await second.stop()


@pytest.mark.postgres_only
async def test_two_replicas_deliver_each_event_once_and_in_order(
    database_url: str, tmp_path: Path, account: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database")
    receivers = [await Receiver().start() for _ in range(4)]
    replicas = [ServerProcess(database_url, tmp_path, **ENV) for _ in range(2)]
    await asyncio.gather(*(r.start() for r in replicas))
    try:
        channels = [grpc.aio.insecure_channel(r.address) for r in replicas]
        admin = Client(channels[0], token(account, "a", Role.ADMIN), account, "a")
        endpoints = [await subscribe(admin, r) for r in receivers]
        # Creates through both replicas, so both append to the log.
        techs = [Client(ch, token(account, "t", Role.TECHNICIAN), account, "t") for ch in channels]
        for i in range(20):
            await techs[i % 2].create()
        for r in receivers:
            await r.wait_for(lambda r: len(r.received) >= 20, timeout=60)

        async def settled() -> bool:
            for endpoint_id in endpoints:
                reply: Any = await webhook_pb2_grpc.WebhookServiceStub(
                    admin.channel
                ).ListWebhookDeliveries(
                    pb.ListWebhookDeliveriesRequest(endpoint_id=endpoint_id),
                    metadata=admin.metadata,
                    timeout=30,
                )
                if any(d.status != pb.WEBHOOK_DELIVERY_STATUS_SUCCEEDED for d in reply.deliveries):
                    return False
                assert all(d.attempts == 1 for d in reply.deliveries)
            return True

        await wait_until(settled, what="deliveries recorded")
        for r in receivers:
            ids = [x.id for x in r.received]
            assert len(ids) == len(set(ids)) == 20, "an attempt was made twice"
            assert r.sequences() == sorted(r.sequences())
            assert r.failures == []
        for ch in channels:
            await ch.close(None)
    finally:
        await asyncio.gather(*(r.stop() for r in replicas))
        for r in receivers:
            await r.stop()
