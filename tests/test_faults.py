"""Faults, for real: a server SIGKILLed during a burst of creates, and a SIGTERM with
hundreds of open streams that resume on another replica."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import grpc
import pytest
from resolutionflow.v1 import handoff_pb2

from server.domain.types import Role
from tests.processes import ServerProcess
from tests.support import (
    Client,
    create_request,
    of_type,
    stream_escalations,
    token,
    wait_until,
    within,
)

pb = handoff_pb2

# Timing bounds and machine load: never beside another module of the serial group under
# pytest-xdist (`make test` runs with --dist loadgroup).
pytestmark = pytest.mark.xdist_group("serial")


async def test_sigkill_during_a_burst_of_creates(
    database_url: str, tmp_path: Path, account: str
) -> None:
    replica = ServerProcess(database_url, tmp_path)
    await replica.start()
    ok: list[str] = []  # request ids answered OK
    failed: list[str] = []  # request ids whose answer never came
    try:
        async with grpc.aio.insecure_channel(replica.address) as ch:
            tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")

            async def burst() -> None:
                while True:
                    request_id = uuid.uuid4().hex
                    try:
                        await tech.handoffs.CreateHandoff(
                            create_request(request_id=request_id), metadata=tech.metadata, timeout=5
                        )
                        ok.append(request_id)
                    except grpc.aio.AioRpcError:
                        failed.append(request_id)
                        return

            writers = [asyncio.create_task(burst()) for _ in range(8)]
            await wait_until(lambda: len(ok) >= 40, what="a burst under way")
            await replica.kill()
            await asyncio.gather(*writers)
        assert failed, "the kill interrupted calls in flight"
        await replica.start()
        async with grpc.aio.insecure_channel(replica.address) as ch:
            tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
            # A call whose answer was lost is retried with its request id: at most once.
            for request_id in failed:
                await tech.handoffs.CreateHandoff(
                    create_request(request_id=request_id), metadata=tech.metadata, timeout=10
                )
            eng = Client(ch, token(account, "e", Role.ENGINEER), account, "e")
            reader = stream_escalations(eng, after=0)
            total = len(ok) + len(failed)
            await reader.wait_for(lambda r: len(of_type(r, pb.EVENT_TYPE_CREATED)) >= total, 30)
            created = of_type(reader, pb.EVENT_TYPE_CREATED)
            assert len(created) == total
            assert len({e.handoff.id for e in created}) == total
            assert reader.sequences == list(range(1, len(reader.sequences) + 1))
            reader.cancel()
    finally:
        await replica.stop()


@pytest.mark.parametrize("streams", [500])
async def test_sigterm_with_open_streams_resume_on_another_replica(
    database_url: str, tmp_path: Path, account: str, streams: int
) -> None:
    a = ServerProcess(database_url, tmp_path, RF_SHUTDOWN_GRACE_SECONDS="3")
    b = ServerProcess(database_url, tmp_path, RF_LOG_POLL_SECONDS="0.2")
    await a.start()
    await b.start()
    try:
        async with (
            grpc.aio.insecure_channel(a.address) as ch_a,
            grpc.aio.insecure_channel(b.address) as ch_b,
        ):
            eng_a = Client(ch_a, token(account, "e", Role.ENGINEER), account, "e")
            eng_b = Client(ch_b, token(account, "e", Role.ENGINEER), account, "e")
            tech_b = Client(ch_b, token(account, "t", Role.TECHNICIAN), account, "t")
            first = await tech_b.create()
            readers = [stream_escalations(eng_a, after=0) for _ in range(streams)]
            for r in readers:
                await r.wait_for(lambda r: any(e.handoff.id == first.id for e in r.events), 30)
            # Within its 3 s grace period (plus slack for a busy machine), and cleanly.
            exit_code = await within(
                3 + 5, a.signal_and_wait(signal.SIGTERM, timeout=20), "exit after SIGTERM"
            )
            assert exit_code == 0
            for r in readers:
                await r.wait_done(20)
                assert r.error is not None and r.error.code() == grpc.StatusCode.UNAVAILABLE
            second = await tech_b.create()
            resumed = [stream_escalations(eng_b, after=r.sequences[-1]) for r in readers]
            for before, after in zip(readers, resumed, strict=True):
                await after.wait_for(lambda r: any(e.handoff.id == second.id for e in r.events), 30)
                joined = before.sequences + after.sequences
                assert joined == list(range(1, joined[-1] + 1))  # no gap, no duplicate
                after.cancel()
    finally:
        await a.stop()
        await b.stop()
