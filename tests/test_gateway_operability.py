"""The gateway's own health endpoints and Prometheus metrics."""

from __future__ import annotations

import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway import serve
from server.domain.types import Role
from tests.gateway_support import SSEReader, bearer, handoff_body, running_gateway
from tests.support import wait_until


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (await http.get("/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_liveness_and_readiness(http: httpx.AsyncClient) -> None:
    assert (await http.get("/livez")).json() == {"status": "ALIVE"}
    ready = await http.get("/readyz")
    assert (ready.status_code, ready.json()["status"]) == (200, "SERVING")


async def test_readiness_fails_when_upstream_is_gone() -> None:
    async with (
        running_gateway("127.0.0.1:1", upstream_timeout_seconds=1) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as client,
    ):
        assert (await client.get("/livez")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503


async def test_http_metrics_follow_requests_and_streams(
    http: httpx.AsyncClient, account: str
) -> None:
    before = await scrape(http)
    headers = bearer(account, Role.TECHNICIAN)
    for _ in range(2):
        assert (
            await http.post("/v1/handoffs", json=handoff_body(), headers=headers)
        ).status_code == 201
    assert (await http.get("/v1/handoffs/not-a-uuid", headers=headers)).status_code == 400
    stream = SSEReader(http, "/v1/escalations/stream", bearer(account, Role.ENGINEER))
    await stream.wait_for(lambda r: len(r.data_events) >= 1)
    during = await scrape(http)
    route = "/v1/escalations/stream"
    gauge = "resolutionflow_gateway_open_streams"
    assert value(during, gauge, route=route) == value(before, gauge, route=route) + 1
    stream.task.cancel()

    async def closed() -> bool:
        return value(await scrape(http), gauge, route=route) == value(before, gauge, route=route)

    await wait_until(closed, timeout=5, what="the stream gauge to drop")
    after = await scrape(http)
    total = "resolutionflow_gateway_http_requests_total"

    def delta(**labels: str) -> float:
        return value(after, total, **labels) - value(before, total, **labels)

    assert delta(route="/v1/handoffs", method="POST", status="201") == 2
    assert delta(route="/v1/handoffs/{handoff_id}", method="GET", status="400") == 1


def test_listening_socket_is_tcp_so_responses_are_not_held_by_nagle() -> None:
    # asyncio turns TCP_NODELAY on only for sockets that say they are TCP (accepted ones
    # inherit the listener's protocol); without it every response waited ~40 ms for the
    # client's delayed ACK.
    sock = serve._bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
