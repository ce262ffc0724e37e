"""The SLA clock: timers in the database, claimed atomically, one event each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.schema import EscalationPolicyRecord, HandoffRecord, SlaTimerRecord
from server.domain.types import EventDetail, EventType, Priority, Status
from server.models.records import record_change

WARNING_AT = 0.8
# The timer that repeats the breach event while nobody picks the escalation up. One row
# per handoff, moved forward each time it fires (in the transaction that fires it).
RENOTIFY = "SLA_RENOTIFY"
_RAISED = {
    Priority.LOW: Priority.NORMAL,
    Priority.NORMAL: Priority.HIGH,
    Priority.HIGH: Priority.URGENT,
    Priority.URGENT: Priority.URGENT,
}


@dataclass(frozen=True)
class BreachPolicy:
    """What a breach of an unpicked escalation sets off (docs: README, "Breach policy")."""

    raise_priority: bool = False
    renotify_seconds: int = 900


async def policy_of(session: AsyncSession, account_id: str, default: BreachPolicy) -> BreachPolicy:
    row = await session.get(EscalationPolicyRecord, account_id)
    if row is None:
        return default
    return BreachPolicy(row.raise_priority, row.renotify_seconds)


def timers_for(
    handoff_id: str, account_id: str, created_at: datetime, target_seconds: float
) -> list[dict[str, object]]:
    """Rows for the sla_timers table (inserted with the escalation)."""
    return [
        {
            "handoff_id": handoff_id,
            "account_id": account_id,
            "kind": kind.value,
            "due_at": created_at + timedelta(seconds=target_seconds * share),
            "fired_at": None,
        }
        for kind, share in ((EventType.SLA_WARNING, WARNING_AT), (EventType.SLA_BREACHED, 1.0))
    ]


async def fire_next_due(
    session: AsyncSession, now: datetime, default: BreachPolicy | None = None
) -> bool:
    """Claim one due timer and, if its escalation is still open, append its event.

    One timer per transaction: the handoff row is locked before the account's sequence
    row, the same order as every other writer, so this can never deadlock with a pickup.
    Returns False when nothing is due.
    """
    claim = (
        select(SlaTimerRecord)
        .where(SlaTimerRecord.fired_at.is_(None), SlaTimerRecord.due_at <= now)
        .order_by(SlaTimerRecord.due_at)
        .limit(1)
    )
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        # Replicas each take a different due timer instead of queueing on the same one.
        claim = claim.with_for_update(skip_locked=True)
    timer = await session.scalar(claim)
    if timer is None:
        return False
    timer.fired_at = now
    lock = select(HandoffRecord).where(HandoffRecord.id == timer.handoff_id)
    record = await session.scalar(
        (lock.with_for_update() if postgres else lock).execution_options(populate_existing=True)
    )
    if record is None or record.status != Status.OPEN.value:
        return True  # picked up (or closed): a re-notification stops here
    kind = timer.kind
    raised: Priority | None = None
    if kind in (EventType.SLA_BREACHED.value, RENOTIFY):
        policy = await policy_of(session, record.account_id, default or BreachPolicy())
        if kind == EventType.SLA_BREACHED.value:
            record.sla_breached_at = now
            was = Priority(record.priority)
            if policy.raise_priority and _RAISED[was] is not was:
                raised = _RAISED[was]
        if policy.renotify_seconds > 0:
            await _renotify_at(session, timer, now + timedelta(seconds=policy.renotify_seconds))
        kind = EventType.SLA_BREACHED.value
    await session.flush()
    await record_change(session, record.account_id, record.id, EventType(kind), now)
    if raised is not None:
        # A change of its own, right after the breach (same transaction, next sequence):
        # the breach is told at the priority it happened at, the raise as what it did.
        was = Priority(record.priority)
        record.priority, record.priority_rank = raised.value, raised.rank
        await session.flush()
        note = f"raised from {was.value} to {raised.value}: SLA breached, nobody picked it up"
        await record_change(
            session,
            record.account_id,
            record.id,
            EventType.PRIORITY_RAISED,
            now,
            EventDetail(note=note),
        )
    return True


async def _renotify_at(session: AsyncSession, timer: SlaTimerRecord, due: datetime) -> None:
    if timer.kind == RENOTIFY:
        timer.due_at, timer.fired_at = due, None
        return
    session.add(
        SlaTimerRecord(
            handoff_id=timer.handoff_id,
            account_id=timer.account_id,
            kind=RENOTIFY,
            due_at=due,
            fired_at=None,
        )
    )
