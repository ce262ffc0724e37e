"""The orchestrator behind ``resolutionflow bench``.

Every part runs as a process of its own: the real server (``resolutionflow server``), the
gateway (``resolutionflow gateway``) for SSE, the ceilings, and the load generator, so
nothing shares an event loop with what it measures. CPU time (utime + stime) and memory
(VmHWM peak, VmRSS now) come from /proc, read by this process at the moments the load
generator reports (``ready`` → ``measured``).

Phases, in this order:
1. ours    — the real stack; N subscribers, escalations created through the real API;
2. ceiling — the bare server of the same transport, the same subscribers, the same number
             of events per account, bytes of real events captured in phase 1;
3. memory  — with --idle-streams M: a fresh bare grpc.aio server, then a fresh real server,
             each holding M idle streams; RSS growth per stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench import procs, wire
from bench.procs import Proc

PY = sys.executable
DEFAULT_DELIVERIES = 200_000


class BenchError(RuntimeError):
    pass


class ServerKiller(threading.Thread):
    """SIGKILLs the server ``after`` seconds into a stream phase and starts it again.

    The measured CPU stays whole: the killed process's CPU up to its death is carried into
    the phase's starting figure for the new one (``before``)."""

    def __init__(
        self, after: float, servers: dict[str, Proc], before: dict[str, float], restart: Any
    ) -> None:
        super().__init__(name="server-killer", daemon=True)
        self.after = after
        self.servers = servers
        self.before = before
        self.restart = restart
        self.down_s = 0.0
        self.error = ""

    def run(self) -> None:
        time.sleep(self.after)
        old = self.servers["server"]
        try:
            used = old.cpu()
            old.popen.kill()
            old.popen.wait(10)
            killed = time.monotonic()
            new = self.restart()
            self.down_s = time.monotonic() - killed
            self.before["server"] -= used
            self.servers["server"] = new
        except Exception as e:  # reported, and the run's loss checks still apply
            self.error = f"{type(e).__name__}: {e}"

    def report(self) -> dict[str, Any]:
        return {"after_s": self.after, "down_s": round(self.down_s, 2), "error": self.error}


class LoadGenProc:
    """The load generator child: ``BENCH {json}`` lines out, one-word commands in."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        stdout = self.proc.popen.stdout
        assert stdout is not None
        for raw in stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("BENCH "):
                self.lines.put(json.loads(line[6:]))
        self.lines.put(None)

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"load generator: no '{kind}' after {timeout:g}s")
            try:
                message = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if message is None:
                self.proc.popen.wait(5)
                raise BenchError(
                    f"load generator exited ({self.proc.popen.returncode}) before '{kind}':\n"
                    + self.proc.log_tail()
                )
            if message.get("event") == kind:
                return message
            if message.get("event") == "result" and not message.get("ok", True):
                raise BenchError(f"load generator failed: {message.get('error')}")

    def send(self, word: str) -> None:
        stdin = self.proc.popen.stdin
        assert stdin is not None
        stdin.write(word.encode() + b"\n")
        stdin.flush()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # The CLI logs at INFO; the bench's own HTTP polling is not worth a line each.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        if args.subscribers < 1 or args.accounts < 1:
            raise SystemExit("bench: --subscribers and --accounts must be at least 1")
        if args.mode == "stream" and args.accounts > args.subscribers:
            raise SystemExit(
                "bench: every account needs a subscriber (--accounts <= --subscribers)"
            )
        if args.kill_server_after > 0 and (args.transport != "sse" or args.create_via != "grpc"):
            raise SystemExit("bench: --kill-server-after needs --transport sse --create-via grpc")
        if args.workers < 1:
            raise SystemExit("bench: --workers must be at least 1")
        if args.workers > 1 and not (args.database_url or "").startswith("postgresql"):
            raise SystemExit("bench: --workers N > 1 needs a PostgreSQL --database-url")
        self.run_id = uuid.uuid4().hex[:8]
        self.tmp = Path(tempfile.mkdtemp(prefix="rf-bench-"))
        self.env = dict(os.environ)
        self.env.update(
            RF_JWT_SECRET=secrets.token_urlsafe(48),
            RF_VAR_DIR=str(self.tmp / "var"),
            PYTHONUNBUFFERED="1",
        )
        self.procs: list[Proc] = []
        self.dropped_database: str | None = None
        self.database_url = ""
        self._admin_dsn = ""
        self._create_dsn = ""
        self.database_name = ""
        self.metrics_port = 0
        self.events, self.duration = self._workload()

    # ---- workload -----------------------------------------------------------------------

    def _workload(self) -> tuple[int | None, float | None]:
        a = self.args
        if a.events is not None or a.duration is not None:
            return a.events, a.duration
        if a.rate > 0:
            return None, 20.0
        per_account = a.subscribers / a.accounts
        events = int(DEFAULT_DELIVERIES / per_account)
        return max(20, min(4000, events - events % 2)), None

    def say(self, text: str) -> None:
        if not self.args.json_only:
            print(f"[bench] {text}", file=sys.stderr, flush=True)

    # ---- processes ----------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, env=env or self.env, cwd=self.tmp, log_dir=self.tmp)
        self.procs.append(proc)
        return proc

    def stop(self, *stopping: Proc) -> None:
        for proc in stopping:
            proc.stop()
            if proc in self.procs:
                self.procs.remove(proc)

    def start_server(
        self, extra_env: dict[str, str] | None = None, port: int = 0
    ) -> tuple[Proc, int]:
        """A fresh server; with ``port``, a restart on that port (and metrics port)."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        if not port:
            port = procs.free_port()
            # Worker i serves its metrics on this port + i.
            self.metrics_port = procs.free_port(self.args.workers)
        extra_env = {
            "RF_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
            # Admission limits are policy, not throughput: the memory run holds up to
            # --idle-streams on few accounts. (Creates come from many technicians anyway.)
            "RF_MAX_STREAMS_PER_ACCOUNT": "1000000",
            "RF_MAX_STREAMS_PER_USER": "1000000",
            **(extra_env or {}),
        }
        proc = self.spawn(
            "server",
            [
                *(PY, "-m", "resolutionflow_cli", "server", "--grpc-addr", f"127.0.0.1:{port}"),
                *("--database-url", self.database_url, "--workers", str(self.args.workers)),
            ],
            env={**self.env, **(extra_env or {})},
        )

        def serving() -> bool:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        procs.wait_until(serving, proc, "gRPC health SERVING", timeout=90)
        if self.args.workers > 1:
            procs.wait_until(
                lambda: (
                    len(procs.tree(proc.pid)) > self.args.workers
                    and all(procs.tcp_open(self.metrics_port + i) for i in range(self.args.workers))
                ),
                proc,
                "every worker's metrics",
                timeout=90,
            )
        return proc, port

    def start_gateway(self, upstream_port: int) -> tuple[Proc, str]:
        import httpx

        port = procs.free_port()
        proc = self.spawn(
            "gateway",
            [
                *(PY, "-m", "resolutionflow_cli", "gateway", "--http-addr", f"127.0.0.1:{port}"),
                *("--upstream", f"127.0.0.1:{upstream_port}"),
            ],
        )
        url = f"http://127.0.0.1:{port}"
        procs.wait_until(
            lambda: httpx.get(url + "/healthz", timeout=2).status_code == 200,
            proc,
            "GET /healthz 200",
        )
        return proc, url

    def start_fake_llm(self, delay: float) -> tuple[Proc, int]:
        port = procs.free_port()
        proc = self.spawn(
            "fake-llm", [PY, "-m", "bench.fake_llm", "--port", str(port), "--delay", str(delay)]
        )
        procs.wait_until(lambda: procs.tcp_open(port), proc, "its port open")
        return proc, port

    def start_bare_grpc(self, templates: Path) -> tuple[Proc, int]:
        port = procs.free_port()
        proc = self.spawn(
            "bare-grpc",
            [
                *(PY, "-m", "bench.bare_grpc", "--addr", f"127.0.0.1:{port}"),
                *("--templates", str(templates)),
            ],
        )
        procs.wait_until(lambda: "READY" in proc.log_tail(5), proc, "READY")
        return proc, port

    def start_bare_sse(self, templates: Path) -> tuple[Proc, str]:
        import httpx

        port = procs.free_port()
        proc = self.spawn(
            "bare-sse",
            [PY, "-m", "bench.bare_sse", "--port", str(port), "--templates", str(templates)],
        )
        url = f"http://127.0.0.1:{port}"
        procs.wait_until(
            lambda: httpx.get(url + "/healthz", timeout=2).status_code == 200, proc, "/healthz"
        )
        return proc, url

    def start_loadgen(self, name: str, cfg: dict[str, Any]) -> LoadGenProc:
        path = self.tmp / f"{name}.json"
        path.write_text(json.dumps({**cfg, "quiet": self.args.json_only}))
        proc = Proc(
            name,
            [PY, "-m", "bench.loadgen", "--config", str(path)],
            env=self.env,
            cwd=self.tmp,
            log_dir=self.tmp,
            stdin=subprocess.PIPE,
            stdout_pipe=True,
            stderr_passthrough=not self.args.json_only,
        )
        self.procs.append(proc)
        return LoadGenProc(proc)

    # ---- the database -------------------------------------------------------------------

    def prepare_database(self) -> None:
        url = self.args.database_url
        if not url:
            self.database_url = f"sqlite+aiosqlite:///{self.tmp / 'bench.db'}"
            return
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            self.database_url = url
            return
        name = parsed.database or f"rf_bench_{self.run_id}"
        admin = parsed.set(drivername="postgresql", database="postgres")
        dsn = admin.render_as_string(hide_password=False)

        async def create() -> bool:
            import asyncpg

            conn = await asyncpg.connect(dsn)
            try:
                if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                    return False
                await conn.execute(f'CREATE DATABASE "{name}"')
                return True
            finally:
                await conn.close()

        if asyncio.run(create()):
            self.dropped_database = name
            self.say(f"created PostgreSQL database {name} (dropped at the end)")
        self.database_url = parsed.set(database=name).render_as_string(hide_password=False)
        if parsed.host in (None, "", "127.0.0.1", "localhost", "::1"):
            self._admin_dsn = dsn  # local: its backends' CPU can be read from /proc
        self._create_dsn = dsn
        self.database_name = name

    def drop_database(self) -> None:
        if self.dropped_database is None:
            return
        name = self.dropped_database

        async def drop() -> None:
            import asyncpg

            conn = await asyncpg.connect(self._create_dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        try:
            asyncio.run(drop())
        except Exception as e:
            print(f"[bench] could not drop database {name}: {e}", file=sys.stderr)

    # ---- phases -------------------------------------------------------------------------

    def accounts(self, phase: str) -> list[str]:
        return [f"bench-{self.run_id}-{phase}-{i}" for i in range(self.args.accounts)]

    def base_cfg(self, label: str, target: str, transport: str, accounts: list[str]) -> dict:
        a = self.args
        return {
            "label": label,
            "target": target,
            "transport": transport,
            "accounts": accounts,
            "subscribers": a.subscribers,
            "streams_per_channel": a.streams_per_channel,
            "rate": a.rate,
            "events": self.events,
            "duration": self.duration,
            "create_via": a.create_via,
            "client": a.client,
            "create_concurrency": a.create_concurrency,
            "create_channels": 1 if a.workers == 1 else 4 * a.workers,
            "drain_timeout": a.drain_timeout + a.assessment_delay,
            # The server is killed mid-run: a create refused meanwhile is tried again.
            "retry_creates": a.kill_server_after > 0,
        }

    def measure(
        self,
        phase: str,
        loadgen: LoadGenProc,
        servers: dict[str, Proc],
        timeout: float,
        restart: Any = None,
    ) -> dict[str, Any]:
        """Run one stream phase between ``go`` and ``measured``; CPU and memory of servers."""
        ready = loadgen.expect("ready", timeout=300)
        if ready.get("open_errors"):
            raise BenchError(f"{ready['open_errors']} subscribers could not open")
        # gRPC streams the server holds for every subscriber open: one per subscriber
        # for gRPC; through the gateway, one per account (its shared upstream streams).
        held = self.scrape_metrics().get("open_streams")
        recorders = []
        if self.args.profile:
            from bench.profile import Recorder

            out = Path(self.args.profile)
            out.mkdir(parents=True, exist_ok=True)
            for name, p in servers.items():
                recorders.append(
                    Recorder(p.pid, out / f"{phase}-{a_name(name)}.txt", subprocesses=True)
                )
            time.sleep(0.5)  # py-spy attaches
        before = {name: p.cpu() for name, p in servers.items()}
        lg_before = loadgen.proc.cpu()
        db_before = self.db_backend_cpu()
        machine_before = procs.machine_cpu_seconds()
        t0 = time.monotonic()
        sampler = procs.Sampler(servers, self.args.sample_every) if self.args.sample_every else None
        killer = None
        if restart is not None and self.args.kill_server_after > 0:
            killer = ServerKiller(self.args.kill_server_after, servers, before, restart)
        loadgen.send("go")
        if killer is not None:
            killer.start()
        loadgen.expect("measured", timeout=timeout)
        if killer is not None:
            killer.join()
        elapsed = time.monotonic() - t0
        curve = sampler.stop() if sampler else None
        for recorder in recorders:
            recorder.stop()
        after = {name: p.cpu() for name, p in servers.items()}
        lg_after = loadgen.proc.cpu()
        machine_busy = procs.machine_cpu_seconds() - machine_before
        db_after = self.db_backend_cpu()
        # PostgreSQL backends serving our database (present at the end; new ones count whole).
        db_cpu = sum(v - db_before.get(pid, 0.0) for pid, v in db_after.items())
        peaks = {name: p.peak_rss_kib() for name, p in servers.items()}
        scraped = self.scrape_metrics()
        result = loadgen.expect("result", timeout=120)
        loadgen.proc.popen.wait(60)
        cpu = {name: round(after[name] - before[name], 3) for name in servers}
        ours_cpu = sum(cpu.values()) + (lg_after - lg_before) + db_cpu
        deliveries = max(1, int(result["deliveries"]))
        result.update(
            open_s=ready.get("seconds"),
            peak_rss_kib=peaks,
            cpu_s=cpu,
            cpu_s_per_1000_deliveries=round(sum(cpu.values()) / deliveries * 1000, 4),
            # Deliveries per second per core the servers kept busy (all their processes).
            deliveries_per_core_s=round(deliveries / max(sum(cpu.values()), 1e-9)),
            cpu_busy={
                **{name: round(cpu[name] / elapsed, 2) for name in servers},
                "loadgen": round((lg_after - lg_before) / elapsed, 2),
                **({"postgres": round(db_cpu / elapsed, 2)} if db_after else {}),
                # Everything else on the machine (other users' jobs): should be near 0.
                "others": round(max(0.0, machine_busy - ours_cpu) / elapsed, 2),
            },
        )
        if scraped:
            result["server_metrics"] = scraped
        if held is not None:
            result["server_streams_held"] = held
        if killer is not None:
            result["server_killed"] = killer.report()
        if curve is not None:
            result["curve"] = curve
        return result

    def db_backend_cpu(self) -> dict[int, float]:
        """CPU seconds of each PostgreSQL backend connected to the bench's database."""
        if not self._admin_dsn:
            return {}
        name = self.database_name

        async def pids() -> list[int]:
            import asyncpg

            conn = await asyncpg.connect(self._admin_dsn)
            try:
                rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
                return [int(r["pid"]) for r in rows]
            finally:
                await conn.close()

        found: dict[int, float] = {}
        try:
            for pid in asyncio.run(pids()):
                with contextlib.suppress(OSError):
                    found[pid] = procs.cpu_seconds(pid)
        except Exception:
            return {}
        return found

    def scrape_metrics(self) -> dict[str, float]:
        """A few of the server's own Prometheus counters (when it exposes them)."""
        if not self.metrics_port:
            return {}
        import httpx

        wanted = (
            "resolutionflow_stream_catchups_total",
            "resolutionflow_events_delivered_total",
            "resolutionflow_delivery_lag_seconds_sum",
            "resolutionflow_delivery_lag_seconds_count",
        )
        found: dict[str, float] = {}
        # Per worker process: each of --workers N on its own port, summed here.
        for i in range(self.args.workers):
            try:
                url = f"http://127.0.0.1:{self.metrics_port + i}/metrics"
                text = httpx.get(url, timeout=5).text
            except httpx.HTTPError:
                return {}
            for line in text.splitlines():
                name, _, value = line.partition(" ")
                if name in wanted:
                    key = name.removeprefix("resolutionflow_")
                    found[key] = found.get(key, 0.0) + float(value)
                elif name.startswith("resolutionflow_open_streams{"):
                    found["open_streams"] = found.get("open_streams", 0.0) + float(value)
        return found

    def phase_timeout(self) -> float:
        a = self.args
        return 600.0 + (self.duration or 0) + a.drain_timeout + a.assessment_delay

    def run_ours(self) -> dict[str, Any]:
        a = self.args
        extra: dict[str, str] = {}
        started: list[Proc] = []
        try:
            if a.assessment_delay > 0:
                llm, llm_port = self.start_fake_llm(a.assessment_delay)
                started.append(llm)
                extra = {
                    "RF_ASSESSMENT_PROVIDER": "openai",
                    "RF_OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
                    "RF_OPENAI_MODEL": "bench",
                    "RF_OPENAI_TIMEOUT_SECONDS": str(a.assessment_delay + 30),
                    # Enough assessments at once that each escalation's ASSESSMENT_READY
                    # arrives about one delay after its creation (the run can end).
                    "RF_ASSESSMENT_CONCURRENCY": "256",
                }
            server, port = self.start_server(extra)
            started.append(server)
            servers = {"server": server}
            cfg = self.base_cfg(f"ours {a.transport}", "ours", a.transport, self.accounts("ours"))
            cfg["grpc_addr"] = f"127.0.0.1:{port}"
            if a.transport == "sse" or a.create_via == "http":
                gateway, url = self.start_gateway(port)
                started.append(gateway)
                servers["gateway"] = gateway
                cfg["http_url"] = url
            self.say(f"ours: {a.subscribers} {a.transport} subscribers, {a.accounts} account(s)")
            loadgen = self.start_loadgen("loadgen-ours", cfg)
            started.append(loadgen.proc)

            def restart() -> Proc:
                again, _ = self.start_server(extra, port)
                started.insert(0, again)
                return again

            return self.measure("ours", loadgen, servers, self.phase_timeout(), restart)
        finally:
            self.stop(*reversed(started))

    def run_ceiling(self, ours: dict[str, Any] | None) -> dict[str, Any]:
        a = self.args
        templates = self.tmp / "templates.json"
        templates.write_text(json.dumps(make_templates(ours["samples"] if ours else {})))
        accounts = self.accounts("ceiling")
        if ours is not None:
            counts = list(ours["events_per_account"].values())
        else:
            total = self.events or int(max(a.rate, 100) * (self.duration or 10))
            counts = [total // a.accounts] * a.accounts
        cfg = self.base_cfg(f"ceiling {a.transport}", "bare", a.transport, accounts)
        cfg["events_per_account"] = dict(zip(accounts, counts, strict=True))
        started: list[Proc] = []
        try:
            if a.transport == "grpc":
                bare, port = self.start_bare_grpc(templates)
                cfg["grpc_addr"] = f"127.0.0.1:{port}"
                kind = "bare grpc.aio (generic handler, pass-through serializers, in-memory queues)"
            else:
                bare, url = self.start_bare_sse(templates)
                cfg["http_url"] = url
                kind = "bare FastAPI + sse-starlette (in-memory queues, pre-made frames)"
            started.append(bare)
            self.say(f"ceiling: {kind}")
            loadgen = self.start_loadgen("loadgen-ceiling", cfg)
            started.append(loadgen.proc)
            result = self.measure("ceiling", loadgen, {"bare": bare}, self.phase_timeout())
            result["kind"] = kind
            return result
        finally:
            self.stop(*reversed(started))

    def run_idle(self, target: str) -> dict[str, Any]:
        """M idle streams; the RSS growth of the process holding them (over SSE, the
        gateway's: what a browser costs at the edge)."""
        a = self.args
        accounts = self.accounts(f"idle-{target}")
        cfg = self.base_cfg(f"memory {target}", target, a.transport, accounts)
        cfg.update(
            mode="idle",
            warm_streams=max(100, 2 * a.accounts),
            idle_streams=a.idle_streams,
        )
        started: list[Proc] = []
        held: float | None = None
        try:
            templates = self.tmp / "templates.json"
            if target != "ours" and not templates.exists():
                templates.write_text(json.dumps(make_templates({})))
            if target == "ours":
                server, port = self.start_server()
                started.append(server)
                cfg["grpc_addr"] = f"127.0.0.1:{port}"
                if a.transport == "sse":
                    server, cfg["http_url"] = self.start_gateway(port)
                    started.append(server)
            elif a.transport == "sse":
                server, cfg["http_url"] = self.start_bare_sse(templates)
                started.append(server)
            else:
                server, port = self.start_bare_grpc(templates)
                started.append(server)
                cfg["grpc_addr"] = f"127.0.0.1:{port}"
            loadgen = self.start_loadgen(f"loadgen-idle-{target}", cfg)
            started.append(loadgen.proc)
            warm = loadgen.expect("warm", timeout=300)
            if warm.get("open_errors"):
                raise BenchError(f"memory run ({target}): warm-up streams failed to open")
            time.sleep(1.0)
            base = server.rss_kib()
            loadgen.send("open")
            opened = loadgen.expect("opened", timeout=600)
            if opened.get("open_errors"):
                raise BenchError(
                    f"memory run ({target}): {opened['open_errors']} streams failed to open: "
                    f"{opened.get('first_error')}"
                )
            time.sleep(2.0)
            after = server.rss_kib()
            peak = server.peak_rss_kib()
            if target == "ours":
                held = self.scrape_metrics().get("open_streams")
            loadgen.send("exit")
            loadgen.expect("result", timeout=120)
            return {
                "transport": a.transport,
                "measured": server.name,
                **({"server_streams_held": held} if held is not None else {}),
                "streams": a.idle_streams,
                "open_s": opened.get("seconds"),
                "rss_before_kib": base,
                "rss_after_kib": after,
                "peak_rss_kib": peak,
                "kib_per_stream": round((after - base) / a.idle_streams, 2),
            }
        finally:
            self.stop(*reversed(started))

    # ---- the whole run ------------------------------------------------------------------

    def run(self) -> int:
        a = self.args
        out: dict[str, Any] = {
            "bench": "resolutionflow",
            "config": {
                "transport": a.transport,
                "subscribers": a.subscribers,
                "accounts": a.accounts,
                "rate": a.rate,
                "events": self.events,
                "duration": self.duration,
                "idle_streams": a.idle_streams,
                "streams_per_channel": a.streams_per_channel,
                "assessment_delay": a.assessment_delay,
                "create_via": a.create_via,
                "client": a.client,
                "workers": a.workers,
                "database": "",
            },
            "machine": procs.machine(),
        }
        ok = True
        # SIGTERM (a CI timeout, kill) unwinds like ^C, so every child is stopped below.
        signal.signal(signal.SIGTERM, _interrupted)
        try:
            self.prepare_database()
            out["config"]["database"] = self.database_url.split(":", 1)[0]
            if a.mode != "stream":
                from bench import cost

                out["config"].update(mode=a.mode, cost_seconds=a.cost_seconds)
                if a.mode == "idle":
                    out["idle_cost"] = cost.run_idle_cost(self)
                elif a.mode == "search":
                    from bench import search

                    out["search"] = search.run_search(self)
                else:
                    out["writers"] = cost.run_writers(self)
                    errors = sum(
                        r["create_errors"]
                        for rows in out["writers"]["by_wakeup"].values()
                        for r in rows
                    )
                    ok = errors == 0
            else:
                ok = self.run_streams(out)
        except Exception as e:  # a part that failed to start or died: still one JSON object
            ok = False
            out["error"] = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
        finally:
            for proc in reversed(self.procs):
                with contextlib.suppress(Exception):
                    proc.stop()
            self.drop_database()
            if a.keep_temp:
                self.say(f"logs kept in {self.tmp}")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        out["ok"] = ok
        print(json.dumps(out), flush=True)
        if not a.json_only:
            print(summary(out), file=sys.stderr, flush=True)
        return 0 if ok else 1

    def run_streams(self, out: dict[str, Any]) -> bool:
        """The stream phases (ours, ceiling) and the memory run; whether all went well."""
        a = self.args
        ok = True
        ours = None
        if not a.no_ours:
            ours = self.run_ours()
            ok = ok and bool(ours["ok"])
        ceiling = None
        if not a.no_ceiling:
            ceiling = self.run_ceiling(ours)
            ok = ok and bool(ceiling["ok"])
        if ours is not None:
            ours.pop("samples", None)
            out["ours"] = ours
        if ceiling is not None:
            ceiling.pop("samples", None)
            out["ceiling"] = ceiling
        if ours and ceiling and ceiling["deliveries_per_s"]:
            out["ratio_to_ceiling"] = round(
                ours["deliveries_per_s"] / ceiling["deliveries_per_s"], 3
            )
            # Less sensitive to other jobs on the machine than deliveries/s: how much
            # server CPU a delivery costs the ceiling, relative to ours (1 = as cheap).
            if ours["cpu_s_per_1000_deliveries"]:
                out["cpu_efficiency_vs_ceiling"] = round(
                    ceiling["cpu_s_per_1000_deliveries"] / ours["cpu_s_per_1000_deliveries"], 3
                )
        if a.idle_streams > 0:
            bare = self.run_idle("bare")
            mine = self.run_idle("ours")
            out["memory"] = {
                "idle_streams": a.idle_streams,
                "ours": mine,
                "ceiling": bare,
                "ratio_to_ceiling": round(mine["kib_per_stream"] / bare["kib_per_stream"], 3)
                if bare["kib_per_stream"] > 0
                else None,
            }
        return ok


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def summary(out: dict[str, Any]) -> str:
    lines = ["", "resolutionflow bench " + json.dumps(out["config"])]

    def row(name: str, r: dict[str, Any]) -> str:
        lat = r["latency_ms"]
        rss = ", ".join(f"{k} {v / 1024:.0f} MiB" for k, v in r["peak_rss_kib"].items())
        return (
            f"  {name:8} {r['deliveries_per_s']:>10,.0f} deliveries/s  latency p50 {lat['p50']} "
            f"p99 {lat['p99']} max {lat['max']} ms  lost {r['lost']} dup {r['duplicated']} "
            f"ooo {r['out_of_order']}  cpu {r['cpu_s_per_1000_deliveries']} s/1k  "
            f"{r['deliveries_per_core_s']:,} deliveries per core-second  "
            f"busy {r['cpu_busy']}  peak {rss}"
        )

    if "ours" in out:
        lines.append(row("ours", out["ours"]))
        lines.append(f"           create p50/p99/max ms: {out['ours']['create_ms']}")
    if "ceiling" in out:
        lines.append(row("ceiling", out["ceiling"]))
    if "ratio_to_ceiling" in out:
        lines.append(f"  ratio to ceiling: {out['ratio_to_ceiling']}")
    if "memory" in out:
        m = out["memory"]
        lines.append(
            f"  idle streams {m['idle_streams']}: ours {m['ours']['kib_per_stream']} KiB/stream, "
            f"bare {m['ceiling']['kib_per_stream']} KiB/stream, ratio {m['ratio_to_ceiling']}"
        )
    from bench import cost

    lines.extend(cost.summary(out))
    if "search" in out:
        r = out["search"]
        lines.append(
            f"  similar fixes among {r['resolved']:,} resolved: lookup ms {r['lookup_ms']} "
            f"({r['with_a_match']}/{r['queries']} found one; filled in {r['fill_seconds']} s)"
        )
    if "error" in out:
        lines.append(f"  ERROR: {out['error']}")
    lines.append("  ok" if out["ok"] else "  FAILED")
    return "\n".join(lines)


def a_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


# ---- what the ceilings send ------------------------------------------------------------


def make_templates(samples: dict[str, str]) -> dict[str, Any]:
    """Ceiling payloads from real events captured in the real run (or a synthetic stand-in).

    gRPC: per event kind, the real encoded ``Handoff`` (the bare server puts ``sequence``,
    ``type`` and ``occurred_at`` around it). SSE: the real event's JSON with its
    ``sequence`` and ``occurredAt`` replaced by placeholders.
    """
    from google.protobuf import json_format
    from resolutionflow.v1 import handoff_pb2 as pb

    kinds = (
        (pb.EVENT_TYPE_CREATED, "created"),
        (pb.EVENT_TYPE_ASSESSMENT_READY, "assessment_ready"),
    )
    grpc_templates = []
    sse_templates = []
    for number, name in kinds:
        if str(number) in samples:
            event = pb.HandoffEvent.FromString(bytes.fromhex(samples[str(number)]))
        elif name in samples:
            event = json_format.Parse(samples[name], pb.HandoffEvent())
        else:
            event = synthetic_event(number)
        grpc_templates.append([number, event.handoff.SerializeToString().hex()])
        data = json_format.MessageToDict(event)
        data["sequence"] = wire.SEQ_PLACEHOLDER
        data["occurredAt"] = wire.TS_PLACEHOLDER
        sse_templates.append([name, json.dumps(data, separators=(",", ":"), ensure_ascii=False)])
    snapshot = json.dumps(
        {
            "sequence": wire.SEQ_PLACEHOLDER,
            "type": "EVENT_TYPE_SNAPSHOT",
            "occurredAt": wire.TS_PLACEHOLDER,
        },
        separators=(",", ":"),
    )
    return {"grpc": grpc_templates, "sse": sse_templates, "sse_snapshot": snapshot}


def synthetic_event(event_type: int) -> Any:
    """A HandoffEvent shaped like the bench's escalations (used only without samples)."""
    from google.protobuf.timestamp_pb2 import Timestamp
    from resolutionflow.v1 import handoff_pb2 as pb

    now = Timestamp()
    now.GetCurrentTime()
    ready = event_type == pb.EVENT_TYPE_ASSESSMENT_READY
    handoff = pb.Handoff(
        id=str(uuid.uuid4()),
        account_id="bench-00000000-ours-0",
        session_id="bench-session-0",
        intent=pb.HANDOFF_INTENT_ESCALATE,
        status=pb.HANDOFF_STATUS_OPEN,
        priority=pb.PRIORITY_NORMAL,
        problem_summary="The VPN drops every few minutes on the office Wi-Fi",
        steps_tried=[
            pb.Step(description="Restarted the VPN client", outcome="failed"),
            pb.Step(description="Forgot and re-joined the Wi-Fi network", outcome="failed"),
        ],
        notes="Benchmark escalation",
        created_by=pb.UserRef(id="tech", name="tech"),
        assessment=pb.Assessment(
            status=pb.ASSESSMENT_STATUS_READY if ready else pb.ASSESSMENT_STATUS_PENDING,
            summary="Rule-based assessment, not an AI model. This looks like a network "
            "problem. Tried without success: Restarted the VPN client; Forgot and re-joined "
            "the Wi-Fi network. Not tried yet: check the IP configuration."
            if ready
            else "",
            suggested_first_step="Check the IP configuration" if ready else "",
            provider="heuristic (rule-based, not an AI model)" if ready else "",
            completed_at=now if ready else None,
        ),
        sla_due_at=now,
        created_at=now,
        updated_at=now,
        sequence=1,
    )
    return pb.HandoffEvent(
        sequence=1,
        type=event_type,  # type: ignore[arg-type]
        occurred_at=now,
        handoff=handoff,
    )
