"""The application core: each use case in one transaction, independent of any transport.

Servicers call these methods with an authenticated ``Caller``. Who may do what is
decided in server/domain/policy.py, applied in two places: the role a use case needs is
checked by the transport before the request is read (its table derives from
``policy.ROLES``), and everything that depends on the handoff (its account, its creator,
its holder) is checked here, through ``policy.scope`` on every read and
``policy.authorize`` on every transition. Storage applies the decisions and makes none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from server.db.database import Database
from server.domain import policy, rules
from server.domain.context import HandoffContext, build_context
from server.domain.limits import RateLimiter
from server.domain.metrics import EscalationMetrics, metrics_window
from server.domain.rules import Action
from server.domain.types import (
    AccountUser,
    Caller,
    Comment,
    Event,
    Handoff,
    Intent,
    NewHandoff,
    Priority,
    QueueSnapshot,
    Status,
)
from server.errors import DomainError
from server.models import collab, handoffs, metrics, search
from server.settings import Settings

log = logging.getLogger(__name__)
# Users remembered as recorded, per process; past this many the memory starts over (a
# few extra upserts, never a wrong answer).
_SEEN_MAX = 100_000


# At most this many creates share a transaction (the counter row of an account is held
# until its commit; a batch is as long as its slowest statement times its size).
_CREATES_PER_TRANSACTION = 32
_PendingCreate = tuple[Caller, NewHandoff, "asyncio.Future[tuple[Handoff, bool]]"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Core:
    def __init__(
        self, db: Database, settings: Settings, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        # Who holds the assessments of new handoffs ("host:port"), set once bound.
        self.assessment_owner = ""
        # Called after a new handoff is committed (the assessment worker listens here).
        self.created_listeners: list[Callable[[Handoff], None]] = []
        self.create_limit = RateLimiter(
            settings.creates_per_minute, settings.create_burst, "new handoffs"
        )
        # (account, user) -> (when recorded, monotonic seconds; name; role) in this process.
        self._seen: dict[tuple[str, str], tuple[float, str, str]] = {}
        self._recording: dict[tuple[str, str], asyncio.Future[None]] = {}
        # Creates waiting for the next shared transaction, and the task committing them.
        self._creates: list[_PendingCreate] = []
        self._committing: asyncio.Future[None] | None = None

    async def create_handoff(self, caller: Caller, new: NewHandoff) -> tuple[Handoff, bool]:
        """Group commit: the creates that arrive while a create transaction runs wait for
        it to end and then share the next one (``_commit_creates``)."""
        self.create_limit.take(caller.account_id, caller.user_id)
        done: asyncio.Future[tuple[Handoff, bool]] = asyncio.get_running_loop().create_future()
        self._creates.append((caller, new, done))
        if self._committing is None:
            self._committing = asyncio.ensure_future(self._commit_creates())
        # Shielded: a caller going away must not cancel the transaction the others share.
        handoff, created = await asyncio.shield(done)
        return handoff, created

    async def _commit_creates(self) -> None:
        try:
            while self._creates:
                batch = self._creates[:_CREATES_PER_TRANSACTION]
                del self._creates[:_CREATES_PER_TRANSACTION]
                await self._create_together(batch)
        finally:
            self._committing = None

    async def _create_together(self, batch: list[_PendingCreate]) -> None:
        """One transaction for the whole batch: one BEGIN and COMMIT, and the account's
        counter row taken once for all of its creates. Sorted by account, so replicas'
        batches lock counter rows in one order. A create that fails with its own error
        (an idempotency key reused with another body) fails alone; a database error in
        any statement rolls the batch back and each create runs again in a transaction
        of its own, so one create's failure is never another's. A failed commit fails
        them all, as it would have failed each (their outcome is unknown: retry)."""
        batch.sort(key=lambda item: item[0].account_id)
        outcomes: list[tuple[Handoff, bool] | DomainError] = []
        statements_done = False
        try:
            async with self.db.write() as s:
                for caller, new, _ in batch:
                    try:
                        outcomes.append(await self._create_in(s, caller, new))
                    except DomainError as e:
                        outcomes.append(e)
                statements_done = True
        except Exception as e:
            if statements_done or len(batch) == 1:
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(e)
                return
            for caller, new, done in batch:
                await self._create_alone(caller, new, done)
            return
        for (_, _, done), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, DomainError):
                done.set_exception(outcome)
                continue
            if outcome[1]:
                for listener in self.created_listeners:
                    listener(outcome[0])
            if not done.done():
                done.set_result(outcome)

    async def _create_alone(
        self, caller: Caller, new: NewHandoff, done: asyncio.Future[tuple[Handoff, bool]]
    ) -> None:
        try:
            async with self.db.write() as s:
                handoff, created = await self._create_in(s, caller, new)
        except Exception as e:
            done.set_exception(e)
            return
        if created:
            for listener in self.created_listeners:
                listener(handoff)
        done.set_result((handoff, created))

    async def _create_in(
        self, s: AsyncSession, caller: Caller, new: NewHandoff
    ) -> tuple[Handoff, bool]:
        return await handoffs.create(
            s,
            caller,
            new,
            self.clock(),
            self.settings.sla_target_seconds(new.priority),
            self.settings.assessment_lease_seconds(),
            self.assessment_owner,
        )

    async def get_handoff(self, caller: Caller, handoff_id: str) -> Handoff:
        async with self.db.read() as s:
            return await handoffs.get(s, policy.scope(caller), handoff_id)

    async def list_handoffs(
        self,
        caller: Caller,
        *,
        status: Status | None,
        intent: Intent | None,
        priority: Priority | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[Handoff], str]:
        async with self.db.read() as s:
            return await handoffs.list_page(
                s,
                policy.scope(caller),
                status=status,
                intent=intent,
                priority=priority,
                page_size=page_size,
                page_token=page_token,
            )

    async def cancel_handoff(self, caller: Caller, handoff_id: str) -> Handoff:
        return await self._transition(caller, handoff_id, Action.CANCEL)

    async def list_escalations(self, caller: Caller, page_token: str = "") -> QueueSnapshot:
        async with self.db.read() as s:
            return await handoffs.queue(s, caller.account_id, page_token)

    async def pick_up(self, caller: Caller, handoff_id: str) -> HandoffContext:
        handoff = await self._transition(caller, handoff_id, Action.PICK_UP)
        async with self.db.read() as s:
            return build_context(handoff, tuple(await search.similar_resolved(s, handoff)))

    async def get_context(self, caller: Caller, handoff_id: str) -> HandoffContext:
        async with self.db.read() as s:
            handoff = rules.require_escalation(
                await handoffs.get(s, policy.scope(caller), handoff_id)
            )
            return build_context(handoff, tuple(await search.similar_resolved(s, handoff)))

    async def release(self, caller: Caller, handoff_id: str) -> Handoff:
        return await self._transition(caller, handoff_id, Action.RELEASE)

    async def resolve(self, caller: Caller, handoff_id: str, note: str) -> Handoff:
        return await self._transition(caller, handoff_id, Action.RESOLVE, note)

    async def metrics(
        self, caller: Caller, start: datetime | None, end: datetime | None
    ) -> EscalationMetrics:
        now = self.clock()
        start, end = metrics_window(start, end, now)
        async with self.db.read() as s:
            return await metrics.escalation_metrics(s, caller.account_id, start, end, now)

    async def _transition(
        self, caller: Caller, handoff_id: str, action: Action, note: str = ""
    ) -> Handoff:
        """One state-machine step: read, let the policy decide, apply it conditionally.

        The update only matches the state the decision was made on; if another writer
        changed it first, the policy decides again on the state that won."""
        scope = policy.scope(caller)
        async with self.db.write() as s:
            current = await handoffs.get(s, scope, handoff_id)
            if action is not Action.CANCEL:
                rules.require_escalation(current)
            change = policy.authorize(action, caller, current)
            if change is None:
                return current
            now = self.clock()
            changed = await handoffs.apply(
                s, scope.account_id, handoff_id, change, caller.ref, now, note
            )
            if changed is None:
                return policy.after_lost_race(
                    action, caller, await handoffs.get(s, scope, handoff_id)
                )
            if action is Action.RESOLVE:
                # Searchable as "what fixed it" from the same commit on.
                await search.index_resolved(s, changed)
            return changed

    # --- working an escalation together -------------------------------------------------

    async def user_seen(self, caller: Caller) -> None:
        """Record a verified caller as a known user of their account, at most once per
        ``user_seen_interval_seconds`` per process unless their name or role changed.

        Concurrent first calls of one user share one write (a burst of calls would
        otherwise queue on the same row). A failed write does not fail the call it came
        with (the caller's request is what matters); the next call tries again.
        """
        key = (caller.account_id, caller.user_id)
        known = self._seen.get(key)
        if (
            known is not None
            and time.monotonic() - known[0] < self.settings.user_seen_interval_seconds
            and known[1:] == (caller.name, caller.role.value)
        ):
            return
        pending = self._recording.get(key)
        if pending is None:
            pending = self._recording[key] = asyncio.ensure_future(self._record_user(caller))
            pending.add_done_callback(lambda _: self._recording.pop(key, None))
        # Shielded: one caller going away must not cancel the write the others wait on.
        await asyncio.shield(pending)

    async def _record_user(self, caller: Caller) -> None:
        key = (caller.account_id, caller.user_id)
        try:
            async with self.db.write() as s:
                await collab.record_user(s, caller, self.clock())
        except Exception:
            log.warning("could not record user %s of %s", caller.user_id, caller.account_id)
            return
        if len(self._seen) >= _SEEN_MAX:
            self._seen.clear()
        self._seen[key] = (time.monotonic(), caller.name, caller.role.value)

    async def list_account_users(self, caller: Caller) -> list[AccountUser]:
        async with self.db.read() as s:
            return await collab.staff(s, caller.account_id)

    async def transfer(
        self, caller: Caller, handoff_id: str, to_user_id: str, note: str
    ) -> Handoff:
        async with self.db.write() as s:
            return await collab.transfer(s, caller, handoff_id, to_user_id, note, self.clock())

    async def add_comment(
        self, caller: Caller, handoff_id: str, body: str, request_id: str | None
    ) -> Comment:
        async with self.db.write() as s:
            return await collab.add_comment(s, caller, handoff_id, body, request_id, self.clock())

    async def reopen(self, caller: Caller, handoff_id: str, reason: str) -> Handoff:
        async with self.db.write() as s:
            current = await handoffs.get(s, policy.scope(caller), handoff_id)
            return await collab.reopen(
                s,
                caller,
                handoff_id,
                reason,
                self.clock(),
                self.settings.reopen_window_seconds,
                self.settings.sla_target_seconds(current.priority),
            )

    async def history(self, caller: Caller, handoff_id: str, after: int, limit: int) -> list[Event]:
        async with self.db.read() as s:
            return await collab.history(s, caller, handoff_id, after, limit)
