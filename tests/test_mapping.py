"""One Handoff, four shapes: the row, the domain value, the event payload and the proto.

The conversions are derived from the dataclass fields by name (server/domain/shapes.py),
so these guards are what make a forgotten layer fail: a domain field without its column
or proto field, a proto or column nobody fills, or a value that does not survive a round
trip. See ARCHITECTURE.md, "Add a field to the Handoff".
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from resolutionflow.v1 import handoff_pb2 as pb

from server.api import convert
from server.db.schema import HANDOFFS
from server.domain import shapes
from server.domain.types import (
    Assessment,
    AssessmentStatus,
    Handoff,
    Intent,
    NewHandoff,
    Priority,
    Status,
    Step,
    UserRef,
)
from server.models import records

NOW = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)


def full_handoff() -> Handoff:
    """Every field set, none at its zero value, so a dropped field shows."""
    return Handoff(
        id="0f8fad5b-d9cb-469f-a165-70867728950e",
        account_id="acct",
        session_id="sess",
        intent=Intent.ESCALATE,
        status=Status.RESOLVED,
        priority=Priority.URGENT,
        problem_summary="printer on fire",
        steps_tried=(Step("unplug it", "smoke"), Step("water", "")),
        notes="third time",
        created_by=UserRef("t1", "Tess"),
        picked_up_by=UserRef("e1", "Eve"),
        resolution_note="new printer",
        assessment=Assessment(
            AssessmentStatus.READY, "fire", "extinguisher", "heuristic", "none", NOW
        ),
        sla_due_at=NOW + timedelta(minutes=5),
        created_at=NOW,
        picked_up_at=NOW + timedelta(minutes=1),
        resolved_at=NOW + timedelta(minutes=2),
        cancelled_at=NOW + timedelta(minutes=3),
        updated_at=NOW + timedelta(minutes=4),
        sequence=42,
    )


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_proto_field_is_mapped_from_the_domain_type() -> None:
    for cls, message in convert.MESSAGES.items():
        proto = {f.name for f in message.DESCRIPTOR.fields}
        assert proto == _names(cls), f"{message.DESCRIPTOR.full_name} vs {cls.__name__}"


def test_every_domain_field_has_a_column_and_every_column_a_source() -> None:
    columns = set(HANDOFFS.c.keys())
    assert columns >= records.MAPPED_COLUMNS, records.MAPPED_COLUMNS - columns
    unfilled = columns - records.MAPPED_COLUMNS - records.ROW_ONLY
    assert not unfilled, f"columns no domain field fills and not declared ROW_ONLY: {unfilled}"
    assert not records.MAPPED_COLUMNS & records.ROW_ONLY


def test_the_row_round_trip_keeps_every_field() -> None:
    handoff = full_handoff()
    row = records.to_row(handoff)
    assert row["priority_rank"] == Priority.URGENT.rank
    assert row["steps_tried"] == [
        {"description": "unplug it", "outcome": "smoke"},
        {"description": "water", "outcome": ""},
    ]
    stored = SimpleNamespace(**dict.fromkeys(HANDOFFS.c.keys()) | row)
    assert records.to_domain(stored) == handoff
    nobody = dataclasses.replace(handoff, picked_up_by=None)
    row = records.to_row(nobody)
    assert row["picked_up_by_id"] is None and row["picked_up_by_name"] is None
    assert records.to_domain(SimpleNamespace(**row)) == nobody


def test_the_payload_round_trip_keeps_every_field() -> None:
    handoff = full_handoff()
    payload = json.loads(json.dumps(handoff.to_json()))
    assert payload.keys() == _names(Handoff)
    assert Handoff.from_json(payload) == handoff
    assert Handoff.from_json(dataclasses.replace(handoff, picked_up_by=None).to_json()) == (
        dataclasses.replace(handoff, picked_up_by=None)
    )


def test_a_payload_from_before_a_field_existed_reads_as_its_default() -> None:
    @dataclasses.dataclass(frozen=True)
    class Later:
        id: str
        reopened_at: datetime | None
        tags: tuple[str, ...] = ()

    assert shapes.json_decoder(Later)({"id": "x"}) == Later("x", None, ())
    assert shapes.json_decoder(Later)(shapes.json_encoder(Later)(Later("y", NOW, ("a",)))) == (
        Later("y", NOW, ("a",))
    )


def _proto_values(message: Any) -> dict[str, Any]:
    return {f.name: v for f, v in message.ListFields()}


def test_the_proto_carries_every_field() -> None:
    handoff = full_handoff()
    message = convert.handoff(handoff)
    assert _proto_values(message).keys() == _names(Handoff)
    assert message.priority == pb.PRIORITY_URGENT
    assert message.status == pb.HANDOFF_STATUS_RESOLVED
    assert message.cancelled_at.ToDatetime(UTC) == handoff.cancelled_at
    assert [(s.description, s.outcome) for s in message.steps_tried] == [
        ("unplug it", "smoke"),
        ("water", ""),
    ]
    assert message.picked_up_by.name == "Eve"
    assert _proto_values(message.assessment).keys() == _names(Assessment)
    assert not convert.handoff(dataclasses.replace(handoff, picked_up_by=None)).HasField(
        "picked_up_by"
    )


def test_a_new_handoff_opens_with_every_column_filled() -> None:
    new = NewHandoff("r1", "s", Intent.REASSIGN, Priority.LOW, "p", (Step("a"),), "n")
    opened = new.open("id", "acct", UserRef("u", "U"), NOW, None)
    assert opened.status is Status.OPEN and opened.assessment.status is AssessmentStatus.PENDING
    assert records.to_row(opened).keys() == records.MAPPED_COLUMNS
