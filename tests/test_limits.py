"""Limits: open streams per user, creates per user — RESOURCE_EXHAUSTED / 429 with a hint."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from resolutionflow.v1 import handoff_pb2

from server.domain.types import Role
from server.runtime import ServerRuntime
from server.settings import Settings
from tests.gateway_support import bearer, handoff_body, running_gateway
from tests.support import Client, stream_escalations, token, wait_until

pb = handoff_pb2


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[ServerRuntime]:
    runtime = ServerRuntime(
        settings.model_copy(
            update={"max_streams_per_user": 2, "create_burst": 3, "creates_per_minute": 6}
        )
    )
    await runtime.start()
    yield runtime
    await runtime.stop(0)


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    trailers: dict[str, bytes] = dict(error.trailing_metadata() or ())  # type: ignore[arg-type]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError("no RetryInfo")


async def test_streams_per_user(limited: ServerRuntime, account: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited.port}") as ch:
        eng = Client(ch, token(account, "e", Role.ENGINEER), account, "e")
        other = Client(ch, token(account, "f", Role.ENGINEER), account, "f")
        open_ = [stream_escalations(eng) for _ in range(2)]
        for r in open_:
            await r.wait_for(lambda r: len(r.events) >= 1)
        refused = stream_escalations(eng)
        await refused.wait_done()
        assert refused.error is not None
        assert refused.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.messages == []  # refused before the snapshot
        assert retry_delay(refused.error) > 0
        theirs = stream_escalations(other)  # another user is not affected
        await theirs.wait_for(lambda r: len(r.events) >= 1)
        open_[0].cancel()
        feed = limited.hub.feeds[account]
        await wait_until(lambda: len(feed.subscribers) == 2, what="the stream to close")
        again = stream_escalations(eng)
        await again.wait_for(lambda r: len(r.events) >= 1)
        for r in (open_[1], theirs, again):
            r.cancel()


async def test_creates_per_user(limited: ServerRuntime, account: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited.port}") as ch:
        tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
        for _ in range(3):
            await tech.create()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await tech.create()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 0 < retry_delay(caught.value) <= 10
        other = Client(ch, token(account, "u", Role.TECHNICIAN), account, "u")
        await other.create()
        listed = await tech.call("handoffs", "ListHandoffs", pb.ListHandoffsRequest())
        assert len(listed.handoffs) == 3  # nothing half-written by the refused call
        async with (
            running_gateway(f"127.0.0.1:{limited.port}") as gw,
            httpx.AsyncClient(base_url=gw.url, timeout=10) as http,
        ):
            headers = bearer(account, Role.TECHNICIAN, "t")
            response = await http.post("/v1/handoffs", json=handoff_body(), headers=headers)
        assert response.status_code == 429
        assert response.json()["code"] == "RESOURCE_EXHAUSTED"
        assert int(response.headers["retry-after"]) >= 1
