"""Per-user rate limits: token buckets kept in memory, one per (account, user)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from server.errors import ResourceExhausted

MAX_BUCKETS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``burst`` calls at once, refilled at ``per_minute``; over it: ResourceExhausted."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        what: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self.what = what
        self.clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def take(self, account_id: str, user_id: str) -> None:
        now = self.clock()
        key = (account_id, user_id)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < 1:
            wait = (1 - bucket.tokens) / self.rate
            raise ResourceExhausted(
                f"too many {self.what}: at most {self.burst} at once and "
                f"{self.rate * 60:g} per minute; retry in {wait:.1f}s",
                retry_after=wait,
            )
        bucket.tokens -= 1

    def _forget_full(self, now: float) -> None:
        """Buckets that have refilled carry no state worth keeping."""
        for key, b in list(self._buckets.items()):
            if b.tokens + (now - b.updated) * self.rate >= self.burst:
                del self._buckets[key]
