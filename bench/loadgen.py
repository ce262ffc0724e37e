"""The load generator: subscribers and the creator, in a process of its own.

``python -m bench.loadgen --config FILE`` talks to the orchestrator over its standard
streams: it writes ``BENCH {json}`` lines on stdout (``ready``, ``result``, ``warm``,
``opened``) and waits for one-word commands on stdin (``go``, ``open``, ``exit``), so
the orchestrator can read the servers' CPU counters exactly at the start and the end of
the measured window. Progress lines go to stderr.

Modes:
- ``stream``: open N subscribers (gRPC ``StreamEscalations`` or the gateway's SSE
  ``/v1/escalations/stream``; or the bare ceilings' equivalents), wait until each has its
  first message (SNAPSHOT, whose sequence is the start cursor), then create escalations
  through the real API (``CreateHandoff``), or tell a ceiling to start producing, and
  check every delivery: sequence exactly the next one, commit→receive latency from
  ``occurred_at``. Ends when every subscriber has reached its account's head.
- ``idle``: open warm-up streams, then M more, and hold them (the memory run).
- ``cost``: open N streams (possibly none) and hold them; on ``go`` create escalations
  at the configured rate (or with W in flight) for the configured duration, report
  ``created`` with the create latencies, and hold the streams until ``exit``. The
  orchestrator measures the server's CPU and the database's transactions around it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
import uuid
from array import array
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import grpc
import httpx
from resolutionflow.v1 import escalation_pb2, escalation_pb2_grpc, handoff_pb2, handoff_pb2_grpc

from bench.rawclient import GrpcStream, H2GrpcConnection, SSEConnection
from server.auth import TokenCodec
from server.domain.types import Role

EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]
PARSE = handoff_pb2.HandoffEvent.FromString
HEARTBEAT = handoff_pb2.EVENT_TYPE_HEARTBEAT
TECHNICIANS = 200
# Create refusals worth another attempt while the server restarts (--kill-server-after).
RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
CONTROL_TYPES = (handoff_pb2.EVENT_TYPE_SNAPSHOT, handoff_pb2.EVENT_TYPE_RESET)
STREAM_PATH = "/resolutionflow.v1.EscalationService/StreamEscalations"
BARE_STREAM_PATH = "/bench.Bare/Stream"
BARE_START_PATH = "/bench.Bare/Start"
OCCURRED = b'"occurredAt":"'
CHANNEL_OPTIONS = [
    # A channel of its own per group of streams: separate HTTP/2 connections.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


def split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def emit(kind: str, **fields: Any) -> None:
    sys.stdout.write("BENCH " + json.dumps({"event": kind, **fields}) + "\n")
    sys.stdout.flush()


async def command() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line.strip()


def percentiles(values: array[float] | list[float]) -> dict[str, float]:
    """p50 / p99 (nearest rank) / max of values in seconds, as milliseconds."""
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    return {
        "p50": round(rank(0.50) * 1000, 2),
        "p99": round(rank(0.99) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


class Sub:
    """One subscriber's view: where it started, what it expects next, what went wrong."""

    __slots__ = (
        "account",
        "done",
        "duplicated",
        "error",
        "missing",
        "next",
        "opened",
        "out_of_order",
        "received",
        "start",
        "target",
    )

    def __init__(self, account: str) -> None:
        self.account = account
        self.start: int | None = None
        self.next = 0
        self.target: int | None = None
        self.received = 0
        self.duplicated = 0
        self.out_of_order = 0
        self.missing: set[int] = set()
        self.error = ""
        self.done = False
        # Resolved when the first message (or a failure) arrived: gates concurrent opens.
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class LoadGen:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.label: str = cfg["label"]
        self.target: str = cfg["target"]  # "ours" | "bare"
        self.transport: str = cfg["transport"]  # "grpc" | "sse"
        self.accounts: list[str] = cfg["accounts"]
        self.quiet: bool = cfg.get("quiet", False)
        self.codec = TokenCodec(os.environ["RF_JWT_SECRET"]) if self.target == "ours" else None
        self.subs: list[Sub] = []
        self.latencies: array[float] = array("d")
        self.deliveries = 0
        self.bytes_total = 0
        self.first_rx = 0.0
        self.last_rx = 0.0
        self.ready = 0
        self.open_errors = 0
        self.not_done = 0
        self.all_done = asyncio.Event()
        self.all_ready = asyncio.Event()
        self.expected_ready = 0
        self.closing = False
        self.samples: dict[str, str] = {}
        self.creates = dict.fromkeys(self.accounts, 0)
        self.create_errors: list[str] = []
        self.create_latencies: list[float] = []
        self.channels: list[grpc.aio.Channel] = []
        self.http_clients: list[httpx.AsyncClient] = []
        self.h2_connections: list[H2GrpcConnection] = []
        self.raw_streams: list[tuple[H2GrpcConnection, GrpcStream]] = []
        self.sse_connections: list[SSEConnection] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.open_gate = asyncio.Semaphore(int(cfg.get("open_concurrency", 200)))
        self.phase = "opening"
        self.t_go = 0.0

    # ---- tokens -------------------------------------------------------------------------

    def bearer(self, account: str, role: Role, user: str) -> str:
        assert self.codec is not None
        token = self.codec.issue(
            account=account, user=user, role=role, name=user, ttl_seconds=24 * 3600
        )
        return f"Bearer {token}"

    # ---- deliveries ---------------------------------------------------------------------

    def started(self, sub: Sub, sequence: int) -> None:
        sub.start = sequence
        sub.next = sequence + 1
        if not sub.opened.done():
            sub.opened.set_result(None)
        self.ready += 1
        if self.ready + self.open_errors >= self.expected_ready:
            self.all_ready.set()

    def failed_to_open(self, sub: Sub, why: str) -> None:
        sub.error = why
        if not sub.opened.done():
            sub.opened.set_result(None)
        self.open_errors += 1
        if self.ready + self.open_errors >= self.expected_ready:
            self.all_ready.set()

    def delivered(self, sub: Sub, sequence: int, occurred_at: float, now: float) -> None:
        expected = sub.next
        if sequence == expected:
            sub.next = expected + 1
        elif sequence > expected:
            sub.missing.update(range(expected, sequence))
            sub.next = sequence + 1
        elif sequence in sub.missing:
            sub.missing.discard(sequence)
            sub.out_of_order += 1
        else:
            sub.duplicated += 1
            return
        sub.received += 1
        self.deliveries += 1
        self.latencies.append(now - occurred_at)
        self.last_rx = now
        if not self.first_rx:
            self.first_rx = now
        target = sub.target
        if target is not None and sub.next > target and not sub.done and not sub.missing:
            self.finished(sub)

    def finished(self, sub: Sub) -> None:
        sub.done = True
        self.not_done -= 1
        if self.not_done <= 0:
            self.all_done.set()

    def set_targets(self, heads: dict[str, int]) -> None:
        self.not_done = sum(1 for s in self.subs if not s.error)
        if self.not_done == 0:
            self.all_done.set()
        for sub in self.subs:
            if sub.error:
                continue
            sub.target = heads[sub.account]
            if sub.next > sub.target and not sub.missing:
                self.finished(sub)

    # ---- gRPC subscribers ---------------------------------------------------------------

    def new_channel(self, addr: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS)
        self.channels.append(channel)
        return channel

    def grpc_message(self, sub: Sub, raw: bytes, now: float) -> None:
        """One received ``HandoffEvent`` (the same for every client kind and both targets)."""
        event = PARSE(raw)
        kind = event.type
        if sub.start is None:
            if kind in CONTROL_TYPES:
                self.started(sub, event.sequence)
            else:
                self.failed_to_open(sub, f"first message has type {kind}")
            return
        if kind == HEARTBEAT:
            return
        if kind in CONTROL_TYPES:
            if event.sequence == sub.start and sub.next == sub.start + 1:
                return  # a further part of the opening snapshot (a queue over 1 MiB)
            sub.error = f"unexpected {handoff_pb2.EventType.Name(kind)} mid-stream"
            return
        ts = event.occurred_at
        self.delivered(sub, event.sequence, ts.seconds + ts.nanos * 1e-9, now)
        self.bytes_total += len(raw)
        samples = self.samples
        if len(samples) < 4 and str(kind) not in samples:
            samples[str(kind)] = raw.hex()

    def stream_ended(self, sub: Sub, why: str) -> None:
        if sub.start is None:
            self.failed_to_open(sub, why)
        elif not self.closing:
            sub.error = sub.error or why

    async def raw_grpc_subscriber(
        self, sub: Sub, conn: H2GrpcConnection, request: bytes, metadata: Any
    ) -> None:
        path = STREAM_PATH if self.target == "ours" else BARE_STREAM_PATH

        def on_end(status: int | None, message: str) -> None:
            self.stream_ended(sub, f"stream ended: grpc-status {status} {message}".strip())

        stream = GrpcStream(lambda raw, now: self.grpc_message(sub, raw, now), on_end)
        self.raw_streams.append((conn, stream))
        async with self.open_gate:
            conn.start(stream, path, request, tuple(metadata or ()))
            await sub.opened

    async def grpc_subscriber(
        self, sub: Sub, channel: grpc.aio.Channel, request: bytes, metadata: Any
    ) -> None:
        """The same over grpc.aio (``--client library``): many times the client CPU."""
        path = STREAM_PATH if self.target == "ours" else BARE_STREAM_PATH
        try:
            async with self.open_gate:
                # No (de)serializers: requests and responses are bytes as they are.
                call = channel.unary_stream(path, None, None)(request, metadata=metadata)
                first = await call.read()
                if first is EOF:
                    self.failed_to_open(sub, "stream ended before its first message")
                    return
                self.grpc_message(sub, cast(bytes, first), time.time())
            read = call.read
            while True:
                raw = await read()
                if raw is EOF:
                    self.stream_ended(sub, "stream ended by the server")
                    return
                self.grpc_message(sub, cast(bytes, raw), time.time())
        except grpc.aio.AioRpcError as e:
            self.stream_ended(sub, f"{e.code().name}: {e.details()}")
        except asyncio.CancelledError:
            if not self.closing:
                raise

    # ---- SSE subscribers ----------------------------------------------------------------

    def new_http_client(self, size: int) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=size + 8, max_keepalive_connections=size + 8),
            timeout=httpx.Timeout(30.0, read=None, pool=None),
        )
        self.http_clients.append(client)
        return client

    async def sse_subscriber(
        self, sub: Sub, client: httpx.AsyncClient, url: str, headers: dict[str, str]
    ) -> None:
        gate_held = False
        try:
            await self.open_gate.acquire()
            gate_held = True
            async with client.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    body = (await response.aread())[:300].decode(errors="replace")
                    self.failed_to_open(sub, f"HTTP {response.status_code}: {body}")
                    return
                buffer = b""
                async for chunk in response.aiter_raw():
                    now = time.time()
                    buffer += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
                    while (end := buffer.find(b"\n\n")) >= 0:
                        frame, buffer = buffer[:end], buffer[end + 2 :]
                        self.sse_frame(sub, frame, now)
                    if gate_held and sub.start is not None:
                        self.open_gate.release()
                        gate_held = False
            if not self.closing:
                sub.error = sub.error or "stream ended by the server"
        except (httpx.HTTPError, OSError) as e:
            if sub.start is None:
                self.failed_to_open(sub, f"{type(e).__name__}: {e}")
            elif not self.closing:
                sub.error = f"{type(e).__name__}: {e}"
        except asyncio.CancelledError:
            if not self.closing:
                raise
        finally:
            if gate_held:
                self.open_gate.release()

    async def raw_sse_subscriber(
        self, sub: Sub, host: str, port: int, path: str, headers: dict[str, str]
    ) -> None:
        def on_frame(frame: bytes, now: float) -> None:
            self.sse_frame(sub, frame, now)

        def on_end(status: int, why: str) -> None:
            self.stream_ended(sub, why)

        async with self.open_gate:
            try:
                conn = await SSEConnection.open(host, port, path, headers, on_frame, on_end)
            except OSError as e:
                self.failed_to_open(sub, f"connect: {e}")
                return
            self.sse_connections.append(conn)
            await sub.opened

    def sse_frame(self, sub: Sub, frame: bytes, now: float) -> None:
        """One SSE event (lines already split on a blank line, ``\\r\\n`` normalised)."""
        sequence = -1
        name = b""
        data = b""
        for line in frame.split(b"\n"):
            if line[:1] == b":":
                continue  # a comment (": ping")
            if line[:3] == b"id:":
                sequence = int(line[3:])
            elif line[:6] == b"event:":
                name = line[6:].strip()
            elif line[:5] == b"data:":
                data = line[5:].lstrip()
        if name == b"heartbeat" or (sequence < 0 and name != b"error"):
            return  # heartbeats, and the frame holding only "retry:"
        if name == b"error":
            message = data.decode(errors="replace")[:300]
            if sub.start is None:
                self.failed_to_open(sub, f"event: error {message}")
            else:
                sub.error = f"event: error {message}"
            return
        if name in (b"snapshot", b"reset"):
            if sub.start is None:
                self.started(sub, sequence)
            else:
                sub.error = f"unexpected {name.decode()} mid-stream"
            return
        at = data.find(OCCURRED) + len(OCCURRED)
        stamp = data[at : data.index(b'"', at)].decode()
        occurred = datetime.fromisoformat(stamp).timestamp()
        self.delivered(sub, sequence, occurred, now)
        self.bytes_total += len(frame) + 2
        key = name.decode()
        if len(self.samples) < 4 and key not in self.samples:
            self.samples[key] = data.decode()

    # ---- opening ------------------------------------------------------------------------

    async def open_streams(self, count: int, *, offset: int = 0) -> list[Sub]:
        """Open ``count`` subscribers spread over the accounts; return once all are ready."""
        cfg = self.cfg
        per_group = max(1, int(cfg.get("streams_per_channel", 100)))
        raw = cfg.get("client", "raw") == "raw"
        new: list[Sub] = []
        self.expected_ready += count
        self.all_ready.clear()
        group: Any = None
        for i in range(count):
            account = self.accounts[(offset + i) % len(self.accounts)]
            sub = Sub(account)
            new.append(sub)
            coro: Awaitable[None]
            if self.transport == "grpc":
                if i % per_group == 0:
                    if raw:
                        host, port = split(cfg["grpc_addr"])
                        group = await H2GrpcConnection.connect(host, port)
                        self.h2_connections.append(group)
                    else:
                        group = self.new_channel(cfg["grpc_addr"])
                if self.target == "ours":
                    request = escalation_pb2.StreamEscalationsRequest().SerializeToString()
                    # One engineer per stream, as in real life (and under per-user limits).
                    user = f"eng-{offset + i}"
                    metadata: Any = (("authorization", self.bearer(account, Role.ENGINEER, user)),)
                else:
                    request, metadata = account.encode(), None
                if raw:
                    coro = self.raw_grpc_subscriber(sub, group, request, metadata)
                else:
                    coro = self.grpc_subscriber(sub, group, request, metadata)
            else:
                if self.target == "ours":
                    path = "/v1/escalations/stream"
                    user = f"eng-{offset + i}"
                    headers = {"authorization": self.bearer(account, Role.ENGINEER, user)}
                else:
                    path = f"/stream?account={account}"
                    headers = {}
                if raw:
                    host, port = split(cfg["http_url"].removeprefix("http://"))
                    coro = self.raw_sse_subscriber(sub, host, port, path, headers)
                else:
                    if i % per_group == 0:
                        group = self.new_http_client(per_group)
                    coro = self.sse_subscriber(sub, group, cfg["http_url"] + path, headers)
            self.tasks.append(asyncio.create_task(coro))
        self.subs.extend(new)
        await self.all_ready.wait()
        return new

    # ---- creating -----------------------------------------------------------------------

    async def create_escalations(self) -> None:
        """CreateHandoff through the real API, at ``rate``/2 per second or as fast as it can."""
        cfg = self.cfg
        rate = float(cfg["rate"]) / 2  # each escalation is two events
        events = cfg.get("events")
        total = math.ceil(events / 2) if events else None
        duration = cfg.get("duration")
        # Escalations come from many technicians (a per-user create limit must not be what
        # is measured): technician k % TECHNICIANS of the account.
        tokens: dict[tuple[str, int], str] = {}

        def technician(account: str, k: int) -> str:
            key = (account, k % TECHNICIANS)
            if key not in tokens:
                tokens[key] = self.bearer(account, Role.TECHNICIAN, f"tech-{key[1]}")
            return tokens[key]

        steps = [
            handoff_pb2.Step(description="Restarted the VPN client", outcome="failed"),
            handoff_pb2.Step(
                description="Forgot and re-joined the Wi-Fi network", outcome="failed"
            ),
        ]
        one: Callable[[int], Awaitable[None]]
        if cfg.get("create_via") == "http":
            client = self.new_http_client(64)
            url = cfg["http_url"] + "/v1/handoffs"

            async def one(k: int) -> None:
                account = self.accounts[k % len(self.accounts)]
                body = {
                    "requestId": uuid.uuid4().hex,
                    "sessionId": f"bench-session-{k}",
                    "intent": "HANDOFF_INTENT_ESCALATE",
                    "priority": "PRIORITY_NORMAL",
                    "problemSummary": "The VPN drops every few minutes on the office Wi-Fi",
                    "stepsTried": [
                        {"description": s.description, "outcome": s.outcome} for s in steps
                    ],
                    "notes": "Benchmark escalation",
                }
                started = time.perf_counter()
                response = await client.post(
                    url, json=body, headers={"authorization": technician(account, k)}
                )
                if response.status_code != 201:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
                self.create_latencies.append(time.perf_counter() - started)
                self.creates[account] += 1

        else:
            # Several connections when the server runs several workers: the kernel gives
            # each connection to one worker.
            stubs = [
                handoff_pb2_grpc.HandoffServiceStub(self.new_channel(cfg["grpc_addr"]))
                for _ in range(int(cfg.get("create_channels", 1)))
            ]

            async def one(k: int) -> None:
                stub = stubs[k % len(stubs)]
                account = self.accounts[k % len(self.accounts)]
                request = handoff_pb2.CreateHandoffRequest(
                    request_id=uuid.uuid4().hex,
                    session_id=f"bench-session-{k}",
                    intent=handoff_pb2.HANDOFF_INTENT_ESCALATE,
                    priority=handoff_pb2.PRIORITY_NORMAL,
                    problem_summary="The VPN drops every few minutes on the office Wi-Fi",
                    steps_tried=steps,
                    notes="Benchmark escalation",
                )
                started = time.perf_counter()
                metadata = (("authorization", technician(account, k)),)
                # While the server is down (--kill-server-after) the same request, by its
                # request_id, until it is taken: counted once whichever attempt commits.
                retry_until = time.monotonic() + (120 if cfg.get("retry_creates") else 0)
                while True:
                    try:
                        await stub.CreateHandoff(request, metadata=metadata, timeout=30)
                        break
                    except grpc.aio.AioRpcError as e:
                        if time.monotonic() > retry_until or e.code() not in RETRIED:
                            raise
                        await asyncio.sleep(0.2)
                self.create_latencies.append(time.perf_counter() - started)
                self.creates[account] += 1

        await self.paced(one, total, duration, rate, int(cfg.get("create_concurrency", 8)))

    async def paced(
        self,
        one: Callable[[int], Awaitable[None]],
        total: int | None,
        duration: float | None,
        rate: float,
        concurrency: int,
    ) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(256 if rate > 0 else concurrency)
        running: set[asyncio.Task[None]] = set()

        async def guarded(k: int) -> None:
            try:
                await one(k)
            except Exception as e:
                self.create_errors.append(f"{type(e).__name__}: {e}"[:300])
            finally:
                gate.release()

        started = loop.time()
        k = 0
        while (total is None or k < total) and (
            duration is None or loop.time() - started < duration
        ):
            if rate > 0:
                delay = started + k / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await gate.acquire()
            task = asyncio.create_task(guarded(k))
            running.add(task)
            task.add_done_callback(running.discard)
            k += 1
        if running:
            await asyncio.gather(*running)

    async def heads(self) -> dict[str, int]:
        """Each account's last sequence as the server reports it (read after the window)."""
        cfg = self.cfg
        stub = escalation_pb2_grpc.EscalationServiceStub(self.new_channel(cfg["grpc_addr"]))
        heads = {}
        for account in self.accounts:
            reply = await stub.ListEscalations(
                escalation_pb2.ListEscalationsRequest(),
                metadata=(("authorization", self.bearer(account, Role.ENGINEER, "eng")),),
                timeout=60,
            )
            heads[account] = reply.sequence
        return heads

    async def start_bare(self) -> dict[str, int]:
        counts: dict[str, int] = self.cfg["events_per_account"]
        spec = json.dumps({"rate": self.cfg["rate"], "events": counts}).encode()
        if self.transport == "grpc":
            channel = self.new_channel(self.cfg["grpc_addr"])
            await channel.unary_unary(BARE_START_PATH, None, None)(spec, timeout=30)
        else:
            client = self.new_http_client(4)
            response = await client.post(self.cfg["http_url"] + "/start", content=spec)
            response.raise_for_status()
        return {a: int(counts.get(a, 0)) for a in self.accounts}

    # ---- progress -----------------------------------------------------------------------

    async def progress(self) -> None:
        if self.quiet:
            return
        last_deliveries, last_t = 0, time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            rate = (self.deliveries - last_deliveries) / (now - last_t)
            last_deliveries, last_t = self.deliveries, now
            if self.phase == "opening":
                line = f"opening streams: {self.ready}/{self.expected_ready} ready"
            else:
                t = time.time() - self.t_go
                line = (
                    f"{self.phase} {t:5.1f}s  created {sum(self.creates.values())}  "
                    f"delivered {self.deliveries} ({rate:,.0f}/s)"
                )
                if self.not_done:
                    line += f"  subscribers still behind: {self.not_done}"
            print(f"[bench {self.label}] {line}", file=sys.stderr, flush=True)

    # ---- the modes ----------------------------------------------------------------------

    async def run_stream(self) -> None:
        cfg = self.cfg
        reporter = asyncio.create_task(self.progress())
        started = time.monotonic()
        await self.open_streams(int(cfg["subscribers"]))
        ready_s = time.monotonic() - started
        failures = [s.error for s in self.subs if s.error]
        emit("ready", streams=self.ready, open_errors=len(failures), seconds=round(ready_s, 2))
        if failures:
            emit("result", ok=False, error=f"{len(failures)} streams failed: {failures[0]}")
            await self.close(reporter)
            return
        if await command() != "go":
            await self.close(reporter)
            return
        self.phase = "running"
        self.t_go = time.time()
        starts: dict[str, int] = {}
        for sub in self.subs:
            assert sub.start is not None
            starts[sub.account] = min(starts.get(sub.account, sub.start), sub.start)
        if self.target == "ours":
            await self.create_escalations()
            created_at = time.time()
            self.phase = "draining"
            # Every escalation appends CREATED, then (soon after) ASSESSMENT_READY; nothing
            # else writes to these fresh accounts. The server's own head is checked below,
            # after the measured window, so that polling it costs the server nothing here.
            heads = {a: starts[a] + 2 * self.creates[a] for a in self.accounts}
        else:
            heads = await self.start_bare()
            created_at = time.time()
            self.phase = "draining"
        self.set_targets(heads)
        # Drain: until every subscriber has its account's head, or nothing arrives for a while.
        drain_timeout = float(cfg.get("drain_timeout", 20))
        seen, changed = -1, time.monotonic()
        while not self.all_done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_done.wait(), 0.25)
            if self.deliveries != seen:
                seen, changed = self.deliveries, time.monotonic()
            elif time.monotonic() - changed > drain_timeout:
                break
        ended = time.time()
        emit("measured")  # the orchestrator reads the CPU counters now
        head_mismatch = {}
        if self.target == "ours":
            server_heads = await self.heads()
            head_mismatch = {a: h for a, h in server_heads.items() if h != heads[a]}
            heads = {a: max(heads[a], server_heads[a]) for a in self.accounts}
        result = self.stream_result(starts, heads, created_at, ended)
        result["head_mismatch"] = head_mismatch
        await self.close(reporter)
        emit("result", **result)

    def stream_result(
        self, starts: dict[str, int], heads: dict[str, int], created_at: float, ended: float
    ) -> dict[str, Any]:
        lost = duplicated = out_of_order = 0
        errors: list[str] = []
        for sub in self.subs:
            assert sub.start is not None
            target = heads[sub.account]
            lost += len(sub.missing) + max(0, target - (sub.next - 1))
            duplicated += sub.duplicated
            out_of_order += sub.out_of_order
            if sub.error:
                errors.append(sub.error)
        expected_events = {a: heads[a] - starts[a] for a in self.accounts}
        window = (self.last_rx - self.t_go) if self.deliveries else 0.0
        result: dict[str, Any] = {
            "ok": not (lost or duplicated or out_of_order or errors or self.create_errors),
            "deliveries": self.deliveries,
            "window_s": round(window, 3),
            "deliveries_per_s": round(self.deliveries / window, 1) if window > 0 else 0.0,
            "latency_ms": percentiles(self.latencies),
            "lost": lost,
            "duplicated": duplicated,
            "out_of_order": out_of_order,
            "stream_errors": len(errors),
            "first_stream_error": errors[0] if errors else "",
            "events_per_account": expected_events,
            "creates": sum(self.creates.values()),
            "create_s": round(created_at - self.t_go, 3),
            "create_errors": len(self.create_errors),
            "first_create_error": self.create_errors[0] if self.create_errors else "",
            "create_ms": percentiles(self.create_latencies),
            "mean_message_bytes": round(self.bytes_total / self.deliveries)
            if self.deliveries
            else 0,
            "drained_s": round(ended - created_at, 3),
            "samples": self.samples,
        }
        return result

    async def run_idle(self) -> None:
        cfg = self.cfg
        reporter = asyncio.create_task(self.progress())
        await self.open_streams(int(cfg["warm_streams"]))
        emit("warm", streams=self.ready, open_errors=self.open_errors)
        if await command() == "open":
            started = time.monotonic()
            await self.open_streams(int(cfg["idle_streams"]), offset=int(cfg["warm_streams"]))
            emit(
                "opened",
                streams=self.ready,
                open_errors=self.open_errors,
                first_error=next((s.error for s in self.subs if s.error), ""),
                seconds=round(time.monotonic() - started, 2),
            )
            await command()
        await self.close(reporter)
        emit("result", ok=True)

    async def run_cost(self) -> None:
        cfg = self.cfg
        reporter = asyncio.create_task(self.progress())
        started = time.monotonic()
        count = int(cfg.get("subscribers", 0))
        if count:
            await self.open_streams(count)
        failures = [s.error for s in self.subs if s.error]
        emit(
            "ready",
            streams=self.ready,
            open_errors=len(failures),
            first_error=failures[0] if failures else "",
            seconds=round(time.monotonic() - started, 2),
        )
        while await command() == "go":
            self.phase = "creating"
            self.t_go = time.time()
            before, self.create_latencies = self.deliveries, []
            creates_before = sum(self.creates.values())
            errors_before = len(self.create_errors)
            go = time.monotonic()
            await self.create_escalations()
            emit(
                "created",
                seconds=round(time.monotonic() - go, 3),
                creates=sum(self.creates.values()) - creates_before,
                create_errors=len(self.create_errors) - errors_before,
                first_create_error=self.create_errors[errors_before]
                if len(self.create_errors) > errors_before
                else "",
                create_ms=percentiles(self.create_latencies),
                deliveries=self.deliveries - before,
            )
            self.phase = "holding"
        await self.close(reporter)
        emit("result", ok=True)

    async def close(self, reporter: asyncio.Task[None]) -> None:
        self.closing = True
        reporter.cancel()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, reporter, return_exceptions=True)
        for conn, stream in self.raw_streams:
            conn.cancel(stream)
        for h2 in self.h2_connections:
            h2.close()
        for sse in self.sse_connections:
            sse.close()
        for client in self.http_clients:
            with contextlib.suppress(Exception):
                await client.aclose()
        for channel in self.channels:
            with contextlib.suppress(Exception):
                await channel.close(None)


async def amain(cfg: dict[str, Any]) -> None:
    gen = LoadGen(cfg)
    if cfg.get("mode") == "idle":
        await gen.run_idle()
    elif cfg.get("mode") == "cost":
        await gen.run_cost()
    else:
        await gen.run_stream()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args()
    asyncio.run(amain(json.loads(args.config.read_text())))


if __name__ == "__main__":
    main()
