"""Runs assessments after commit, a few at a time, and records each as an event.

Creation never waits for this: ``submit`` only queues the new handoff (as committed, so
no read is needed). The outcome is saved with a conditional update (only while still
PENDING) in the same transaction as its ASSESSMENT_READY event, so a replica that finds the
same PENDING row after a crash cannot record it twice. PENDING rows are queued again at
start-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

from server import telemetry
from server.assessment.providers import AssessmentFailed, Provider
from server.db.database import Database
from server.domain.types import Assessment, AssessmentStatus, Handoff
from server.models import handoffs

log = logging.getLogger(__name__)


class AssessmentWorker:
    def __init__(
        self,
        db: Database,
        provider: Provider,
        clock: Callable[[], datetime],
        *,
        concurrency: int,
        timeout: float,
    ) -> None:
        self.db = db
        self.provider = provider
        self.clock = clock
        self.concurrency = concurrency
        self.timeout = timeout
        self.queue: asyncio.Queue[Handoff] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []
        self._saving: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        async with self.db.read() as s:
            pending = await handoffs.pending_assessments(s)
        for handoff in pending:
            self.queue.put_nowait(handoff)
        if pending:
            log.info("resuming %d pending assessments", len(pending))
        self.tasks = [
            asyncio.create_task(self._work(), name=f"assessment-{i}")
            for i in range(self.concurrency)
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*self._saving, return_exceptions=True)

    def submit(self, handoff: Handoff) -> None:
        self.queue.put_nowait(handoff)

    async def _work(self) -> None:
        while True:
            handoff = await self.queue.get()
            try:
                await self.run(handoff)
            except Exception:
                # Still PENDING in the database: the next start-up retries it.
                log.exception("assessment of %s could not be saved", handoff.id)

    async def run(self, handoff: Handoff) -> None:
        handoff_id = handoff.id
        started = time.monotonic()
        try:
            verdict = await asyncio.wait_for(self.provider.assess(handoff), self.timeout)
            result = Assessment(
                status=AssessmentStatus.READY,
                summary=verdict.summary,
                suggested_first_step=verdict.suggested_first_step,
                provider=self.provider.name,
                completed_at=self.clock(),
            )
        except (AssessmentFailed, TimeoutError, Exception) as e:
            reason = (
                e.reason
                if isinstance(e, AssessmentFailed)
                else f"timed out after {self.timeout:g}s"
                if isinstance(e, TimeoutError)
                else f"provider error: {type(e).__name__}"
            )
            log.warning("assessment of %s failed: %s", handoff_id, reason)
            result = Assessment(
                status=AssessmentStatus.FAILED,
                provider=self.provider.name,
                failure_reason=reason,
                completed_at=self.clock(),
            )
        telemetry.ASSESSMENT_SECONDS.observe(time.monotonic() - started)
        telemetry.ASSESSMENTS.labels(result.status.value.lower()).inc()
        # Shielded, and awaited by stop(): stopping must not cut a write transaction
        # half-way (on SQLite that can leave the write lock with an unclosed connection).
        save = asyncio.ensure_future(self._save(handoff_id, result))
        self._saving.add(save)
        save.add_done_callback(self._saving.discard)
        await asyncio.shield(save)

    async def _save(self, handoff_id: str, result: Assessment) -> None:
        async with self.db.write() as s:
            await handoffs.save_assessment(s, handoff_id, result, self.clock())
