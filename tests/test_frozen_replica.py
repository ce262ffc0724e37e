"""A replica frozen while it holds an account's counter row stalls no one for long.

SIGSTOP (a paused VM, a debugger, a network partition) leaves the replica's PostgreSQL
session idle inside its transaction with the account's counter row locked. The other
replicas must wait at most the lock bound per call (then answer UNAVAILABLE, which
clients retry), PostgreSQL must end the frozen session after the idle bound, and the log
must stay gap-free through it all.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest
from sqlalchemy.engine import make_url

from server.domain.types import Role
from server.streaming.pg_listener import asyncpg_dsn
from tests.processes import ServerProcess
from tests.support import Client, create_request, settled, token, wait_until

# Timing bounds and machine load: never beside another module of the serial group under
# pytest-xdist (`make test` runs with --dist loadgroup).
pytestmark = pytest.mark.xdist_group("serial")

LOCK_BOUND = 2.0  # the healthy replica's lock timeout
IDLE_BOUND = 4.0  # the frozen replica's idle-in-transaction timeout
SLACK = 3.0  # scheduling on a busy machine


@pytest.fixture
async def processes(
    database_url: str, tmp_path: Path
) -> AsyncIterator[Callable[..., ServerProcess]]:
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks held across replicas: PostgreSQL")
    started: list[ServerProcess] = []

    def make(**env: str) -> ServerProcess:
        process = ServerProcess(database_url, tmp_path, **env)
        started.append(process)
        return process

    yield make
    for p in started:
        if p.proc is not None and p.proc.returncode is None:
            p.proc.send_signal(signal.SIGCONT)
        await p.stop()


def technician(channel: grpc.aio.Channel, account: str) -> Client:
    return Client(channel, token(account, "tech", Role.TECHNICIAN), account, "tech")


async def test_frozen_replica_holding_the_counter_row_costs_others_at_most_the_bound(
    processes: Callable[..., ServerProcess], account: str, database_url: str
) -> None:
    frozen = processes(
        RF_PG_LOCK_TIMEOUT_SECONDS="30", RF_PG_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS=str(IDLE_BOUND)
    )
    healthy = processes(RF_PG_LOCK_TIMEOUT_SECONDS=str(LOCK_BOUND))
    await frozen.start()
    await healthy.start()
    dsn = asyncpg_dsn(make_url(database_url))
    admin = await asyncpg.connect(dsn)
    blocker = await asyncpg.connect(dsn)
    try:
        async with (
            grpc.aio.insecure_channel(frozen.address) as frozen_ch,
            grpc.aio.insecure_channel(healthy.address) as healthy_ch,
        ):
            on_healthy = technician(healthy_ch, account)
            first = [await on_healthy.create() for _ in range(2)]
            await settled(on_healthy, *(h.id for h in first))
            head = await admin.fetchval(
                "SELECT last_sequence FROM account_sequences WHERE account_id = $1", account
            )

            # Pin the frozen replica's next write right after it took the counter row: an
            # uncommitted event with the sequence it will take makes its own insert wait.
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute(
                "INSERT INTO events (account_id, sequence, type, handoff_id, occurred_at,"
                " payload) VALUES ($1, $2, 'CREATED', 'pin', now(), '{}')",
                account,
                head + 1,
            )
            request = create_request()
            on_frozen = technician(frozen_ch, account)
            frozen_call = on_frozen.handoffs.CreateHandoff(
                request, metadata=on_frozen.metadata, timeout=60
            )

            # (The event insert may follow a WITH part in its statement: matched anywhere.)
            async def frozen_waits_with_the_row() -> bool:
                return bool(
                    await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO events%'"
                    )
                )

            await wait_until(frozen_waits_with_the_row, timeout=20, what="frozen write pinned")
            assert frozen.proc is not None
            frozen.proc.send_signal(signal.SIGSTOP)
            # Its session now finishes the insert and sits idle in the transaction, holding
            # the counter row, while the process cannot say COMMIT: a frozen replica.
            await tx.rollback()

            async def idle_holder() -> bool:
                return bool(
                    await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND state = 'idle in transaction' AND query LIKE '%INSERT INTO events%'"
                    )
                )

            await wait_until(idle_holder, timeout=10, what="frozen session idle in transaction")
            frozen_at = time.monotonic()

            # The healthy replica's creates: each answers within the lock bound, UNAVAILABLE
            # while the row is held, and succeeds once PostgreSQL ended the frozen session.
            refused = 0
            created: list[str] = []
            while not created:
                started = time.monotonic()
                try:
                    created.append((await on_healthy.create()).id)
                except grpc.aio.AioRpcError as e:
                    assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                    assert "lock was not granted" in (e.details() or ""), e.details()
                    refused += 1
                assert time.monotonic() - started < LOCK_BOUND + SLACK
                assert time.monotonic() - frozen_at < IDLE_BOUND + LOCK_BOUND + SLACK
            assert refused >= 1, "the frozen replica did not hold the row"
            for _ in range(3):
                created.append((await on_healthy.create()).id)

            # Thawed, the frozen replica learns its transaction is gone: UNAVAILABLE, and
            # the client's retry with the same request_id creates the handoff once.
            frozen.proc.send_signal(signal.SIGCONT)
            with pytest.raises(grpc.aio.AioRpcError) as lost:
                await frozen_call
            assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
            retried = await on_frozen.create(request_id=request.request_id)
            await settled(on_healthy, *created, retried.id)
    finally:
        if frozen.proc is not None and frozen.proc.returncode is None:
            frozen.proc.send_signal(signal.SIGCONT)
        await blocker.close()
        sequences = [
            r["sequence"]
            for r in await admin.fetch(
                "SELECT sequence FROM events WHERE account_id = $1 ORDER BY sequence", account
            )
        ]
        last = await admin.fetchval(
            "SELECT last_sequence FROM account_sequences WHERE account_id = $1", account
        )
        await admin.close()
    # 2 + 4 + 1 handoffs, each CREATED and ASSESSMENT_READY: 1..14, no gap, no duplicate.
    assert sequences == list(range(1, 15)) == list(range(1, last + 1))
