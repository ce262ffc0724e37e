"""The benchmark harness runs end to end and loses nothing (no timing assertions: CI only
checks that it works and that every delivery was exactly once and in order)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import pytest
from resolutionflow.v1 import handoff_pb2

from bench import wire
from bench.loadgen import percentiles
from bench.rawclient import SSEConnection
from tests.pg import fresh_database

# Timing bounds and machine load: never beside another module of the serial group under
# pytest-xdist (`make test` runs with --dist loadgroup).
pytestmark = pytest.mark.xdist_group("serial")

# A small run takes seconds; past this, it hangs (and pytest-timeout would say less).
BENCH_DEADLINE = 55


def test_bench_smoke_grpc(tmp_path):
    try:
        run = subprocess.run(
            [
                *(sys.executable, "-m", "resolutionflow_cli", "bench", "--transport", "grpc"),
                *("--subscribers", "20", "--accounts", "2", "--events", "120"),
                *("--idle-streams", "40", "--json-only"),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=BENCH_DEADLINE,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the benchmark did not finish within {BENCH_DEADLINE} s: {e.stderr!r:.3000}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["ok"] is True, result
    for phase in ("ours", "ceiling"):
        figures = result[phase]
        assert figures["lost"] == figures["duplicated"] == figures["out_of_order"] == 0, figures
        assert figures["stream_errors"] == 0, figures
        # 60 escalations over 2 accounts, two events each, to 10 subscribers per account.
        assert figures["deliveries"] == 20 * 120 // 2, figures
    assert result["ours"]["creates"] == 60
    assert result["ours"]["create_errors"] == 0
    assert result["ours"]["head_mismatch"] == {}
    assert result["ours"]["peak_rss_kib"]["server"] > 0
    assert result["ratio_to_ceiling"] > 0
    assert result["memory"]["ours"]["streams"] == 40


def test_bench_smoke_sse_through_one_shared_stream_per_account(tmp_path):
    run = subprocess.run(
        [
            *(sys.executable, "-m", "resolutionflow_cli", "bench", "--transport", "sse"),
            *("--subscribers", "20", "--accounts", "2", "--events", "120"),
            *("--idle-streams", "0", "--no-ceiling", "--json-only"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout)
    ours = result["ours"]
    assert ours["lost"] == ours["duplicated"] == ours["out_of_order"] == 0, ours
    assert ours["deliveries"] == 20 * 120 // 2, ours
    # The gateway shares the queue's stream per account (and reports who is watching):
    # 20 browsers of 20 engineers over 2 accounts are 2 server streams.
    assert ours["server_streams_held"] == 2, ours


def test_bench_smoke_sse_with_the_server_killed_mid_run_and_idle_browsers(tmp_path):
    """The upstream SIGKILLed and restarted while events flow: the gateway resumes its
    shared streams and no browser loses, repeats or reorders one; then the memory run
    over SSE measures the gateway."""
    run = subprocess.run(
        [
            *(sys.executable, "-m", "resolutionflow_cli", "bench", "--transport", "sse"),
            *("--subscribers", "10", "--accounts", "2", "--events", "400", "--rate", "40"),
            *("--kill-server-after", "2", "--idle-streams", "40", "--no-ceiling"),
            "--json-only",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout)
    ours = result["ours"]
    assert ours["lost"] == ours["duplicated"] == ours["out_of_order"] == 0, ours
    assert ours["stream_errors"] == 0, ours
    assert ours["server_killed"]["error"] == "", ours["server_killed"]
    assert ours["server_killed"]["down_s"] > 0, ours["server_killed"]
    memory = result["memory"]
    assert memory["ours"]["measured"] == "gateway"
    assert memory["ours"]["server_streams_held"] == 2, memory
    assert memory["ours"]["streams"] == memory["ceiling"]["streams"] == 40


@pytest.mark.parametrize("event_type", [handoff_pb2.EVENT_TYPE_CREATED, wire.SNAPSHOT])
def test_ceiling_bytes_are_real_handoff_events(event_type):
    """The bare server builds events by hand; they must parse as the real message does."""
    handoff = handoff_pb2.Handoff(id="h-1", problem_summary="VPN", sequence=7).SerializeToString()
    occurred = 1_790_000_000.123456
    event = handoff_pb2.HandoffEvent.FromString(
        wire.event(300, event_type, occurred, handoff if event_type != wire.SNAPSHOT else b"")
    )
    assert event.sequence == 300
    assert event.type == event_type
    assert abs(event.occurred_at.seconds + event.occurred_at.nanos * 1e-9 - occurred) < 1e-6
    assert event.handoff.problem_summary == ("VPN" if event_type != wire.SNAPSHOT else "")
    assert handoff_pb2.EVENT_TYPE_SNAPSHOT == wire.SNAPSHOT


def test_sse_frames_and_percentiles():
    frame = wire.sse_event(
        42,
        "created",
        f'{{"sequence":"{wire.SEQ_PLACEHOLDER}","occurredAt":"{wire.TS_PLACEHOLDER}"}}',
        0.5,
    )
    assert frame == (
        b"id: 42\nevent: created\n"
        b'data: {"sequence":"42","occurredAt":"1970-01-01T00:00:00.500000Z"}\n\n'
    )
    assert percentiles([0.001 * i for i in range(1, 101)]) == {
        "p50": 50.0,
        "p99": 99.0,
        "max": 100.0,
    }


def test_raw_sse_reader_dechunks_and_splits_events():
    """The load generator's SSE reader: chunked body, CRLF pings, events split across reads."""
    frames: list[bytes] = []
    ends: list[str] = []
    conn = SSEConnection(b"", lambda f, now: frames.append(f), lambda status, why: ends.append(why))

    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    event = b'id: 1\nevent: created\ndata: {"occurredAt":"2026-01-01T00:00:00Z"}\n\n'
    stream = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + chunk(b"retry: 3000\n\n")
        + chunk(b": ping - 2026-01-01\r\n\r\n")
        + chunk(event)
        + chunk(event.replace(b"id: 1", b"id: 2"))
        + b"0\r\n\r\n"
    )
    for i in range(0, len(stream), 7):  # arbitrary read boundaries
        conn.data_received(stream[i : i + 7])
    assert conn.status == 200
    assert frames == [
        b"retry: 3000",
        b": ping - 2026-01-01",
        event[:-2],
        event.replace(b"id: 1", b"id: 2")[:-2],
    ]
    assert ends == ["stream ended by the server"]


@pytest.mark.parametrize("module", ["hpack", "sse_starlette"])
def test_bench_without_its_extra_says_how_to_install_it(tmp_path, module):
    """The benchmark's packages are an extra: without them, one line saying how to get them."""
    block = f"import sys; sys.modules[{module!r}] = None"  # as if not installed
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{block}; from resolutionflow_cli.main import main; "
            "sys.exit(main(['bench', '--json-only']))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert module in lines[0]
    assert "pip install -e '.[bench]'" in lines[0]


def bench_json(tmp_path, *args: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-m", "resolutionflow_cli", "bench", *args, "--json-only"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(run.stdout)


def test_bench_idle_cost_mode_reports_cores_and_database_transactions(tmp_path):
    with fresh_database() as url:
        result = bench_json(
            tmp_path,
            *("--mode", "idle", "--accounts", "4", "--cost-seconds", "1"),
            *("--wakeup", "postgres,none", "--rate", "4", "--database-url", url),
        )
    assert result["ok"] is True, result
    for wakeup in ("postgres", "none"):
        figures = result["idle_cost"]["by_wakeup"][wakeup]
        assert figures["streams"] == 4
        for window in ("idle", "busy"):
            assert figures[window]["server_cores"] >= 0
            assert figures[window]["db_transactions_per_s"] >= 0
        assert figures["busy"]["creates"] > 0
        assert figures["busy"]["create_errors"] == 0


def test_bench_writers_mode_reports_creates_and_p99(tmp_path):
    result = bench_json(
        tmp_path,
        *("--mode", "writers", "--writers", "1,3", "--cost-seconds", "1", "--wakeup", "none"),
    )
    assert result["ok"] is True, result
    rows = result["writers"]["by_wakeup"]["none"]
    assert [r["writers"] for r in rows] == [1, 3]
    for row in rows:
        assert row["creates_per_s"] > 0
        assert row["create_ms"]["p99"] >= row["create_ms"]["p50"] > 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bench_search_mode_fills_and_times_the_lookup(tmp_path, backend):
    extra: list[str] = []
    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            extra = ["--database-url", stack.enter_context(fresh_database())]
        run = subprocess.run(
            [
                *(sys.executable, "-m", "resolutionflow_cli", "bench", "--mode", "search"),
                *("--resolved", "300", "--queries", "20", "--json-only", *extra),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=BENCH_DEADLINE,
        )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout)["search"]
    assert result["resolved"] == 300 and result["queries"] == 20
    assert result["with_a_match"] > 0  # the filled rows are found, not an empty index
    assert 0 < result["lookup_ms"]["p50"] <= result["lookup_ms"]["p99"]
