"""The application core: each use case in one transaction, independent of any transport.

Servicers call these methods with an authenticated ``Caller``. Who may do what is
decided in server/domain/policy.py, applied in two places: the role a use case needs is
checked by the transport before the request is read (its table derives from
``policy.ROLES``), and everything that depends on the handoff (its account, its creator,
its holder) is checked here, through ``policy.scope`` on every read and
``policy.authorize`` on every transition. Storage applies the decisions and makes none.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from server.db.database import Database
from server.domain import policy, rules
from server.domain.context import HandoffContext, build_context
from server.domain.limits import RateLimiter
from server.domain.metrics import EscalationMetrics, metrics_window
from server.domain.rules import Action
from server.domain.types import (
    Caller,
    Handoff,
    Intent,
    NewHandoff,
    Priority,
    QueueSnapshot,
    Status,
)
from server.models import handoffs, metrics
from server.settings import Settings


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

    async def create_handoff(self, caller: Caller, new: NewHandoff) -> tuple[Handoff, bool]:
        self.create_limit.take(caller.account_id, caller.user_id)
        async with self.db.write() as s:
            handoff, created = await handoffs.create(
                s,
                caller,
                new,
                self.clock(),
                self.settings.sla_target_seconds(new.priority),
                self.settings.assessment_lease_seconds(),
                self.assessment_owner,
            )
        if created:
            for listener in self.created_listeners:
                listener(handoff)
        return handoff, created

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
        return build_context(await self._transition(caller, handoff_id, Action.PICK_UP))

    async def get_context(self, caller: Caller, handoff_id: str) -> HandoffContext:
        async with self.db.read() as s:
            handoff = await handoffs.get(s, policy.scope(caller), handoff_id)
            return build_context(rules.require_escalation(handoff))

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
            done = await handoffs.apply(
                s, scope.account_id, handoff_id, change, caller.ref, now, note
            )
            if done is not None:
                return done
            return policy.after_lost_race(action, caller, await handoffs.get(s, scope, handoff_id))
