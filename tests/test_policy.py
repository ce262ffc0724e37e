"""The authorization policy on its own (server/domain/policy.py): pure functions of the
caller and the handoff, so every rule is checked here without a server. The same rules
end to end, with their exact errors, are in test_handoffs.py, test_escalations.py and
test_auth.py."""

from __future__ import annotations

import ast
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.domain import policy
from server.domain.rules import Action
from server.domain.types import (
    AccountUser,
    Assessment,
    AssessmentStatus,
    Caller,
    Handoff,
    Intent,
    Priority,
    Role,
    Status,
)
from server.errors import FailedPrecondition, NotFound, PermissionDenied

NOW = datetime(2026, 1, 2, tzinfo=UTC)
TECH = Caller("t1", "acct", Role.TECHNICIAN, "Tess")
OTHER_TECH = Caller("t2", "acct", Role.TECHNICIAN, "Tom")
ENG = Caller("e1", "acct", Role.ENGINEER, "Eve")
OTHER_ENG = Caller("e2", "acct", Role.ENGINEER, "Ed")
ADMIN = Caller("a1", "acct", Role.ADMIN, "Ada")


def handoff(
    status: Status = Status.OPEN, holder: Caller | None = None, resolved_at: datetime | None = None
) -> Handoff:
    return Handoff(
        id="h1",
        account_id="acct",
        session_id="s",
        intent=Intent.ESCALATE,
        status=status,
        priority=Priority.NORMAL,
        problem_summary="p",
        steps_tried=(),
        notes="",
        created_by=TECH.ref,
        picked_up_by=holder.ref if holder else None,
        resolution_note="",
        assessment=Assessment(AssessmentStatus.PENDING),
        sla_due_at=None,
        created_at=NOW,
        picked_up_at=None,
        resolved_at=resolved_at,
        cancelled_at=None,
        updated_at=NOW,
        sequence=1,
    )


def test_technicians_see_their_own_and_staff_the_whole_account() -> None:
    assert policy.scope(TECH) == policy.Scope("acct", "t1")
    assert policy.scope(ENG) == policy.Scope("acct", None)
    assert policy.scope(ADMIN) == policy.Scope("acct", None)


def test_the_creator_or_an_admin_cancels_nobody_else() -> None:
    assert policy.authorize(Action.CANCEL, TECH, handoff()) is not None
    assert policy.authorize(Action.CANCEL, ADMIN, handoff()) is not None
    for caller in (OTHER_TECH, ENG):
        with pytest.raises(PermissionDenied, match="only its creator or an admin can"):
            policy.authorize(Action.CANCEL, caller, handoff())


def test_resolving_needs_the_holder_and_the_update_checks_it_again() -> None:
    held = handoff(Status.PICKED_UP, ENG)
    change = policy.authorize(Action.RESOLVE, ENG, held)
    assert change == policy.Change(Action.RESOLVE, frozenset({Status.PICKED_UP}), "e1")
    for caller in (OTHER_ENG, ADMIN):
        with pytest.raises(PermissionDenied) as refused:
            policy.authorize(Action.RESOLVE, caller, held)
        assert refused.value.reason == "NOT_HOLDER"
        assert "or an admin" not in refused.value.message


def test_the_holder_or_an_admin_releases() -> None:
    held = handoff(Status.PICKED_UP, ENG)
    assert policy.authorize(Action.RELEASE, ENG, held) == policy.Change(
        Action.RELEASE, frozenset({Status.PICKED_UP}), "e1", held.picked_up_by
    )
    # An admin frees the holder they saw (the event names them), never one who took it
    # since: the update's condition holds that holder too.
    assert policy.authorize(Action.RELEASE, ADMIN, held) == policy.Change(
        Action.RELEASE, frozenset({Status.PICKED_UP}), "e1", held.picked_up_by
    )
    with pytest.raises(PermissionDenied, match=r"only its holder, Eve \(e1\) or an admin, may"):
        policy.authorize(Action.RELEASE, OTHER_ENG, held)


def test_a_pickup_by_the_holder_changes_nothing_and_a_lost_race_names_the_winner() -> None:
    held = handoff(Status.PICKED_UP, ENG)
    assert policy.authorize(Action.PICK_UP, ENG, held) is None
    assert policy.after_lost_race(Action.PICK_UP, ENG, held) is held
    with pytest.raises(FailedPrecondition) as lost:
        policy.after_lost_race(Action.PICK_UP, OTHER_ENG, held)
    assert lost.value.reason == "ALREADY_PICKED_UP"
    assert lost.value.metadata == {"holder_id": "e1", "holder_name": "Eve"}


def known(caller: Caller) -> AccountUser:
    return AccountUser(caller.user_id, caller.name, caller.role, NOW)


def reason_of(call: Callable[..., object], *args: object) -> str:
    """The reason of the refusal ``call(*args)`` raises."""
    with pytest.raises((FailedPrecondition, NotFound, PermissionDenied)) as refused:
        call(*args)
    return str(refused.value.reason)


def test_the_holder_or_an_admin_transfers_to_staff_the_account_knows() -> None:
    held = handoff(Status.PICKED_UP, ENG)
    to_ed = policy.Transfer(ENG.ref, known(OTHER_ENG))
    assert policy.authorize_transfer(ENG, held, known(OTHER_ENG), "e2") == to_ed
    assert policy.authorize_transfer(ADMIN, held, known(OTHER_ENG), "e2") == to_ed
    assert policy.authorize_transfer(ENG, held, known(ADMIN), "a1").to == known(ADMIN)
    refusals = [
        (ENG, held, None, "UNKNOWN_USER"),
        (ENG, held, known(TECH), "NOT_AN_ENGINEER"),
        (ENG, handoff(), known(OTHER_ENG), "NOT_PICKED_UP"),
        (OTHER_ENG, held, known(ADMIN), "NOT_HOLDER"),
        (TECH, held, known(OTHER_ENG), "NOT_HOLDER"),
        (ADMIN, held, known(ENG), "ALREADY_HOLDER"),
    ]
    for caller, current, target, reason in refusals:
        assert reason_of(policy.authorize_transfer, caller, current, target, "x") == reason


def test_a_lost_transfer_is_judged_on_the_state_that_won() -> None:
    # The holder changed under an admin's transfer: refused, though the admin could
    # transfer from the new holder, since they chose with the old one in mind.
    now_ed = handoff(Status.PICKED_UP, OTHER_ENG)
    lost = reason_of(policy.after_lost_transfer, ADMIN, now_ed, known(ENG), "e1")
    assert lost == "HOLDER_CHANGED"
    # The engineer who held it lost it meanwhile: no longer theirs to give.
    lost = reason_of(policy.after_lost_transfer, ENG, now_ed, known(ADMIN), "a1")
    assert lost == "NOT_HOLDER"
    lost = reason_of(policy.after_lost_transfer, ENG, handoff(), known(ADMIN), "a1")
    assert lost == "NOT_PICKED_UP"


def test_the_creator_or_an_admin_reopens_within_the_window() -> None:
    done = handoff(Status.RESOLVED, ENG, resolved_at=NOW)
    window = 3600.0
    within = NOW + timedelta(seconds=window)
    policy.authorize_reopen(TECH, done, within, window)
    policy.authorize_reopen(ADMIN, done, within, window)
    for caller in (OTHER_TECH, ENG):
        assert reason_of(policy.authorize_reopen, caller, done, NOW, window) == "NOT_CREATOR"
    for status in (Status.OPEN, Status.PICKED_UP, Status.CANCELLED):
        current = handoff(status)
        assert reason_of(policy.authorize_reopen, TECH, current, NOW, window) == "NOT_RESOLVED"
    late = within + timedelta(microseconds=1)
    for caller in (TECH, ADMIN):
        reason = reason_of(policy.authorize_reopen, caller, done, late, window)
        assert reason == "REOPEN_WINDOW_CLOSED"
    # Reopened by someone else meanwhile: it is no longer resolved.
    reason = reason_of(policy.after_lost_reopen, TECH, handoff(), NOW, window)
    assert reason == "NOT_RESOLVED"


def test_staff_only_rpcs_are_closed_to_technicians() -> None:
    for name in ("PickUpEscalation", "ResolveEscalation", "ReleaseEscalation"):
        assert Role.TECHNICIAN not in policy.ROLES[name]
    assert policy.ROLES["CancelHandoff"] == frozenset(Role)


def test_storage_decides_nothing_about_roles() -> None:
    """server/models applies the policy's decisions: it may store a role (who commented,
    who was seen) but never compares one, and never names a particular role."""
    root = Path(__file__).resolve().parent.parent / "server" / "models"

    def mentions_role(node: ast.AST) -> bool:
        return any(
            (isinstance(n, ast.Attribute) and n.attr == "role")
            or (isinstance(n, ast.Name) and n.id == "Role")
            for n in ast.walk(node)
        )

    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                assert not mentions_role(node), f"{path.name}:{node.lineno} compares a role"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert not (node.value.id == "Role" and node.attr.isupper()), (
                    f"{path.name}:{node.lineno} names a role"
                )


def test_storage_applies_decisions_and_makes_none() -> None:
    """server/models takes the policy's decisions as values (a Scope, a Change, a
    Transfer); it never calls the policy, so every decision is made above it."""
    root = Path(__file__).resolve().parent.parent / "server" / "models"
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "server.domain.policy":
                for alias in node.names:
                    assert alias.name[:1].isupper(), f"{path.name} imports policy.{alias.name}"
            if isinstance(node, ast.ImportFrom) and node.module == "server.domain":
                names = {alias.name for alias in node.names}
                assert "policy" not in names, f"{path.name}:{node.lineno} imports the policy"
