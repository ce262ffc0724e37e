"""Bad input: INVALID_ARGUMENT with field violations in the rich status, and no change."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from resolutionflow.v1 import escalation_pb2 as esc
from resolutionflow.v1 import handoff_pb2 as pb
from sqlalchemy import func, select

from server.db.schema import EventRecord, HandoffRecord
from server.runtime import ServerRuntime
from tests.support import Client, create_request, fails, settled


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """The field violations of the google.rpc.BadRequest in the error's rich status."""
    # grpc.aio yields (key, value) pairs here, whatever grpc-stubs says.
    metadata: Any = error.trailing_metadata() or ()
    trailers: dict[str, str | bytes] = dict(metadata)
    raw = trailers.get("grpc-status-details-bin")
    assert isinstance(raw, bytes), f"no rich status in the trailers: {trailers}"
    status = status_pb2.Status.FromString(raw)
    # The rich status agrees with the plain one.
    assert status.code == code_pb2.INVALID_ARGUMENT == error.code().value[0]
    assert status.message == error.details()
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.update({v.field: v.description for v in bad_request.field_violations})
    assert found, f"no BadRequest in {status}"
    assert all(found.values()), f"a violation without a description: {found}"
    return found


async def invalid(call: Awaitable[Any], *fields: str) -> dict[str, str]:
    """Expect INVALID_ARGUMENT naming exactly these fields."""
    error = await fails(call, grpc.StatusCode.INVALID_ARGUMENT)
    found = violations(error)
    assert set(found) == set(fields), found
    return found


async def state(engineer: Client, server: ServerRuntime) -> tuple[int, int, int, int]:
    """What bad input must not change: handoffs listed, queue cursor, rows in the DB."""
    listed = await engineer.call("handoffs", "ListHandoffs", pb.ListHandoffsRequest(page_size=200))
    queue = await engineer.call("escalations", "ListEscalations", esc.ListEscalationsRequest())
    async with server.db.read() as s:
        handoffs = await s.scalar(
            select(func.count())
            .select_from(HandoffRecord)
            .where(HandoffRecord.account_id == engineer.account)
        )
        events = await s.scalar(
            select(func.count())
            .select_from(EventRecord)
            .where(EventRecord.account_id == engineer.account)
        )
    return len(listed.handoffs), queue.sequence, int(handoffs or 0), int(events or 0)


@pytest.fixture
async def baseline(
    technician: Client, engineer: Client, server: ServerRuntime
) -> tuple[int, int, int, int]:
    """One settled handoff in the account, so 'unchanged' is not merely 'still empty'."""
    existing = await technician.create()
    await settled(engineer, existing.id)
    before = await state(engineer, server)
    assert before[0] == before[2] == 1 and before[1] >= 1
    return before


def steps(n: int, **fields: str) -> list[pb.Step]:
    return [
        pb.Step(**{"description": f"step {i}", "outcome": "failed", **fields}) for i in range(n)
    ]


BAD_CREATES: dict[str, tuple[dict[str, Any], str]] = {
    "control character in request_id": ({"request_id": "r\x1b"}, "request_id"),
    "request_id over 128": ({"request_id": "r" * 129}, "request_id"),
    "empty session_id": ({"session_id": ""}, "session_id"),
    "blank session_id": ({"session_id": "   "}, "session_id"),
    "unspecified intent": ({"intent": pb.HANDOFF_INTENT_UNSPECIFIED}, "intent"),
    "unknown intent": ({"intent": 99}, "intent"),
    "unknown priority": ({"priority": 99}, "priority"),
    "empty problem_summary": ({"problem_summary": ""}, "problem_summary"),
    "blank problem_summary": ({"problem_summary": " \t\n "}, "problem_summary"),
    "problem_summary over 2000": ({"problem_summary": "p" * 2001}, "problem_summary"),
    "51 steps": ({"steps_tried": steps(51)}, "steps_tried"),
    "step without description": ({"steps_tried": steps(1, description="")}, "steps_tried[0]"),
    "step with blank description": (
        {"steps_tried": [*steps(2), pb.Step(description="  ", outcome="x")]},
        "steps_tried[2]",
    ),
    "step description over 1000": (
        {"steps_tried": steps(1, description="d" * 1001)},
        "steps_tried[0]",
    ),
    "step outcome over 200": ({"steps_tried": steps(1, outcome="o" * 201)}, "steps_tried[0]"),
    "notes over 10000": ({"notes": "n" * 10_001}, "notes"),
    "control character in problem_summary": (
        {"problem_summary": "VPN\x07 down"},
        "problem_summary",
    ),
    "NUL in notes": ({"notes": "a\x00b"}, "notes"),
}


@pytest.mark.parametrize("case", list(BAD_CREATES))
async def test_bad_create_is_invalid_argument_and_changes_nothing(
    technician: Client,
    engineer: Client,
    server: ServerRuntime,
    baseline: tuple[int, int, int, int],
    case: str,
) -> None:
    fields, field = BAD_CREATES[case]
    error = await fails(
        technician.handoffs.CreateHandoff(
            create_request(**fields), metadata=technician.metadata, timeout=30
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    found = violations(error)
    assert any(name == field or name.startswith(field + ".") for name in found), found
    if field.startswith("steps_tried["):
        # Names the exact part of the step that is wrong.
        (name,) = found
        part = "outcome" if "outcome" in case else "description"
        assert name == f"{field}.{part}"
    assert field.split("[")[0] in (error.details() or "")
    assert await state(engineer, server) == baseline


async def test_every_violation_is_reported_at_once(
    technician: Client, engineer: Client, server: ServerRuntime, baseline: tuple[int, int, int, int]
) -> None:
    await invalid(
        technician.handoffs.CreateHandoff(
            create_request(
                session_id="",
                intent=pb.HANDOFF_INTENT_UNSPECIFIED,
                problem_summary="",
                steps_tried=[pb.Step(description="ok"), pb.Step(description="", outcome="o" * 201)],
                notes="n" * 10_001,
            ),
            metadata=technician.metadata,
            timeout=30,
        ),
        "session_id",
        "intent",
        "problem_summary",
        "steps_tried[1].description",
        "steps_tried[1].outcome",
        "notes",
    )
    assert await state(engineer, server) == baseline


async def test_limits_themselves_are_accepted(technician: Client) -> None:
    """The other side of each boundary above: exactly at the limit is fine."""
    created = await technician.create(
        request_id="r" * 128,
        session_id="s" * 128,
        problem_summary="p" * 2000,
        steps_tried=steps(50, description="d" * 1000, outcome="o" * 200),
        notes="line one\n\tline two\r\n" + "n" * 9_980,
    )
    assert len(created.problem_summary) == 2000
    assert len(created.steps_tried) == 50
    assert len(created.notes) == 10_000


RPCS_WITH_AN_ID: dict[str, tuple[str, Any]] = {
    "GetHandoff": ("handoffs", pb.GetHandoffRequest),
    "CancelHandoff": ("handoffs", pb.CancelHandoffRequest),
    "PickUpEscalation": ("escalations", esc.PickUpEscalationRequest),
    "GetHandoffContext": ("escalations", esc.GetHandoffContextRequest),
    "ReleaseEscalation": ("escalations", esc.ReleaseEscalationRequest),
    "ResolveEscalation": ("escalations", esc.ResolveEscalationRequest),
}


@pytest.mark.parametrize("rpc", list(RPCS_WITH_AN_ID))
@pytest.mark.parametrize("handoff_id", ["not-a-uuid", ""])
async def test_handoff_id_must_be_a_uuid(engineer: Client, rpc: str, handoff_id: str) -> None:
    service, request = RPCS_WITH_AN_ID[rpc]
    found = await invalid(engineer.call(service, rpc, request(handoff_id=handoff_id)), "handoff_id")
    assert "UUID" in found["handoff_id"]


@pytest.mark.parametrize("page_size", [500, 201, -1])
async def test_page_size_out_of_range(engineer: Client, page_size: int) -> None:
    await invalid(
        engineer.call("handoffs", "ListHandoffs", pb.ListHandoffsRequest(page_size=page_size)),
        "page_size",
    )


VALID_NAMES = {
    "status": "HANDOFF_STATUS_OPEN, HANDOFF_STATUS_PICKED_UP, HANDOFF_STATUS_RESOLVED, "
    "HANDOFF_STATUS_CANCELLED",
    "intent": "HANDOFF_INTENT_ESCALATE, HANDOFF_INTENT_REASSIGN",
    "priority": "PRIORITY_LOW, PRIORITY_NORMAL, PRIORITY_HIGH, PRIORITY_URGENT",
}


@pytest.mark.parametrize("field", ["status", "intent", "priority"])
async def test_unknown_list_filter_value(engineer: Client, field: str) -> None:
    request = pb.ListHandoffsRequest()
    setattr(request, field, 99)
    found = await invalid(engineer.call("handoffs", "ListHandoffs", request), field)
    assert found[field] == f"unknown value 99; must be one of {VALID_NAMES[field]}"


@pytest.mark.parametrize(
    ("field", "value"),
    [("intent", 99), ("intent", pb.HANDOFF_INTENT_UNSPECIFIED), ("priority", 99)],
)
async def test_enum_errors_list_the_valid_values(
    technician: Client, field: str, value: int
) -> None:
    found = await invalid(
        technician.handoffs.CreateHandoff(
            create_request(**{field: value}), metadata=technician.metadata, timeout=30
        ),
        field,
    )
    assert found[field].endswith(f"must be one of {VALID_NAMES[field]}"), found


async def test_resolution_note_over_5000_changes_nothing(
    technician: Client, engineer: Client, server: ServerRuntime
) -> None:
    created = await technician.create()
    await engineer.call(
        "escalations", "PickUpEscalation", esc.PickUpEscalationRequest(handoff_id=created.id)
    )
    await settled(engineer, created.id)
    before = await state(engineer, server)
    await invalid(
        engineer.call(
            "escalations",
            "ResolveEscalation",
            esc.ResolveEscalationRequest(handoff_id=created.id, resolution_note="r" * 5001),
        ),
        "resolution_note",
    )
    assert await state(engineer, server) == before
    after = await engineer.call(
        "handoffs", "GetHandoff", pb.GetHandoffRequest(handoff_id=created.id)
    )
    assert after.handoff.status == pb.HANDOFF_STATUS_PICKED_UP
    # Exactly at the limit it resolves.
    resolved = await engineer.call(
        "escalations",
        "ResolveEscalation",
        esc.ResolveEscalationRequest(handoff_id=created.id, resolution_note="r" * 5000),
    )
    assert resolved.handoff.status == pb.HANDOFF_STATUS_RESOLVED


async def test_oversized_request_is_refused_and_creates_nothing(
    technician: Client,
    engineer: Client,
    server: ServerRuntime,
    baseline: tuple[int, int, int, int],
) -> None:
    limit = server.settings.max_request_bytes
    request = create_request(request_id=str(uuid.uuid4()), notes="n" * (limit + 1))
    assert request.ByteSize() > limit
    await fails(
        technician.handoffs.CreateHandoff(request, metadata=technician.metadata, timeout=30),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert await state(engineer, server) == baseline
