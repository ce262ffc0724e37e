"""The capacity model: arithmetic of measured unit costs, and its advice."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.capacity import Costs, Load, model


def test_idle_accounts_cost_the_database_nothing_per_account() -> None:
    few = model(Load(accounts=100, escalations_per_s=0))
    many = model(Load(accounts=10_000, escalations_per_s=0))
    assert few["database_transactions_per_s"] == many["database_transactions_per_s"]
    # Per replica: log check 1/s, SLA clock 1/s, health 0.5/s, LISTEN ping 0.2/s, and the
    # other sweeps and pool pings (4.9/s measured).
    assert many["database_periodic_per_replica"] == pytest.approx(7.6)
    assert many["database_transactions_per_s"] == pytest.approx(15.2)
    # Idle CPU: heartbeats per server stream (10,000 gRPC streams and one gateway stream
    # per account, 2.3 µs-core each), the log check's full comparison per online account
    # on each replica (0.02 µs-core), and the periodic jobs' base per replica (0.026 core).
    assert many["server_cores_total"] == pytest.approx(
        20_000 * 2.3e-6 + 20_000 * 0.02e-6 + 2 * 0.026, abs=1e-3
    )


def test_events_are_written_once_and_read_once_by_every_other_replica() -> None:
    result = model(Load(accounts=1000, escalations_per_s=50, replicas=3, wakeup="none"))
    assert result["events_per_s"] == 200
    # 200 writes, 2 x 200 reads, and 7.4 periodic transactions/s per replica.
    assert result["database_transactions_per_s"] == pytest.approx(200 + 400 + 3 * 7.4)
    assert result["deliveries_per_s"] == 400


def test_the_first_limit_names_what_to_add() -> None:
    slow_notify = Costs(notify_commits_per_s=100)
    writes = model(Load(escalations_per_s=50, engineers=1, replicas=4), slow_notify)
    assert writes["busiest"] == "NOTIFY commit lock"
    assert "nats" in str(writes["add_first"])
    nats = model(Load(escalations_per_s=50, engineers=1, replicas=4, wakeup="nats"), slow_notify)
    assert nats["busiest"] != "NOTIFY commit lock"
    streams = model(
        Load(accounts=60_000, engineers=5, sse_share=0.0, replicas=1, escalations_per_s=20)
    )
    assert streams["busiest"] == "server processes"
    assert int(streams["server_replicas_needed"]) >= 2
    sse = model(Load(engineers=1000, escalations_per_s=10, sse_share=1.0, replicas=8))
    assert sse["busiest"] == "gateway processes"
    cheap_db = model(Load(escalations_per_s=20), Costs(database_tps=50))
    assert cheap_db["busiest"] == "PostgreSQL"


def test_the_script_prints_the_model() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.capacity", "--accounts", "10000", "--engineers", "3"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "server_replicas_needed" in run.stdout
    assert "add_first" in run.stdout


def test_browsers_share_their_gateways_stream_per_account() -> None:
    """The server's cost of SSE browsers is one stream per account per gateway, however
    many browsers watch: a thousand more browsers cost the gateway, not the server."""
    few = model(Load(accounts=100, engineers=2, sse_share=1.0, escalations_per_s=5))
    many = model(Load(accounts=100, engineers=2000, sse_share=1.0, escalations_per_s=5))
    assert few["server_streams"] == many["server_streams"] == 100
    assert few["server_cores_total"] == many["server_cores_total"]
    assert float(many["gateway_cores"]) > 100 * float(few["gateway_cores"])
    grpc = model(Load(accounts=100, engineers=2000, sse_share=0.0, escalations_per_s=5))
    assert grpc["server_streams"] == 200_000
    assert float(grpc["server_cores_total"]) > float(many["server_cores_total"])
