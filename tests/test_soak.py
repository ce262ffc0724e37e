"""Soak: 2,000 gRPC streams held for five minutes under a steady event rate.

The benchmark harness does the work (real server process, subscribers in a load
generator process of their own, every delivery checked for loss, duplication and order);
this test adds the curve: the server's resident memory and open descriptors sampled every
ten seconds, which must level off rather than climb with the events served. Run on
PostgreSQL, the deployment backend (LISTEN connection, pool); SQLite shares every code
path above the database with it.

Slow on purpose (about six minutes): ``pytest -m "not slow"`` leaves it out.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Any

import pytest

from tests.pg import fresh_database

STREAMS = 2_000
ACCOUNTS = 20
RATE = 10  # events/s over all accounts: 5 escalations/s, ~1,000 deliveries/s
SECONDS = 300
SAMPLE_EVERY = 10

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SECONDS + 420)]


def _median(samples: list[dict[str, Any]], key: str) -> float:
    return statistics.median(s["server"][key] for s in samples if "server" in s)


def test_2000_streams_for_five_minutes_hold_memory_and_descriptors_and_lose_nothing(
    tmp_path: Any,
) -> None:
    with fresh_database() as database_url:
        run = subprocess.run(
            [
                *(sys.executable, "-m", "resolutionflow_cli", "bench", "--transport", "grpc"),
                *("--subscribers", str(STREAMS), "--accounts", str(ACCOUNTS)),
                *("--rate", str(RATE), "--duration", str(SECONDS)),
                *("--sample-every", str(SAMPLE_EVERY), "--database-url", database_url),
                *("--no-ceiling", "--json-only"),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=SECONDS + 400,
        )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout)
    ours = result["ours"]
    print("soak curve (t s, server RSS KiB, open fds):")
    for s in ours["curve"]:
        if "server" in s:
            print(f"  {s['t']:>6} {s['server']['rss_kib']:>8} {s['server']['fds']:>5}")

    assert result["ok"] is True, result
    assert ours["lost"] == ours["duplicated"] == ours["out_of_order"] == 0, ours
    assert ours["stream_errors"] == 0 and ours["create_errors"] == 0, ours
    escalations = ours["creates"]
    assert escalations >= RATE * SECONDS // 2 * 0.9, ours  # the rate was held
    assert ours["deliveries"] == escalations * 2 * (STREAMS // ACCOUNTS), ours

    curve = [s for s in ours["curve"] if "server" in s]
    assert len(curve) >= SECONDS // SAMPLE_EVERY, curve
    # Warm-up (pools, caches, the first events' buffers) is the first minute; after it
    # memory and descriptors must be flat: the last minute within a few percent of the
    # second, not growing with the thousands of events delivered in between.
    second_minute = [s for s in curve if 60 <= s["t"] < 120]
    last_minute = [s for s in curve if s["t"] >= curve[-1]["t"] - 60]
    rss_early, rss_late = _median(second_minute, "rss_kib"), _median(last_minute, "rss_kib")
    assert rss_late <= rss_early * 1.05 + 4096, (rss_early, rss_late)
    # Descriptors breathe with the PostgreSQL pool's overflow connections (up to 10 more
    # than its 10 under a burst, closed again after); a leak would raise the floor.
    floor_early = min(s["server"]["fds"] for s in second_minute)
    floor_late = min(s["server"]["fds"] for s in last_minute)
    assert floor_late <= floor_early + 2, curve
    assert max(s["server"]["fds"] for s in curve) <= floor_early + 20, curve
