"""Property: any sequence of create / pick up / release / resolve / cancel by any users
keeps the invariants — legal transitions only, at most one holder, and the event log
replays to exactly the stored state. Runs the real domain core on a real SQLite file."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.core import Core
from server.db.database import Database
from server.db.migrate import upgrade
from server.domain.rules import validate_new_handoff
from server.domain.types import Caller, Handoff, Intent, Priority, Role, Status
from server.errors import DomainError, FailedPrecondition, NotFound, PermissionDenied
from server.models import events
from server.settings import Settings

USERS = {
    "t0": Role.TECHNICIAN,
    "t1": Role.TECHNICIAN,
    "e0": Role.ENGINEER,
    "e1": Role.ENGINEER,
    "a0": Role.ADMIN,
}
STAFF = ["e0", "e1", "a0"]
CANCELLERS = ["t0", "t1", "a0"]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(["t0", "t1"]), st.just(0)),
        st.tuples(st.just("pick_up"), st.sampled_from(STAFF), st.integers(0, 3)),
        st.tuples(st.just("release"), st.sampled_from(STAFF), st.integers(0, 3)),
        st.tuples(st.just("resolve"), st.sampled_from(STAFF), st.integers(0, 3)),
        st.tuples(st.just("cancel"), st.sampled_from(CANCELLERS), st.integers(0, 3)),
    ),
    min_size=1,
    max_size=25,
)


@dataclass
class Model:
    creator: str
    status: Status = Status.OPEN
    holder: str | None = None


def allowed(op: str, user: str, m: Model) -> bool:
    role = USERS[user]
    if op == "pick_up":  # picking up what you hold is answered, and changes nothing
        return m.status is Status.OPEN or (m.status is Status.PICKED_UP and m.holder == user)
    if op == "release":
        return m.status is Status.PICKED_UP and (m.holder == user or role is Role.ADMIN)
    if op == "resolve":
        return m.status is Status.PICKED_UP and m.holder == user
    if op == "cancel":
        return m.status is Status.OPEN and (m.creator == user or role is Role.ADMIN)
    raise AssertionError(op)


def refusal(op: str, user: str, m: Model) -> type[DomainError]:
    """The error a refused operation raises: acting on someone else's escalation or
    handoff is PERMISSION_DENIED, a state that does not allow it FAILED_PRECONDITION."""
    held_by_another = m.status is Status.PICKED_UP and m.holder != user
    if op == "resolve" and held_by_another:
        return PermissionDenied
    if op == "release" and held_by_another and USERS[user] is not Role.ADMIN:
        return PermissionDenied
    if op == "cancel" and m.creator != user and USERS[user] is Role.TECHNICIAN:
        return NotFound  # another technician's handoff is invisible to them
    if op == "cancel" and m.creator != user and USERS[user] is not Role.ADMIN:
        return PermissionDenied
    return FailedPrecondition


@pytest.fixture(scope="module")
def database_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fsm') / 'fsm.db'}"
    asyncio.run(upgrade(url))
    return url


async def run(url: str, ops: list[tuple[str, str, int]]) -> None:
    db = Database(url)
    core = Core(db, Settings(database_url=url))
    account = uuid.uuid4().hex
    callers = {u: Caller(u, account, r, u.upper()) for u, r in USERS.items()}
    ids: list[str] = []
    model: dict[str, Model] = {}
    changes = 0
    try:
        for op, user, index in ops:
            caller = callers[user]
            if op == "create":
                new = validate_new_handoff(
                    request_id=uuid.uuid4().hex,
                    session_id="s",
                    intent=Intent.ESCALATE,
                    priority=Priority.NORMAL,
                    problem_summary="p",
                    steps_tried=[],
                    notes="",
                )
                handoff, _ = await core.create_handoff(caller, new)
                ids.append(handoff.id)
                model[handoff.id] = Model(creator=user)
                changes += 1
                continue
            if not ids:
                continue
            handoff_id = ids[index % len(ids)]
            m = model[handoff_id]
            expected = allowed(op, user, m)
            action = {
                "pick_up": core.pick_up,
                "release": core.release,
                "cancel": core.cancel_handoff,
            }
            try:
                if op == "resolve":
                    await core.resolve(caller, handoff_id, "done")
                else:
                    await action[op](caller, handoff_id)
                succeeded = True
            except DomainError as e:
                succeeded = False
                assert type(e) is refusal(op, user, m), (op, user, m, e)
            assert succeeded == expected, (op, user, m)
            if succeeded and not (op == "pick_up" and m.holder == user):
                changes += 1
            if succeeded:
                m.status, m.holder = {
                    "pick_up": (Status.PICKED_UP, user),
                    "release": (Status.OPEN, None),
                    "resolve": (Status.RESOLVED, m.holder),
                    "cancel": (Status.CANCELLED, None),
                }[op]
        # The stored state is the model's, and the log replays to the stored state.
        async with db.read() as s:
            log = await events.read_after(s, account, 0, limit=10_000)
            head = await events.head(s, account)
        assert [e.sequence for e in log] == list(range(1, head + 1))
        assert head == changes  # a repeated pickup by the holder logged nothing
        replayed: dict[str, Handoff] = {}
        for event in log:
            assert event.handoff is not None
            replayed[event.handoff.id] = event.handoff
        assert set(replayed) == set(ids)
        for handoff_id, m in model.items():
            stored = await core.get_handoff(callers["a0"], handoff_id)
            assert stored == replayed[handoff_id]
            assert stored.status is m.status
            holder = stored.picked_up_by.id if stored.picked_up_by else None
            assert holder == (m.holder if m.status in (Status.PICKED_UP, Status.RESOLVED) else None)
    finally:
        await db.dispose()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_any_sequence_keeps_the_invariants(
    database_file: str, ops: list[tuple[str, str, int]]
) -> None:
    asyncio.run(run(database_file, ops))
