"""Assessment providers: the offline rule-based one and any OpenAI-compatible endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from server.domain.triage import triage
from server.domain.types import Handoff
from server.models.search import shared_terms
from server.settings import Settings

log = logging.getLogger(__name__)

MAX_SUMMARY = 2_000
MAX_STEP = 500
# Past fixes offered to a provider: a few, each cut short, so a prompt stays small however
# long the account's resolution notes are.
MAX_PAST_FIXES = 3
MAX_PAST_PROBLEM = 300
MAX_PAST_FIX = 400
# The heuristic cites a past fix only when it shares this many words with the problem:
# one common word ("error", "user") is not a similar escalation.
MIN_SHARED_TERMS = 2


@dataclass(frozen=True)
class Verdict:
    summary: str
    suggested_first_step: str


class AssessmentFailed(Exception):
    """The provider gave no usable answer; ``reason`` is saved on the assessment."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Provider(Protocol):
    name: str
    # Runs in this process without I/O (no call to bound, no time to wait for).
    local: bool

    async def assess(self, handoff: Handoff, similar: Sequence[Handoff] = ()) -> Verdict:
        """``similar``: the account's resolved escalations closest to this one, best first
        (server/models/search.py); never another account's."""
        ...


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def cite(h: Handoff) -> str:
    """How a past fix is named: its short id and the day it was resolved."""
    day = h.resolved_at.date().isoformat() if h.resolved_at else "earlier"
    return f"#{h.id[:8]}, resolved {day}"


def closest_fix(handoff: Handoff, similar: Sequence[Handoff]) -> Handoff | None:
    """The best-ranked past escalation with a resolution note that is close enough."""
    for past in similar:
        if past.resolution_note.strip() and shared_terms(handoff, past) >= MIN_SHARED_TERMS:
            return past
    return None


class HeuristicProvider:
    """Deterministic rules over the problem and the steps tried; says it is not a model."""

    name = "heuristic (rule-based, not an AI model)"
    local = True

    async def assess(self, handoff: Handoff, similar: Sequence[Handoff] = ()) -> Verdict:
        t = triage(handoff.problem_summary, handoff.steps_tried, handoff.notes)
        parts = [f"Rule-based assessment, not an AI model. This looks like a {t.category} problem."]
        if t.failed:
            tried = "; ".join(s.description for s in t.failed)
            parts.append(f"Tried without success: {tried}.")
        if t.helped:
            parts.append("Partly helped: " + "; ".join(s.description for s in t.helped) + ".")
        if not handoff.steps_tried:
            parts.append("Nothing has been tried yet.")
        parts.append(f"Not tried yet: {t.next_step[0].lower()}{t.next_step[1:]}.")
        step = t.next_step
        past = closest_fix(handoff, similar)
        if past is not None:
            # What actually fixed this account's closest problem beats a generic rule.
            fix = _short(past.resolution_note, MAX_PAST_FIX)
            step = f"A similar escalation ({cite(past)}) was fixed by: {fix}"
            parts.append(step if step.endswith((".", "!", "?", "…")) else step + ".")
        return Verdict(summary=" ".join(parts)[:MAX_SUMMARY], suggested_first_step=step[:MAX_STEP])


SYSTEM_PROMPT = (
    "You help senior help-desk engineers take over an escalated support case. Reply with a "
    'JSON object only: {"summary": "<2-4 sentences: likely cause and what the steps tried '
    'rule out>", "suggested_first_step": "<one concrete action the engineer should take '
    'first, not already tried>"}. Past fixes, when given, are escalations of the same '
    "team resolved before; suggest one only if it fits this problem."
)


def past_fixes(similar: Sequence[Handoff]) -> str:
    """The prompt's section of past fixes, bounded in count and in length."""
    lines = [
        f"- {cite(h)}: problem: {_short(h.problem_summary, MAX_PAST_PROBLEM)}; "
        f"fixed by: {_short(h.resolution_note, MAX_PAST_FIX) or '-'}"
        for h in similar[:MAX_PAST_FIXES]
    ]
    return "\n".join(lines)


class OpenAIProvider:
    """Chat completions over HTTP, with a timeout, bounded retries and a strict parse."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        *,
        timeout: float = 20.0,
        attempts: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.name = f"openai-compatible ({model})"
        self.local = False
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff

    async def assess(self, handoff: Handoff, similar: Sequence[Handoff] = ()) -> Verdict:
        steps = "\n".join(
            f"- {s.description} (outcome: {s.outcome or 'unknown'})" for s in handoff.steps_tried
        )
        body = {
            "model": self.model,
            "temperature": 0.2,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": f"Priority: {handoff.priority.value}\n"
                    f"Problem: {handoff.problem_summary}\n"
                    f"Steps tried:\n{steps or '- none'}\nNotes: {handoff.notes or '-'}"
                    + (
                        f"\nSimilar escalations resolved before (closest first):\n{fixes}"
                        if (fixes := past_fixes(similar))
                        else ""
                    ),
                },
            ],
        }
        async with httpx.AsyncClient(timeout=self.timeout, headers=self.headers) as http:
            last = "no attempt made"
            for attempt in range(1, self.attempts + 1):
                try:
                    response = await http.post(self.url, json=body)
                except httpx.TimeoutException:
                    last = f"timed out after {self.timeout:g}s"
                except httpx.HTTPError as e:
                    last = f"request failed: {type(e).__name__}"
                else:
                    if response.status_code == 200:
                        return _parse(response)
                    last = f"HTTP {response.status_code}"
                    if response.status_code not in (408, 409, 429) and response.status_code < 500:
                        break  # the request itself is wrong; retrying will not help
                if attempt < self.attempts:
                    await asyncio.sleep(self.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1))
            raise AssessmentFailed(f"provider gave no answer: {last}")


def _parse(response: httpx.Response) -> Verdict:
    try:
        content = response.json()["choices"][0]["message"]["content"]
        answer = json.loads(content)
        summary, step = answer["summary"], answer["suggested_first_step"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise AssessmentFailed("provider answer is not the expected JSON") from None
    if not (
        isinstance(summary, str) and isinstance(step, str) and summary.strip() and step.strip()
    ):
        raise AssessmentFailed("provider answer has an empty or non-text field")
    return Verdict(summary.strip()[:MAX_SUMMARY], step.strip()[:MAX_STEP])


def provider_from(settings: Settings) -> Provider:
    if settings.assessment_provider == "openai":
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIProvider(
            settings.openai_base_url,
            settings.openai_model,
            key,
            timeout=settings.openai_timeout_seconds,
        )
    return HeuristicProvider()
