"""Assessment providers: the offline rule-based one and any OpenAI-compatible endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from typing import Protocol

import httpx

from server.domain.triage import triage
from server.domain.types import Handoff
from server.settings import Settings

log = logging.getLogger(__name__)

MAX_SUMMARY = 2_000
MAX_STEP = 500


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

    async def assess(self, handoff: Handoff) -> Verdict: ...


class HeuristicProvider:
    """Deterministic rules over the problem and the steps tried; says it is not a model."""

    name = "heuristic (rule-based, not an AI model)"

    async def assess(self, handoff: Handoff) -> Verdict:
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
        return Verdict(summary=" ".join(parts), suggested_first_step=t.next_step)


SYSTEM_PROMPT = (
    "You help senior help-desk engineers take over an escalated support case. Reply with a "
    'JSON object only: {"summary": "<2-4 sentences: likely cause and what the steps tried '
    'rule out>", "suggested_first_step": "<one concrete action the engineer should take '
    'first, not already tried>"}.'
)


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
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff

    async def assess(self, handoff: Handoff) -> Verdict:
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
                    f"Steps tried:\n{steps or '- none'}\nNotes: {handoff.notes or '-'}",
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
