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

from server.db.database import Database
from server.domain import policy, rules
from server.domain.context import HandoffContext, build_context
from server.domain.limits import RateLimiter
from server.domain.metrics import EscalationMetrics, metrics_window
from server.domain.rules import Action
from server.domain.types import (
    AccountUser,
    Assessment,
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
from server.models import batch, collab, handoffs, metrics, search
from server.settings import Settings

log = logging.getLogger(__name__)
# Users remembered as recorded, per process; past this many the memory starts over (a
# few extra upserts, never a wrong answer).
_SEEN_MAX = 100_000


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

    async def create_handoff(self, caller: Caller, new: NewHandoff) -> tuple[Handoff, bool]:
        """In a transaction shared with concurrent creates and assessment outcomes
        (``Database.write_batched``, ``models.batch``)."""
        self.create_limit.take(caller.account_id, caller.user_id)
        item = batch.Create(
            caller,
            new,
            self.clock(),
            self.settings.sla_target_seconds(new.priority),
            self.settings.assessment_lease_seconds(),
            self.assessment_owner,
        )
        handoff, created = await self.db.write_batched(batch.write, item)
        if created:
            for listener in self.created_listeners:
                listener(handoff)
        return handoff, created

    async def save_assessment(self, handoff_id: str, result: Assessment) -> Handoff | None:
        """Record an assessment's outcome (only over PENDING) with its ASSESSMENT_READY
        event, in a transaction shared like creates'; None if it was no longer PENDING."""
        item = batch.SaveAssessment(handoff_id, result, self.clock())
        saved: Handoff | None = await self.db.write_batched(batch.write, item)
        return saved

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
            return await collab.users_in_roles(s, caller.account_id, policy.STAFF)

    async def transfer(
        self, caller: Caller, handoff_id: str, to_user_id: str, note: str
    ) -> Handoff:
        """Read the target and the handoff, let the policy decide, apply it conditionally
        on the holder it was decided on; if that changed first, the policy answers."""
        scope = policy.scope(caller)
        async with self.db.write() as s:
            target = await collab.user(s, scope.account_id, to_user_id)
            current = rules.require_escalation(await handoffs.get(s, scope, handoff_id))
            move = policy.authorize_transfer(caller, current, target, to_user_id)
            changed = await collab.transfer(
                s, scope.account_id, handoff_id, move, caller.ref, note, self.clock()
            )
            if changed is None:
                winner = rules.require_escalation(await handoffs.get(s, scope, handoff_id))
                policy.after_lost_transfer(caller, winner, target, to_user_id)
            return changed

    async def add_comment(
        self, caller: Caller, handoff_id: str, body: str, request_id: str | None
    ) -> Comment:
        async with self.db.write() as s:
            await handoffs.get(s, policy.scope(caller), handoff_id)  # theirs to see
            return await collab.add_comment(s, caller, handoff_id, body, request_id, self.clock())

    async def reopen(self, caller: Caller, handoff_id: str, reason: str) -> Handoff:
        scope = policy.scope(caller)
        window = self.settings.reopen_window_seconds
        async with self.db.write() as s:
            current = await handoffs.get(s, scope, handoff_id)
            now = self.clock()
            policy.authorize_reopen(caller, current, now, window)
            target = self.settings.sla_target_seconds(current.priority)
            changed = await collab.reopen(
                s, scope.account_id, handoff_id, caller.ref, reason, now, target
            )
            if changed is None:
                winner = await handoffs.get(s, scope, handoff_id)
                policy.after_lost_reopen(caller, winner, now, window)
            return changed

    async def history(self, caller: Caller, handoff_id: str, after: int, limit: int) -> list[Event]:
        async with self.db.read() as s:
            await handoffs.get(s, policy.scope(caller), handoff_id)  # theirs to see
            return await collab.history(s, caller.account_id, handoff_id, after, limit)
