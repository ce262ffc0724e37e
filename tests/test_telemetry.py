"""The server's Prometheus endpoint: counters move by what a scripted scenario did."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from resolutionflow.v1 import escalation_pb2, handoff_pb2

from server.domain.types import Role
from server.runtime import ServerRuntime
from server.settings import Settings
from tests.support import Client, settled, stream_escalations, token, wait_until

pb = handoff_pb2


@pytest.fixture
async def observed(settings: Settings) -> AsyncIterator[ServerRuntime]:
    runtime = ServerRuntime(settings.model_copy(update={"metrics_addr": "127.0.0.1:0"}))
    await runtime.start()
    yield runtime
    await runtime.stop(0)


async def scrape(runtime: ServerRuntime) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{runtime.metrics_port}/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_follow_a_scenario(observed: ServerRuntime, account: str) -> None:
    before = await scrape(observed)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{observed.port}") as ch:
        tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
        eng = Client(ch, token(account, "e", Role.ENGINEER), account, "e")
        reader = stream_escalations(eng)
        await reader.wait_for(lambda r: len(r.events) >= 1)
        during = await scrape(observed)
        assert value(
            during, "resolutionflow_open_streams", method="StreamEscalations"
        ) == 1 + value(before, "resolutionflow_open_streams", method="StreamEscalations")
        created = [await tech.create() for _ in range(3)]
        await settled(tech, *(h.id for h in created))
        with pytest.raises(grpc.aio.AioRpcError):
            await eng.call(
                "escalations",
                "PickUpEscalation",
                escalation_pb2.PickUpEscalationRequest(handoff_id="not-an-id"),
            )
        await reader.wait_for(lambda r: len(r.sequences) >= 6)
        reader.cancel()
        await wait_until(
            lambda: observed.hub.feeds.get(account) is None, what="stream closed on the server"
        )
    after = await scrape(observed)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("resolutionflow_rpcs_total", method="CreateHandoff", code="OK") == 3
    assert (
        delta("resolutionflow_rpcs_total", method="PickUpEscalation", code="INVALID_ARGUMENT") == 1
    )
    assert delta("resolutionflow_rpc_duration_seconds_count", method="CreateHandoff") == 3
    assert delta("resolutionflow_events_appended_total", type="CREATED") == 3
    # The registry is the process's: an assessment of an earlier test's handoff (on the
    # shared session server) may also finish in this window, so at least ours.
    assert delta("resolutionflow_events_appended_total", type="ASSESSMENT_READY") >= 3
    assert delta("resolutionflow_assessments_total", outcome="ready") >= 3
    # The snapshot and the six events went out on the one stream.
    assert delta("resolutionflow_events_delivered_total") == 7
    assert delta("resolutionflow_open_streams", method="StreamEscalations") == 0
    assert delta("resolutionflow_rpcs_total", method="StreamEscalations", code="CANCELLED") == 1
    assert delta("resolutionflow_delivery_lag_seconds_count") == 6
