"""Who may do what: every authorization decision of the product, in one module.

Three kinds of rule, all here so that they can be read together:

- by role, before a request is even read: ``ROLES`` names the roles that may call each
  use case (by the name of its RPC); the gRPC interceptor's table is derived from it;
- by account and, for technicians, by creator: ``scope`` says which handoffs a caller
  sees at all (every query and every stream filter applies it);
- by relation to one handoff, once it is read: creator or admin may cancel, the holder
  resolves, the holder or an admin releases (``authorize``, ``after_lost_race``).

Storage (server/models) decides nothing: it reports what is (who created a handoff, who
holds it) and applies the conditional update ``authorize`` asks for. See ARCHITECTURE.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.rules import TRANSITIONS, Action, refuse_transition
from server.domain.types import Caller, Handoff, Role, Status, UserRef
from server.errors import PermissionDenied

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
    # (``scope``); who may reopen is judged in server/domain/collab.py.
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
