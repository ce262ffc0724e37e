"""Working an escalation together: the limits of a transfer's, a comment's and a reopen's
input, and what an engineer narrowed their queue stream to.

Who may transfer or reopen is decided with the rest of the policy, in
server/domain/policy.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.rules import MAX_ID, MAX_NOTES, _text
from server.domain.types import Caller, Event, Handoff, Priority, Status
from server.errors import FieldViolation, InvalidArgument

# Comments are held to the limits of the technician's notes: the same kind of text.
MAX_COMMENT = MAX_NOTES
MAX_TRANSFER_NOTE = 5_000
MAX_REOPEN_REASON = 5_000


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
