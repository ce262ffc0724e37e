"""The ceilings' fan-out: one producer, one in-memory queue per subscriber, same bytes.

Each event is built once (like the real server encodes once) and the same ``bytes``
object is put on every queue of its account. With ``rate`` 0 the producer runs as fast as
the subscribers drain, staying at most ``window`` events ahead of the slowest one (the
real server's per-stream buffer is 256 too); with a rate it paces itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable

WINDOW = 256
BATCH = 16


class BareHub:
    def __init__(self, build: Callable[[int, int, float], bytes]) -> None:
        # build(sequence, index of the event within its account, now) -> message bytes
        self.build = build
        self.subs: dict[str, set[asyncio.Queue[bytes]]] = defaultdict(set)
        self.task: asyncio.Task[None] | None = None

    def subscribe(self, account: str) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.subs[account].add(queue)
        return queue

    def unsubscribe(self, account: str, queue: asyncio.Queue[bytes]) -> None:
        self.subs[account].discard(queue)

    def start(self, rate: float, counts: dict[str, int]) -> None:
        self.task = asyncio.create_task(self.produce(rate, counts))

    async def _below_window(self) -> None:
        """Back-pressure at rate 0: wait (polling) until no queue holds WINDOW events."""
        await asyncio.sleep(0)
        while any(q.qsize() >= WINDOW for qs in self.subs.values() for q in qs):  # noqa: ASYNC110
            await asyncio.sleep(0.001)

    async def produce(self, rate: float, counts: dict[str, int]) -> None:
        order: list[str] = []
        left = dict(counts)
        while any(left.values()):
            for account in counts:
                if left[account]:
                    left[account] -= 1
                    order.append(account)
        sequences = dict.fromkeys(counts, 0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for k, account in enumerate(order):
            if rate > 0:
                delay = started + k / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif k % BATCH == 0:
                await self._below_window()
            sequences[account] += 1
            sequence = sequences[account]
            data = self.build(sequence, sequence - 1, time.time())
            for queue in self.subs[account]:
                queue.put_nowait(data)
