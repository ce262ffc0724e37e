"""What a server costs when little happens, and what the write path does per wake-up.

``resolutionflow bench --mode idle``: one real server, one idle engineer stream per
account (``--idle-streams``, default one per ``--accounts``); server CPU (cores) and the
database's transactions per second while nothing happens, then while ``--rate`` events
per second (default 20) are spread over the accounts. Idle must cost nothing that grows
with accounts: the log check is one statement per tick, whatever the number online.

``resolutionflow bench --mode writers``: W concurrent writers (``--writers 8,32,128``)
creating escalations over ``--accounts`` accounts for ``--cost-seconds``; creates/s and
create latency per wake-up transport (``--wakeup postgres,nats,none``): ``postgres``
adds ``NOTIFY`` to every write, whose commit takes an instance-wide lock.

Transactions/s come from ``pg_stat_database`` (``xact_commit + xact_rollback`` of the
bench's database, deltas over the window; the bench's own two reads are subtracted).
PostgreSQL backends publish these counters at most once a second while busy and within
ten seconds when idle, so windows shorter than about 20 s read high or low by a few.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import procs
from bench.procs import Proc

if TYPE_CHECKING:
    from bench.profile import Recorder
    from bench.runner import Bench

# Let the streams' opening reads settle, and their statistics reach pg_stat_database
# (idle backends publish them within ten seconds); never longer than a window.
SETTLE_SECONDS = 12.0


def transactions(bench: Bench) -> int:
    """Committed + rolled-back transactions of the bench's database so far."""

    async def read() -> int:
        import asyncpg

        conn = await asyncpg.connect(bench._create_dsn)
        try:
            value = await conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
                bench.database_name,
            )
            return int(value or 0)
        finally:
            await conn.close()

    return asyncio.run(read())


class Window:
    """Server CPU and database transactions between ``start()`` and ``stop()``; with a
    ``loadgen``, also the cores of the load generator, of PostgreSQL's backends serving the
    bench's database, and of everything else on the machine (``others``: other users' jobs
    on a shared machine, which make a window noisy)."""

    def __init__(self, bench: Bench, server: Proc, loadgen: Proc | None = None) -> None:
        self.bench = bench
        self.server = server
        self.loadgen = loadgen

    def start(self) -> None:
        self.cpu = self.server.cpu()
        self.xacts = transactions(self.bench) if self.bench.database_name else 0
        if self.loadgen is not None:
            self.loadgen_cpu = self.loadgen.cpu()
            self.db_cpu = self.bench.db_backend_cpu()
            self.machine = procs.machine_cpu_seconds()
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.t0
        cpu = self.server.cpu() - self.cpu
        out: dict[str, Any] = {
            "seconds": round(elapsed, 2),
            "server_cores": round(cpu / elapsed, 4),
        }
        if self.loadgen is not None:
            machine = procs.machine_cpu_seconds() - self.machine
            loadgen = self.loadgen.cpu() - self.loadgen_cpu
            db_after = self.bench.db_backend_cpu()
            db = sum(v - self.db_cpu.get(pid, 0.0) for pid, v in db_after.items())
            out["cpu_busy"] = {
                "server": round(cpu / elapsed, 2),
                "loadgen": round(loadgen / elapsed, 2),
                **({"postgres": round(db / elapsed, 2)} if db_after else {}),
                "others": round(max(0.0, machine - cpu - loadgen - db) / elapsed, 2),
            }
        if self.bench.database_name:
            # Our own reading of the counter is a transaction too (it is not the server's).
            xacts = transactions(self.bench) - self.xacts - 1
            out["db_transactions_per_s"] = round(max(0, xacts) / elapsed, 2)
        return out


def profiled(bench: Bench, server: Proc, phase: str) -> Recorder | None:
    """With ``--profile DIR``: py-spy on the server for the window that follows."""
    if not bench.args.profile:
        return None
    from bench.profile import Recorder

    out = Path(bench.args.profile)
    out.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(server.pid, out / f"{phase}-server.txt")
    time.sleep(0.5)  # py-spy attaches
    return recorder


def wakeups(bench: Bench, default: str) -> list[str]:
    names = [w.strip() for w in (bench.args.wakeup or default).split(",") if w.strip()]
    unknown = set(names) - {"postgres", "nats", "none"}
    if unknown:
        raise SystemExit(f"bench: unknown --wakeup {sorted(unknown)}")
    return names


def run_idle_cost(bench: Bench) -> dict[str, Any]:
    a = bench.args
    seconds = a.cost_seconds
    streams = a.idle_streams or a.accounts
    rate = a.rate or 20.0
    results: dict[str, Any] = {}
    for wakeup in wakeups(bench, "postgres"):
        started: list[Proc] = []
        try:
            server, port = bench.start_server({"RF_WAKEUP": wakeup})
            started.append(server)
            cfg = bench.base_cfg(f"idle {wakeup}", "ours", "grpc", bench.accounts(f"idle-{wakeup}"))
            cfg.update(
                mode="cost",
                subscribers=streams,
                grpc_addr=f"127.0.0.1:{port}",
                rate=rate,
                events=None,
                duration=seconds,
            )
            bench.say(f"idle cost ({wakeup}): opening {streams} streams over {a.accounts} accounts")
            loadgen = bench.start_loadgen(f"loadgen-idle-{wakeup}", cfg)
            started.append(loadgen.proc)
            ready = loadgen.expect("ready", timeout=1800)
            if ready.get("open_errors"):
                raise RuntimeError(
                    f"{ready['open_errors']} streams failed to open: {ready.get('first_error')}"
                )
            time.sleep(min(SETTLE_SECONDS, seconds))
            window = Window(bench, server)
            bench.say(f"idle cost ({wakeup}): {seconds:g} s with nothing happening")
            recorder = profiled(bench, server, f"idle-{wakeup}")
            window.start()
            time.sleep(seconds)
            idle = window.stop()
            if recorder:
                recorder.stop()
            bench.say(f"idle cost ({wakeup}): {seconds:g} s at {rate:g} events/s")
            window.start()
            loadgen.send("go")
            created = loadgen.expect("created", timeout=seconds + 600)
            busy = window.stop()
            busy.update(
                events_per_s=rate,
                creates=created["creates"],
                create_errors=created["create_errors"],
                deliveries=created["deliveries"],
            )
            loadgen.send("exit")
            loadgen.expect("result", timeout=120)
            results[wakeup] = {
                "streams": ready["streams"],
                "open_s": ready["seconds"],
                "idle": idle,
                "busy": busy,
            }
        finally:
            bench.stop(*reversed(started))
    return {"accounts": a.accounts, "streams": streams, "by_wakeup": results}


def run_writers(bench: Bench) -> dict[str, Any]:
    a = bench.args
    seconds = a.cost_seconds
    counts = [int(w) for w in a.writers.split(",") if w.strip()]
    results: dict[str, Any] = {}
    for wakeup in wakeups(bench, "postgres,nats,none"):
        started: list[Proc] = []
        try:
            server, port = bench.start_server({"RF_WAKEUP": wakeup})
            started.append(server)
            rows = []
            for writers in counts:
                accounts = bench.accounts(f"writers-{wakeup}-{writers}")
                cfg = bench.base_cfg(f"writers {wakeup} W={writers}", "ours", "grpc", accounts)
                cfg.update(
                    mode="cost",
                    subscribers=0,
                    grpc_addr=f"127.0.0.1:{port}",
                    rate=0,
                    events=None,
                    duration=seconds,
                    create_concurrency=writers,
                )
                loadgen = bench.start_loadgen(f"loadgen-writers-{wakeup}-{writers}", cfg)
                loadgen.expect("ready", timeout=120)
                window = Window(bench, server, loadgen.proc)
                bench.say(f"writers ({wakeup}): {writers} in flight for {seconds:g} s")
                recorder = profiled(bench, server, f"writers-{wakeup}-{writers}")
                window.start()
                loadgen.send("go")
                created = loadgen.expect("created", timeout=seconds + 600)
                measured = window.stop()
                if recorder:
                    recorder.stop()
                loadgen.send("exit")
                loadgen.expect("result", timeout=120)
                bench.stop(loadgen.proc)
                rows.append(
                    {
                        "writers": writers,
                        "creates_per_s": round(
                            created["creates"] / max(created["seconds"], 1e-9), 1
                        ),
                        "create_ms": created["create_ms"],
                        "create_errors": created["create_errors"],
                        "first_create_error": created["first_create_error"],
                        **measured,
                    }
                )
                row = rows[-1]
                # Server CPU per escalation (create and assessment, both transactions).
                row["server_cpu_ms_per_escalation"] = round(
                    row["server_cores"] * 1000 / max(row["creates_per_s"], 1e-9), 3
                )
            results[wakeup] = rows
        finally:
            bench.stop(*reversed(started))
    return {"accounts": a.accounts, "by_wakeup": results}


def summary(out: dict[str, Any]) -> list[str]:
    lines = []
    if "idle_cost" in out:
        for wakeup, r in out["idle_cost"]["by_wakeup"].items():
            lines.append(
                f"  idle ({wakeup}, {r['streams']} streams): {r['idle']}  "
                f"at {r['busy']['events_per_s']:g} events/s: {r['busy']}"
            )
    if "writers" in out:
        for wakeup, rows in out["writers"]["by_wakeup"].items():
            for row in rows:
                lines.append(
                    f"  writers ({wakeup}) W={row['writers']}: {row['creates_per_s']} creates/s, "
                    f"p50 {row['create_ms']['p50']} p99 {row['create_ms']['p99']} ms, "
                    f"server {row['server_cores']} cores "
                    f"({row['server_cpu_ms_per_escalation']} ms per escalation), "
                    f"{row.get('db_transactions_per_s', '-')} db transactions/s, "
                    f"errors {row['create_errors']}, cores busy {row.get('cpu_busy', '-')}"
                )
    return lines
