"""Who may do what: every authorization decision of the product, in one module.

Three kinds of rule, all here so that they can be read together:

- by role, before a request is even read: ``ROLES`` names the roles that may call each
  use case (by the name of its RPC); the gRPC interceptor's table is derived from it;
- by account and, for technicians, by creator: ``scope`` says which handoffs a caller
  sees at all (every query and every stream filter applies it);
- by relation to one handoff, once it is read: creator or admin may cancel, the holder
  resolves, the holder or an admin releases (``authorize``, ``after_lost_race``); the
  holder or an admin transfers to another engineer or admin (``authorize_transfer``,
  ``after_lost_transfer``); the technician who escalated or an admin reopens within the
  window (``authorize_reopen``, ``after_lost_reopen``).

Storage (server/models) decides nothing: it reports what is (who created a handoff, who
holds it, who the account's users are) and applies the conditional update the decision
asks for; when that update matches nothing, the ``after_lost_*`` function judges the state
that won. See ARCHITECTURE.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from server.domain.rules import TRANSITIONS, Action, refuse_transition
from server.domain.types import AccountUser, Caller, Handoff, Intent, Role, Status, UserRef
from server.errors import FailedPrecondition, NotFound, PermissionDenied

ANYONE = frozenset(Role)
STAFF = frozenset({Role.ENGINEER, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})

# Which roles may call which use case, by the name of its RPC. Every RPC of the services
# must be listed: the server does not start otherwise (tests/test_auth.py checks it too).
ROLES: dict[str, frozenset[Role]] = {
    "CreateHandoff": ANYONE,
    "GetHandoff": ANYONE,
    "ListHandoffs": ANYONE,
    "CancelHandoff": ANYONE,
    "WatchHandoffs": ANYONE,
    # A technician comments on, reopens and reads the history of their own handoffs only
    # (``scope``); who may reopen is judged by ``authorize_reopen``.
    "AddComment": ANYONE,
    "ReopenHandoff": ANYONE,
    "GetHandoffHistory": ANYONE,
    # Technicians see how many engineers are online; engineers and admins also who.
    "GetPresence": ANYONE,
    # An edge reports the browsers it serves the queue to; it calls with one of their
    # tokens, and each reported token is judged by ``presence_refusal``.
    "ReportPresence": STAFF,
    "StreamEscalations": STAFF,
    "ListEscalations": STAFF,
    "PickUpEscalation": STAFF,
    "GetHandoffContext": STAFF,
    "ReleaseEscalation": STAFF,
    "ResolveEscalation": STAFF,
    "GetEscalationMetrics": STAFF,
    "TransferEscalation": STAFF,
    "ListAccountUsers": STAFF,
    # Webhooks send the account's data to a URL of the caller's choosing, and the breach
    # policy changes what happens to everyone's escalations: admins only.
    "CreateWebhookEndpoint": ADMINS,
    "ListWebhookEndpoints": ADMINS,
    "UpdateWebhookEndpoint": ADMINS,
    "DeleteWebhookEndpoint": ADMINS,
    "RotateWebhookSecret": ADMINS,
    "ListWebhookDeliveries": ADMINS,
    "RedeliverWebhook": ADMINS,
    "GetEscalationPolicy": ADMINS,
    "UpdateEscalationPolicy": ADMINS,
}


def presence_refusal(watcher: Caller, account_id: str) -> str:
    """Why a reported token does not make its user present in ``account_id`` ("" if it
    does). Presence is the account's engineers and admins watching its queue, as their own
    token proves: never another account's user, whoever reports them."""
    if watcher.account_id != account_id:
        return "another account"
    if watcher.role not in STAFF:
        return "not an engineer or admin"
    return ""


@dataclass(frozen=True)
class Scope:
    """The handoffs a caller can see: their account's, and with ``creator_id`` only the
    ones that user created. Anything outside reads as not found, so nothing leaks."""

    account_id: str
    creator_id: str | None


def scope(caller: Caller) -> Scope:
    """Technicians see their own handoffs; engineers and admins their whole account's."""
    return Scope(caller.account_id, caller.user_id if caller.role is Role.TECHNICIAN else None)


@dataclass(frozen=True)
class Change:
    """A transition the caller may make, as storage applies it: one conditional update
    that matches only while the handoff is in ``allowed_from`` and, with ``holder_id``,
    still held by that user (so a concurrent change makes it match nothing)."""

    action: Action
    allowed_from: frozenset[Status]
    holder_id: str | None
    # A release names the holder it frees (the event carries it): the one the decision
    # was made on, which the update also requires, so it is the one actually released.
    previous_holder: UserRef | None = None


def authorize(action: Action, caller: Caller, current: Handoff) -> Change | None:
    """The change ``caller`` may make to ``current``, or None when there is nothing to do
    (a pickup by the engineer who holds it already). Raises PERMISSION_DENIED when the
    caller may not do it whatever the state."""
    if action is Action.CANCEL and not (
        current.created_by.id == caller.user_id or caller.role is Role.ADMIN
    ):
        raise PermissionDenied(
            f"cannot cancel handoff {current.id}: only its creator or an admin can"
        )
    if action is Action.PICK_UP and already_held_by(caller, current):
        return None  # idempotent: no change, no second PICKED_UP event
    check_holder(action, caller, current)
    # Resolving needs the holder; releasing too, unless an admin frees someone's pickup.
    must_hold = action is Action.RESOLVE or (
        action is Action.RELEASE and caller.role is not Role.ADMIN
    )
    holder_id = caller.user_id if must_hold else None
    previous = None
    if action is Action.RELEASE and current.picked_up_by is not None:
        # An admin releases the holder they saw, never one who took it since.
        previous = current.picked_up_by
        holder_id = previous.id
    return Change(action, TRANSITIONS[action].allowed_from, holder_id, previous)


def after_lost_race(action: Action, caller: Caller, winner: Handoff) -> Handoff:
    """The answer when the change matched nothing: the state that won decides. The same
    engineer's concurrent pickup counts as done; anything else is refused."""
    if action is Action.PICK_UP and already_held_by(caller, winner):
        return winner
    check_holder(action, caller, winner)
    raise refuse_transition(action, winner)


def check_holder(action: Action, caller: Caller, current: Handoff) -> None:
    """Release and resolve belong to whoever holds the escalation (admins may release).

    Anyone else is refused with PERMISSION_DENIED, not FAILED_PRECONDITION: waiting or
    retrying cannot make it work, and the message says who may do it instead.
    """
    holder = current.picked_up_by
    if action not in (Action.RELEASE, Action.RESOLVE):
        return
    if current.status is not Status.PICKED_UP or holder is None:
        return
    if holder.id == caller.user_id or (action is Action.RELEASE and caller.role is Role.ADMIN):
        return
    who = f"{holder.name or holder.id} ({holder.id})"
    also = " or an admin" if action is Action.RELEASE else ""
    raise PermissionDenied(
        f"cannot {action.value} handoff {current.id}: only its holder, {who}{also}, may",
        reason="NOT_HOLDER",
        metadata={"holder_id": holder.id, "holder_name": holder.name},
    )


def already_held_by(caller: Caller, current: Handoff) -> bool:
    """A pickup by the engineer who already holds it: answered with its context, not an
    error, so a double click or a retried request does what the engineer meant."""
    holder = current.picked_up_by
    return current.status is Status.PICKED_UP and holder is not None and holder.id == caller.user_id


def _who(user_id: str, name: str) -> str:
    return f"{name or user_id} ({user_id})"


@dataclass(frozen=True)
class Transfer:
    """A transfer the caller may make, as storage applies it: one conditional update that
    moves the hold from ``previous_holder`` (the holder the decision was made on, which
    the update requires and the event names) to ``to``."""

    previous_holder: UserRef
    to: AccountUser


def authorize_transfer(
    caller: Caller, current: Handoff, target: AccountUser | None, to_user_id: str
) -> Transfer:
    """A transfer moves a PICKED_UP escalation from its holder to another engineer or
    admin the account knows (``target``, None when it knows no ``to_user_id``). The holder
    or an admin may. Raises the error that names what stands in the way."""
    if target is None:
        # Also the answer for a user of another account: users are known per account.
        raise NotFound(
            f"no user {to_user_id} in this account; a user is known once they have "
            "called the service (see ListAccountUsers)",
            reason="UNKNOWN_USER",
            metadata={"to_user_id": to_user_id},
        )
    if target.role not in STAFF:
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
    return Transfer(holder, target)


def after_lost_transfer(
    caller: Caller, winner: Handoff, target: AccountUser | None, to_user_id: str
) -> NoReturn:
    """The answer when the transfer's update matched nothing: judged again on the state
    that won, so the error names the situation as it is now. Even where the caller could
    transfer from the new holder (an admin), it is refused: they chose with the old holder
    in mind, and must not take it from someone new unseen."""
    authorize_transfer(caller, winner, target, to_user_id)
    raise FailedPrecondition(
        f"cannot transfer handoff {winner.id}: its holder changed meanwhile; look again and retry",
        reason="HOLDER_CHANGED",
    )


def authorize_reopen(
    caller: Caller, current: Handoff, now: datetime, window_seconds: float
) -> None:
    """The technician who escalated (or an admin) reopens a resolved escalation while the
    window since its resolution lasts; storage's update requires it still RESOLVED."""
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


def after_lost_reopen(
    caller: Caller, winner: Handoff, now: datetime, window_seconds: float
) -> NoReturn:
    """The answer when the reopen's update matched nothing: the state that won decides
    (reopened by someone else meanwhile reads as not resolved)."""
    authorize_reopen(caller, winner, now, window_seconds)
    raise FailedPrecondition(f"cannot reopen handoff {winner.id}: it changed meanwhile")
