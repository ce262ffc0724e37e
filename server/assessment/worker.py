"""Runs assessments after commit, a few at a time, and records each as an event.

Creation never waits for this: ``submit`` only queues the new handoff (as committed, so
no read is needed). The outcome is saved with a conditional update (only while still
PENDING) in the same transaction as its ASSESSMENT_READY event, so it is recorded once.

Each pending assessment is claimed in the database for a lease (the creating replica
holds it from the insert on): only the holder asks the provider, so replicas starting
together, or one finding another's pending rows, never assess the same handoff twice. A
save that fails is retried while the process runs, with a backoff bounded by
``assessment_retry_seconds``, for as long as the lease lasts; after that (or if the
holder died) any replica's periodic sweep claims it again. Stopping gives claims back, so
a restart picks them up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

from server import telemetry
from server.assessment.providers import MAX_PAST_FIXES, AssessmentFailed, Provider
from server.db.database import Database
from server.domain.types import Assessment, AssessmentStatus, Handoff
from server.models import batch, handoffs, search

log = logging.getLogger(__name__)
T = TypeVar("T")

# The first pause before saving an outcome again; it doubles up to the retry interval.
FIRST_SAVE_RETRY_SECONDS = 0.2
TAKE_BACK_LIMIT = 10_000
# At most this many queued handoffs are taken at once (one read of their past fixes).
BULK = 32


class AssessmentWorker:
    def __init__(
        self,
        db: Database,
        provider: Provider,
        clock: Callable[[], datetime],
        *,
        concurrency: int,
        timeout: float,
        lease: float | None = None,
        retry_every: float = 5.0,
        save: Callable[[str, Assessment], Awaitable[Handoff | None]] | None = None,
    ) -> None:
        """``save(handoff_id, outcome)`` records an outcome with its event (default: a
        transaction of its own; the server shares transactions with creates:
        ``Core.save_assessment``)."""
        self.db = db
        self.save = save or self._save_alone
        self.provider = provider
        self.clock = clock
        self.concurrency = concurrency
        # Assessments running at once: the bound on calls to a provider; a local one (in
        # this process, no I/O: the heuristic) calls nothing and assesses a bulk at once.
        self.capacity = max(concurrency, BULK) if provider.local else concurrency
        self._room = asyncio.Semaphore(self.capacity)
        self.timeout = timeout
        self.lease = lease if lease is not None else timeout + 30
        self.retry_every = retry_every
        self.queue: asyncio.Queue[Handoff] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._saving: set[asyncio.Future[Any]] = set()
        # Claims this process holds (queued or running): handoff id -> lease end.
        self._held: dict[str, datetime] = {}
        self.owner = ""
        self._stop = asyncio.Event()
        # Set when the last sweep filled every free worker: more may be waiting, so the
        # sweep runs again as soon as a worker is free instead of at its next interval.
        self._backlog = False
        self._wake = asyncio.Event()

    async def start(self, owner: str = "") -> None:
        """Take back this server's own earlier claims, then start working and sweeping.

        ``owner`` names this server ("host:port"). Its port is bound exclusively, so no
        other live server has this name: claims under it are from a previous run of this
        server (killed before it could give them back) and are taken back at once.
        Call before serving, so no new handoff is created meanwhile.
        """
        self.owner = owner
        self._stop.clear()
        if owner:
            await self.claim_due(take_back_own=True)
        self._spawn(self._dispatch(), "assessment-dispatch")
        self._sweeper = asyncio.create_task(self._sweep(), name="assessment-sweep")

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        # The sweep finishes the claim it is in (never cut half-way) and ends by itself.
        if self._sweeper is not None:
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*self._saving, return_exceptions=True)
        if self._held:
            try:
                async with self.db.write() as s:
                    await handoffs.release_assessments(s, self._held)
            except Exception as e:
                # The leases run out by themselves; this only makes the hand-over quicker.
                log.warning("could not give back %d assessment claims: %s", len(self._held), e)
            self._held.clear()

    def submit(self, handoff: Handoff) -> None:
        """Queue a handoff this replica just created (it holds the claim since the insert)."""
        self._held[handoff.id] = handoff.created_at + timedelta(seconds=self.lease)
        self.queue.put_nowait(handoff)

    async def claim_due(self, *, take_back_own: bool = False) -> int:
        """Claim pending assessments nobody holds, as many as there is room for."""
        free = self.capacity - len(self._held)
        if free <= 0:
            self._backlog = True
            return 0
        now = self.clock()
        lease_until = now + timedelta(seconds=self.lease)
        async with self.db.write() as s:
            claimed = await handoffs.claim_assessments(
                s,
                now,
                lease_until,
                # Our own earlier claims all come back to us; queued ones past their lease
                # are renewed before they run.
                TAKE_BACK_LIMIT if take_back_own else free,
                set(self._held),
                self.owner,
                take_back_own=take_back_own,
            )
        self._backlog = len(claimed) == free
        for handoff in claimed:
            self._held[handoff.id] = lease_until
            self.queue.put_nowait(handoff)
        if claimed:
            log.info("claimed %d pending assessments", len(claimed))
        return len(claimed)

    async def _sweep(self) -> None:
        while not self._stop.is_set():
            try:
                await self.claim_due()
            except Exception as e:
                log.warning("could not look for pending assessments: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.retry_every)
            self._wake.clear()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _dispatch(self) -> None:
        """Take queued handoffs as there is room, up to ``BULK`` at once: their past fixes
        are read together (one statement), and outcomes that are ready together are saved
        together (``Database.write_batched``)."""
        while True:
            await self._room.acquire()
            bulk = [await self.queue.get()]
            while len(bulk) < BULK and not self.queue.empty() and not self._room.locked():
                await self._room.acquire()
                bulk.append(self.queue.get_nowait())
            self._spawn(self._assess(bulk), "assessment")

    async def _assess(self, bulk: list[Handoff]) -> None:
        """Assess the bulk; each one's room is given back as it finishes."""
        ours: list[Handoff] = []
        for handoff in bulk:
            try:
                still_ours = await self._still_ours(handoff.id)
            except Exception:
                log.exception("assessment of %s failed unexpectedly", handoff.id)
                still_ours = False
            if still_ours:
                ours.append(handoff)
            else:
                self._done(handoff)
        similar = await self._past_fixes(ours)  # never raises: none found on failure
        await asyncio.gather(*(self._one(h, similar.get(h.id, ())) for h in ours))

    async def _one(self, handoff: Handoff, similar: tuple[Handoff, ...]) -> None:
        try:
            await self.run(handoff, similar)
        except Exception:
            log.exception("assessment of %s failed unexpectedly", handoff.id)
        self._done(handoff)

    def _done(self, handoff: Handoff) -> None:
        # Not on cancellation: stop() gives back the claims still held.
        self._held.pop(handoff.id, None)
        self._room.release()
        if self._backlog:
            self._wake.set()

    async def _still_ours(self, handoff_id: str) -> bool:
        """A claim that ran out while queued is renewed first, unless someone took it."""
        held_until = self._held.get(handoff_id)
        if held_until is None:
            return False
        now = self.clock()
        if held_until - now > timedelta(seconds=self.timeout + 5):
            return True
        lease_until = now + timedelta(seconds=self.lease)

        async def renew() -> bool:
            async with self.db.write() as s:
                return await handoffs.renew_assessment_lease(s, handoff_id, held_until, lease_until)

        renewed = await self._uncut(renew())
        if renewed:
            self._held[handoff_id] = lease_until
        return renewed

    async def run(self, handoff: Handoff, similar: tuple[Handoff, ...]) -> None:
        """Assess ``handoff`` (``similar``: the account's closest past fixes) and save it."""
        handoff_id = handoff.id
        started = time.monotonic()
        try:
            assessing = self.provider.assess(handoff, similar)
            # A local provider does no I/O: it cannot outlast the bound, nor be cut by it.
            verdict = await (
                assessing if self.provider.local else asyncio.wait_for(assessing, self.timeout)
            )
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
        await self._uncut(self._save_with_retries(handoff_id, result))

    async def _past_fixes(self, bulk: list[Handoff]) -> dict[str, tuple[Handoff, ...]]:
        """Each handoff's account's closest resolved escalations (only its own: each
        search is scoped to ``handoff.account_id``), by handoff id. An assessment without
        them is still an assessment, so a failed lookup gives none rather than failing it."""
        if not bulk:
            return {}
        try:
            async with self.db.query() as conn:
                found = await search.similar_resolved_many(conn, bulk, MAX_PAST_FIXES)
        except Exception as e:
            log.warning("past fixes for %d assessments not read: %s", len(bulk), e)
            return {}
        return {handoff_id: tuple(fixes) for handoff_id, fixes in found.items()}

    async def _uncut(self, write: Coroutine[Any, Any, T]) -> T:
        """Run a write shielded, and awaited by stop(): stopping must not cut a write
        transaction half-way (on SQLite that can leave the write lock with an unclosed
        connection)."""
        future = asyncio.ensure_future(write)
        self._saving.add(future)
        future.add_done_callback(self._saving.discard)
        return await asyncio.shield(future)

    async def _save_with_retries(self, handoff_id: str, result: Assessment) -> None:
        """Save the outcome, retrying with bounded backoff while our claim lasts."""
        pause = FIRST_SAVE_RETRY_SECONDS
        while True:
            try:
                await self._save(handoff_id, result)
                return
            except Exception as e:
                held_until = self._held.get(handoff_id)
                if (
                    self._stop.is_set()
                    or held_until is None
                    or (self.clock() + timedelta(seconds=pause) >= held_until)
                ):
                    # Still PENDING: whoever claims it next (any replica) assesses it again.
                    log.warning(
                        "assessment of %s could not be saved (%s); left for a later claim",
                        handoff_id,
                        e,
                    )
                    return
                log.warning(
                    "assessment of %s could not be saved (%s); retrying in %.1fs",
                    handoff_id,
                    e,
                    pause,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), pause)
            pause = min(pause * 2, self.retry_every)

    async def _save(self, handoff_id: str, result: Assessment) -> None:
        await self.save(handoff_id, result)

    async def _save_alone(self, handoff_id: str, result: Assessment) -> Handoff | None:
        async with self.db.write() as s:
            return await batch.save_assessment(s, handoff_id, result, self.clock())
