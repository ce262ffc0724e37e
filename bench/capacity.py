"""A capacity model: what a load costs, from measured per-unit costs, and what to add first.

``python -m bench.capacity --accounts 10000 --engineers 3 --escalations-per-s 5`` prints,
for a given load, the CPU of the server processes and gateways, the database's
transactions per second and each process's memory, then how many processes that takes
and which resource runs out first. The unit costs default to this repository's measured
figures (README, Performance); pass your own from ``resolutionflow bench`` on your
hardware. A model, not a promise: it is linear in each unit and ignores contention.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Load:
    accounts: int = 1000  # accounts with someone watching
    engineers: float = 2  # watching streams per such account
    escalations_per_s: float = 1.0  # over all accounts
    events_per_escalation: float = 4  # CREATED, ASSESSMENT_READY, PICKED_UP, RESOLVED
    sse_share: float = 0.5  # streams that come through the gateway (the web page)
    replicas: int = 2  # server processes
    gateways: int = 1  # gateway processes (each holds one upstream stream per account)
    wakeup: str = "postgres"  # postgres | nats | none
    log_poll_seconds: float = 1.0
    sla_check_seconds: float = 1.0
    health_check_seconds: float = 2.0


@dataclass(frozen=True)
class Costs:
    # Measured 2026-11-30 on the README's 2-core machine, PostgreSQL ("Figures of
    # 2026-11-30"). Server CPU seconds per event delivered to one stream (gRPC fan-out,
    # 1,000 streams: 28-33 ms per 1,000 deliveries, writes included).
    server_per_delivery: float = 30e-6
    # Gateway CPU seconds per SSE delivery (1,000 browsers, second round: the gateway at
    # 0.74 of a core for 93,000 deliveries/s, frames written straight to the connections).
    gateway_per_delivery: float = 8e-6
    # Server CPU seconds per event written (an escalation, create and assessment with
    # batched writes, about 2.8 ms, is two events).
    server_per_event_written: float = 1.4e-3
    # Server CPU seconds for a replica that did not write an event to read it back once.
    server_per_event_read: float = 0.5e-3
    # Server cores per idle stream: a heartbeat of about 70 µs every 30 s (an unchanged
    # position is told every RF_IDLE_HEARTBEAT_SECONDS, two 15 s sweeps).
    server_per_idle_stream: float = 2.3e-6
    # Server cores per online account: only the log check's full comparison (about 6 ms
    # at 10,000 accounts) every 30 s; its one-second ticks read only what moved.
    server_per_online_account: float = 0.02e-6
    # Server cores for the periodic jobs whatever the load (10,000 idle accounts: 0.049
    # core in all, 2026-11-30 second round, less the two terms above).
    server_idle_base: float = 0.026
    # Database transactions per second per replica besides the log check, SLA clock,
    # health check and LISTEN ping (presence, assessment and webhook sweeps, pool pings:
    # 7.6 measured in all at 10,000 idle accounts).
    periodic_other_per_s: float = 4.9
    # Server memory per open stream (10,000 idle streams: 29 KiB each) and at rest.
    kib_per_stream: float = 29.0
    server_base_mib: float = 100.0
    # What one Python process can use (one core, with headroom for bursts).
    usable_cores: float = 0.7
    # Database transactions/s that one PostgreSQL instance sustains for this workload,
    # and notifying commits/s before the NOTIFY commit lock dominates (set from
    # `resolutionflow bench --mode writers` on the target database).
    database_tps: float = 5000.0
    notify_commits_per_s: float = 1000.0


def model(load: Load, costs: Costs = Costs()) -> dict[str, float | int | str]:
    streams = load.accounts * load.engineers
    events_per_s = load.escalations_per_s * load.events_per_escalation
    # Each event goes to every stream of its account (an upper bound: filters skip some).
    deliveries_per_s = events_per_s * load.engineers
    # Every replica that did not write an event reads it once (its feed for the account),
    # whatever the wake-up; only where it has watchers, which the model assumes everywhere.
    reads_per_s = events_per_s * (load.replicas - 1)
    # Browsers share their gateway's one upstream stream per account: the server delivers
    # each event once per gRPC stream and once per gateway that serves the account.
    grpc_streams_per_account = load.engineers * (1 - load.sse_share)
    upstreams_per_account = load.gateways if load.sse_share > 0 else 0
    server_streams = load.accounts * (grpc_streams_per_account + upstreams_per_account)
    server_deliveries_per_s = events_per_s * (grpc_streams_per_account + upstreams_per_account)
    server_cores = (
        server_deliveries_per_s * costs.server_per_delivery
        + events_per_s * costs.server_per_event_written
        + reads_per_s * costs.server_per_event_read
        + server_streams * costs.server_per_idle_stream
        # Each replica's log check covers the accounts online on it: at most all of them.
        + load.accounts * load.replicas * costs.server_per_online_account
        + load.replicas * costs.server_idle_base
    )
    gateway_cores = deliveries_per_s * load.sse_share * costs.gateway_per_delivery
    # Periodic transactions per replica: log check, SLA clock, health ping, LISTEN ping.
    periodic = 1 / load.log_poll_seconds + 1 / load.sla_check_seconds
    periodic += 1 / load.health_check_seconds + (0.2 if load.wakeup == "postgres" else 0.0)
    periodic += costs.periodic_other_per_s
    writes_per_s = events_per_s  # one write transaction per event
    database_tps = writes_per_s + reads_per_s + periodic * load.replicas
    replicas_needed = max(1, math.ceil(server_cores / costs.usable_cores))
    gateways_needed = max(1, math.ceil(gateway_cores / costs.usable_cores))
    server_mib = (
        costs.server_base_mib + server_streams / load.replicas * costs.kib_per_stream / 1024
    )
    pressures = {
        "server processes": server_cores / (load.replicas * costs.usable_cores),
        "gateway processes": gateway_cores / costs.usable_cores,
        "PostgreSQL": database_tps / costs.database_tps,
    }
    if load.wakeup == "postgres":
        pressures["NOTIFY commit lock"] = writes_per_s / costs.notify_commits_per_s
    first = max(pressures, key=lambda k: pressures[k])
    advice = {
        "server processes": "add server replicas (streams and deliveries spread over them)",
        "gateway processes": "add gateway processes behind the load balancer",
        "PostgreSQL": "a larger PostgreSQL first; more replicas add reads of each event",
        "NOTIFY commit lock": "switch RF_WAKEUP to nats (no NOTIFY in the write)",
    }[first]
    return {
        "streams": round(streams),
        "server_streams": round(server_streams),
        "events_per_s": round(events_per_s, 2),
        "deliveries_per_s": round(deliveries_per_s, 2),
        "server_cores_total": round(server_cores, 3),
        "server_cores_per_replica": round(server_cores / load.replicas, 3),
        "server_replicas_needed": replicas_needed,
        "server_mib_per_replica": round(server_mib, 1),
        "gateway_cores": round(gateway_cores, 3),
        "gateways_needed": gateways_needed,
        "database_transactions_per_s": round(database_tps, 1),
        "database_periodic_per_replica": round(periodic, 2),
        "busiest": first,
        "busiest_load": round(pressures[first], 3),
        "add_first": advice,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity", description=__doc__.split("\n\n")[0]
    )
    for group in (Load(), Costs()):
        for f in fields(group):
            default = getattr(group, f.name)
            parser.add_argument(
                "--" + f.name.replace("_", "-"),
                type=type(default),
                default=default,
                help=f"default {default}",
            )
    args = vars(parser.parse_args(argv))
    load = Load(**{f.name: args[f.name] for f in fields(Load)})
    costs = Costs(**{f.name: args[f.name] for f in fields(Costs)})
    print("load:", ", ".join(f"{k}={v}" for k, v in asdict(load).items()))
    for key, value in model(load, costs).items():
        print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
