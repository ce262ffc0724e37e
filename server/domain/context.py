"""The handoff-context screen: what an engineer reads first after picking up."""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.triage import triage
from server.domain.types import Assessment, AssessmentStatus, Handoff, Step


@dataclass(frozen=True)
class HandoffContext:
    handoff: Handoff
    problem_summary: str
    whats_been_tried: tuple[Step, ...]
    ai_assessment: Assessment
    start_here: str
    notes: str
    # The account's resolved escalations most like this one (what fixed it last time).
    similar_resolved: tuple[Handoff, ...] = ()


def build_context(handoff: Handoff, similar: tuple[Handoff, ...] = ()) -> HandoffContext:
    return HandoffContext(
        handoff=handoff,
        problem_summary=handoff.problem_summary,
        whats_been_tried=handoff.steps_tried,
        ai_assessment=handoff.assessment,
        start_here=start_here(handoff),
        notes=handoff.notes,
        similar_resolved=similar,
    )


def start_here(handoff: Handoff) -> str:
    """The assessment's first step once it is ready; until then the first untried step."""
    a = handoff.assessment
    if a.status is AssessmentStatus.READY and a.suggested_first_step:
        return a.suggested_first_step
    return triage(handoff.problem_summary, handoff.steps_tried, handoff.notes).next_step
