"""The authorization policy on its own (server/domain/policy.py): pure functions of the
caller and the handoff, so every rule is checked here without a server. The same rules
end to end, with their exact errors, are in test_handoffs.py, test_escalations.py and
test_auth.py."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server.domain import policy
from server.domain.rules import Action
from server.domain.types import (
    Assessment,
    AssessmentStatus,
    Caller,
    Handoff,
    Intent,
    Priority,
    Role,
    Status,
)
from server.errors import FailedPrecondition, PermissionDenied

NOW = datetime(2026, 1, 2, tzinfo=UTC)
TECH = Caller("t1", "acct", Role.TECHNICIAN, "Tess")
OTHER_TECH = Caller("t2", "acct", Role.TECHNICIAN, "Tom")
ENG = Caller("e1", "acct", Role.ENGINEER, "Eve")
OTHER_ENG = Caller("e2", "acct", Role.ENGINEER, "Ed")
ADMIN = Caller("a1", "acct", Role.ADMIN, "Ada")


def handoff(status: Status = Status.OPEN, holder: Caller | None = None) -> Handoff:
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
        resolved_at=None,
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
        Action.RELEASE, frozenset({Status.PICKED_UP}), "e1"
    )
    # An admin frees whoever holds it: no holder in the update's condition.
    assert policy.authorize(Action.RELEASE, ADMIN, held) == policy.Change(
        Action.RELEASE, frozenset({Status.PICKED_UP}), None
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


def test_staff_only_rpcs_are_closed_to_technicians() -> None:
    for name in ("PickUpEscalation", "ResolveEscalation", "ReleaseEscalation"):
        assert Role.TECHNICIAN not in policy.ROLES[name]
    assert policy.ROLES["CancelHandoff"] == frozenset(Role)


def test_storage_decides_nothing_about_roles() -> None:
    """server/models applies the policy's decisions: it never looks at a role itself."""
    root = Path(__file__).resolve().parent.parent / "server" / "models"
    for path in sorted(root.glob("*.py")):
        names = {n.id for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Name)}
        attrs = {
            n.attr for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute)
        }
        assert "Role" not in names and "role" not in attrs, path.name
