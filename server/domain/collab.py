"""Rules of working an escalation together: transfer, comments, reopen.

Kept apart from the state machine in ``rules`` on purpose: these are who-may-do-what
checks over a handoff's current state, each a small function the models call before and
after their conditional update, so they can move with the rest of the policy as one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from server.domain.rules import MAX_ID, MAX_NOTES, _text
from server.domain.types import (
    AccountUser,
    Caller,
    Event,
    Handoff,
    Intent,
    Priority,
    Role,
    Status,
)
from server.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

# Comments are held to the limits of the technician's notes: the same kind of text.
MAX_COMMENT = MAX_NOTES
MAX_TRANSFER_NOTE = 5_000
MAX_REOPEN_REASON = 5_000
STAFF_ROLES = frozenset({Role.ENGINEER, Role.ADMIN})


def validate_comment(body: str, request_id: str) -> tuple[str, str | None]:
    v: list[FieldViolation] = []
    _text(v, "body", body, MAX_COMMENT, required=True)
    _text(v, "request_id", request_id, MAX_ID, required=False)
    if v:
        raise InvalidArgument(v)
    return body.strip(), request_id or None


def validate_transfer(to_user_id: str, note: str) -> tuple[str, str]:
    v: list[FieldViolation] = []
    _text(v, "to_user_id", to_user_id, MAX_ID, required=True)
    _text(v, "note", note, MAX_TRANSFER_NOTE, required=False)
    if v:
        raise InvalidArgument(v)
    return to_user_id.strip(), note.strip()


def validate_reopen_reason(reason: str) -> str:
    v: list[FieldViolation] = []
    _text(v, "reason", reason, MAX_REOPEN_REASON, required=True)
    if v:
        raise InvalidArgument(v)
    return reason.strip()


def _who(user_id: str, name: str) -> str:
    return f"{name or user_id} ({user_id})"


def check_transfer(
    caller: Caller, current: Handoff, target: AccountUser | None, to_user_id: str
) -> None:
    """A transfer moves a PICKED_UP escalation from its holder to another engineer or
    admin the account knows. The holder or an admin may; the target must be staff.

    Called before the conditional update and again with the state that won a race, so the
    error names the situation as it is now.
    """
    if target is None:
        # Also the answer for a user of another account: users are known per account.
        raise NotFound(
            f"no user {to_user_id} in this account; a user is known once they have "
            "called the service (see ListAccountUsers)",
            reason="UNKNOWN_USER",
            metadata={"to_user_id": to_user_id},
        )
    if target.role not in STAFF_ROLES:
        raise FailedPrecondition(
            f"cannot transfer handoff {current.id} to {_who(target.id, target.name)}: "
            f"a {target.role.value} cannot hold escalations",
            reason="NOT_AN_ENGINEER",
            metadata={"to_user_id": target.id},
        )
    holder = current.picked_up_by
    if current.status is not Status.PICKED_UP or holder is None:
        raise FailedPrecondition(
            f"cannot transfer handoff {current.id}: it is {current.status.value}; "
            "only a picked-up escalation can be transferred",
            reason="NOT_PICKED_UP",
        )
    if holder.id != caller.user_id and caller.role is not Role.ADMIN:
        raise PermissionDenied(
            f"cannot transfer handoff {current.id}: only its holder, "
            f"{_who(holder.id, holder.name)}, or an admin may",
            reason="NOT_HOLDER",
            metadata={"holder_id": holder.id, "holder_name": holder.name},
        )
    if holder.id == target.id:
        raise FailedPrecondition(
            f"cannot transfer handoff {current.id}: {_who(target.id, target.name)} "
            "already holds it",
            reason="ALREADY_HOLDER",
            metadata={"holder_id": holder.id},
        )


def check_reopen(caller: Caller, current: Handoff, now: datetime, window_seconds: float) -> None:
    """The technician who escalated (or an admin) reopens a resolved escalation while the
    window since its resolution lasts."""
    if current.created_by.id != caller.user_id and caller.role is not Role.ADMIN:
        raise PermissionDenied(
            f"cannot reopen handoff {current.id}: only the technician who escalated it, "
            f"{_who(current.created_by.id, current.created_by.name)}, or an admin may",
            reason="NOT_CREATOR",
        )
    if current.intent is not Intent.ESCALATE or current.status is not Status.RESOLVED:
        raise FailedPrecondition(
            f"cannot reopen handoff {current.id}: it is {current.status.value}; "
            "only a resolved escalation can be reopened",
            reason="NOT_RESOLVED",
        )
    assert current.resolved_at is not None
    closes = current.resolved_at + timedelta(seconds=window_seconds)
    if now > closes:
        raise FailedPrecondition(
            f"cannot reopen handoff {current.id}: the reopen window closed at "
            f"{closes.isoformat()}; create a new handoff instead",
            reason="REOPEN_WINDOW_CLOSED",
            metadata={"closed_at": closes.isoformat()},
        )


@dataclass(frozen=True)
class QueueFilter:
    """What an engineer narrowed their queue stream to: priorities (empty: all), and
    "held by me". The snapshot holds only matching escalations; live events pass when the
    handoff matches after the change, or when the change took it away from the caller (a
    transfer or release of theirs), so a client keeping the filtered list can drop it."""

    priorities: frozenset[Priority] = frozenset()
    held_by_me: bool = False

    @property
    def narrows(self) -> bool:
        return bool(self.priorities) or self.held_by_me

    def admits(self, handoff: Handoff, caller: Caller) -> bool:
        if self.priorities and handoff.priority not in self.priorities:
            return False
        if self.held_by_me:
            holder = handoff.picked_up_by
            return (
                handoff.status is Status.PICKED_UP
                and holder is not None
                and holder.id == caller.user_id
            )
        return True

    def passes(self, event: Event, caller: Caller) -> bool:
        handoff = event.handoff
        if handoff is None:
            return True  # an account event (a failing webhook) concerns every queue
        if self.admits(handoff, caller):
            return True
        if self.priorities and handoff.priority not in self.priorities:
            return False
        previous = event.detail.previous_holder if event.detail else None
        if self.held_by_me and previous is not None and previous.id == caller.user_id:
            return True
        # Resolved by me: it was mine until this event (a release names me as previous).
        holder = handoff.picked_up_by
        return (
            self.held_by_me
            and handoff.status is Status.RESOLVED
            and holder is not None
            and holder.id == caller.user_id
        )
