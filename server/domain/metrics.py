"""Escalation metrics: what managers read, and the rules for the window they ask about.

Counts are by cohort: the escalations *created* in the window, and what has happened to
them since (picked up at least once, resolved, cancelled, breached their SLA). Time to
pickup runs to the first pickup. Percentiles are nearest-rank: p50 of 1..10 is 5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from server.domain.types import Priority
from server.errors import FieldViolation, InvalidArgument

DEFAULT_WINDOW = timedelta(days=7)
MAX_WINDOW = timedelta(days=366)


@dataclass(frozen=True)
class DurationStats:
    count: int = 0
    p50_seconds: float = 0.0
    p90_seconds: float = 0.0
    max_seconds: float = 0.0


@dataclass(frozen=True)
class PriorityMetrics:
    priority: Priority
    created: int = 0
    picked_up: int = 0
    resolved: int = 0
    open_now: int = 0
    sla_breached: int = 0
    time_to_pickup: DurationStats = DurationStats()


@dataclass(frozen=True)
class DayMetrics:
    date: str
    created: int = 0
    picked_up: int = 0
    resolved: int = 0


@dataclass(frozen=True)
class EscalationMetrics:
    start_time: datetime
    end_time: datetime
    created: int = 0
    picked_up: int = 0
    resolved: int = 0
    cancelled: int = 0
    open_now: int = 0
    oldest_waiting_seconds: float = 0.0
    time_to_pickup: DurationStats = DurationStats()
    time_to_resolve: DurationStats = DurationStats()
    sla_breached: int = 0
    by_priority: list[PriorityMetrics] = field(default_factory=list)
    by_day: list[DayMetrics] = field(default_factory=list)
    # Working together, over the same cohort (events kept in the log or its archive).
    collaboration: CollaborationMetrics = field(default_factory=lambda: CollaborationMetrics())


@dataclass(frozen=True)
class CollaborationMetrics:
    transfers: int = 0
    comments: int = 0
    # Escalations reopened at least once, and that as a share of those resolved at least
    # once (0 when none was resolved).
    reopened: int = 0
    reopen_rate: float = 0.0
    comments_per_escalation: float = 0.0


def metrics_window(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """Defaults: the 7 days up to now. An inverted or over-long window is refused."""
    end = end or now
    if start is None:
        # An end_time in the first week of year 1 has no 7 days before it: clamp.
        earliest = datetime.min.replace(tzinfo=end.tzinfo)
        start = end - DEFAULT_WINDOW if end - earliest > DEFAULT_WINDOW else earliest
    if start >= end:
        raise InvalidArgument([FieldViolation("start_time", "must be before end_time")])
    if end - start > MAX_WINDOW:
        raise InvalidArgument(
            [FieldViolation("start_time", f"window longer than {MAX_WINDOW.days} days")]
        )
    return start, end
