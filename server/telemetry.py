"""Prometheus metrics of the server process.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` in base units) and
no label ever carries an account or user id: those are unbounded and would leak tenants
into a shared monitoring system.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from server.domain.types import Event

PREFIX = "resolutionflow_"

RPCS = Counter(
    PREFIX + "rpcs_total", "RPCs finished, by method and status code", ["method", "code"]
)
RPC_SECONDS = Histogram(
    PREFIX + "rpc_duration_seconds",
    "Duration of unary RPCs",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
OPEN_STREAMS = Gauge(PREFIX + "open_streams", "Streams open now, by method", ["method"])
EVENTS_APPENDED = Counter(
    PREFIX + "events_appended_total", "Events committed to the log, by type", ["type"]
)
EVENTS_DELIVERED = Counter(PREFIX + "events_delivered_total", "Events sent on streams")
CATCHUPS = Counter(
    PREFIX + "stream_catchups_total",
    "Times a stream fell behind its buffer and read the log by itself",
)
DELIVERY_LAG = Histogram(
    PREFIX + "delivery_lag_seconds",
    "From an event's commit to its hand-off to the streams of this process",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LISTEN_RECONNECTS = Counter(
    PREFIX + "listen_reconnects_total",
    "Wake-up connections (PostgreSQL LISTEN or NATS) (re)established",
)
ASSESSMENTS = Counter(PREFIX + "assessments_total", "Assessments finished, by outcome", ["outcome"])
ASSESSMENT_SECONDS = Histogram(
    PREFIX + "assessment_duration_seconds",
    "Time a provider took for one assessment",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
)
WORKER = Gauge(
    PREFIX + "worker",
    "1 for this process: its worker index (0 without --workers) and pid; metrics are per "
    "worker process, each on its own port",
    ["index", "pid"],
)
SLA_EVENTS = Counter(PREFIX + "sla_events_total", "SLA warnings and breaches", ["kind"])


def events_committed(appended: list[Event]) -> None:
    for event in appended:
        event_type = event.type.value
        EVENTS_APPENDED.labels(event_type).inc()
        if event_type.startswith("SLA_"):
            SLA_EVENTS.labels(event_type.removeprefix("SLA_").lower()).inc()
