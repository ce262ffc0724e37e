"""Assessments: the rule-based provider, the OpenAI-compatible client against a local fake
server, and the background worker (never in the way of creation, survives restarts)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import grpc
import pytest
from pydantic import SecretStr
from resolutionflow.v1 import escalation_pb2, handoff_pb2

from server.assessment.providers import (
    MAX_PAST_FIX,
    MAX_PAST_FIXES,
    MAX_PAST_PROBLEM,
    MAX_STEP,
    AssessmentFailed,
    HeuristicProvider,
    OpenAIProvider,
)
from server.domain.context import start_here
from server.domain.types import (
    Assessment,
    AssessmentStatus,
    Handoff,
    Intent,
    Priority,
    Role,
    Status,
    Step,
    UserRef,
)
from server.runtime import ServerRuntime
from server.settings import Settings
from tests.fake_openai import Reply, answer, fake_openai
from tests.support import Client, of_type, stream_escalations, token, wait_until

pb = handoff_pb2
NOW = datetime(2026, 11, 25, tzinfo=UTC)


def handoff(
    summary: str, *steps: Step, status: AssessmentStatus = AssessmentStatus.PENDING
) -> Handoff:
    return Handoff(
        id="00000000-0000-0000-0000-000000000001",
        account_id="a",
        session_id="s",
        intent=Intent.ESCALATE,
        status=Status.OPEN,
        priority=Priority.HIGH,
        problem_summary=summary,
        steps_tried=steps,
        notes="",
        created_by=UserRef("t", "Tina"),
        picked_up_by=None,
        resolution_note="",
        assessment=Assessment(status=status),
        sla_due_at=None,
        created_at=NOW,
        picked_up_at=None,
        resolved_at=None,
        cancelled_at=None,
        updated_at=NOW,
        sequence=1,
    )


async def test_heuristic_is_deterministic_says_so_and_skips_what_was_tried() -> None:
    h = handoff(
        "Customer's VPN disconnects every few minutes",
        Step("Restarted the VPN client and the network adapter", "no change"),
        Step("Checked other sites load", "they do"),
    )
    provider = HeuristicProvider()
    first, second = await provider.assess(h), await provider.assess(h)
    assert first == second
    assert "not an AI model" in first.summary and "not an AI model" in provider.name
    assert "network / VPN" in first.summary
    assert "Restarted the VPN client" in first.summary  # what failed is named
    assert first.suggested_first_step.startswith("Flush the DNS cache")  # first untried step
    # Until an assessment arrives, "start here" is that same first untried step.
    assert start_here(h) == first.suggested_first_step


async def test_heuristic_without_steps_or_known_category() -> None:
    verdict = await HeuristicProvider().assess(handoff("Strange beeping from the device"))
    assert "Nothing has been tried yet" in verdict.summary
    assert verdict.suggested_first_step.startswith("Reproduce the problem")


def resolved(summary: str, note: str, handoff_id: str, account: str = "a") -> Handoff:
    return dataclasses.replace(
        handoff(summary),
        id=handoff_id,
        account_id=account,
        status=Status.RESOLVED,
        resolution_note=note,
        resolved_at=datetime(2026, 11, 20, 9, tzinfo=UTC),
    )


async def test_heuristic_suggests_what_fixed_the_closest_resolved_escalation() -> None:
    h = handoff("VPN client disconnects every few minutes")
    fixed = resolved("VPN client disconnected all day", "Reinstalled the VPN client", "abcdef12-x")
    verdict = await HeuristicProvider().assess(h, [fixed])
    assert verdict.suggested_first_step == (
        "A similar escalation (#abcdef12, resolved 2026-11-20) was fixed by: "
        "Reinstalled the VPN client"
    )
    assert "was fixed by: Reinstalled the VPN client." in verdict.summary
    # One shared common word is no similar escalation: the rule-based step stands.
    unlike = resolved("Printer shows client error", "Replaced the toner", "0badc0de-x")
    plain = await HeuristicProvider().assess(h, [unlike])
    assert plain == await HeuristicProvider().assess(h)
    assert "toner" not in plain.summary + plain.suggested_first_step
    # A very long resolution note is cut short, within the step's bound.
    long = resolved("VPN client disconnects", "Reinstalled. " * 500, "abcdef12-y")
    verdict = await HeuristicProvider().assess(h, [long])
    assert len(verdict.suggested_first_step) <= MAX_STEP
    assert verdict.suggested_first_step.endswith("…")


async def test_openai_prompt_carries_the_closest_past_fixes_bounded() -> None:
    similar = [
        resolved(f"VPN drops, case {i}", f"Fix number {i} " + "x" * 5_000, f"0000000{i}-z")
        for i in range(5)
    ]
    async with fake_openai(Reply(body=answer("s", "t"))) as fake:
        await provider(fake.base_url).assess(handoff("VPN drops"), similar)
    prompt = fake.requests[0]["json"]["messages"][1]["content"]
    assert "Similar escalations resolved before (closest first):" in prompt
    for i in range(MAX_PAST_FIXES):
        assert f"#0000000{i}, resolved 2026-11-20" in prompt and f"Fix number {i}" in prompt
    assert "Fix number 3" not in prompt  # only the top few
    assert len(prompt) < 3 * (MAX_PAST_PROBLEM + MAX_PAST_FIX + 100) + 500
    # Without any, the prompt says nothing about past fixes.
    async with fake_openai(Reply(body=answer("s", "t"))) as fake:
        await provider(fake.base_url).assess(handoff("VPN drops"))
    assert "Similar escalations" not in fake.requests[0]["json"]["messages"][1]["content"]


def provider(base_url: str, **kw: float) -> OpenAIProvider:
    return OpenAIProvider(base_url, "test-model", "sk-test", backoff=0.01, **kw)  # type: ignore[arg-type]


async def test_openai_good_answer() -> None:
    async with fake_openai(Reply(body=answer("Likely a stale DNS cache.", "Flush DNS"))) as fake:
        verdict = await provider(fake.base_url).assess(handoff("VPN drops"))
    assert (verdict.summary, verdict.suggested_first_step) == (
        "Likely a stale DNS cache.",
        "Flush DNS",
    )
    sent = fake.requests[0]
    assert sent["headers"]["authorization"] == "Bearer sk-test"
    assert sent["json"]["model"] == "test-model"
    assert "VPN drops" in sent["json"]["messages"][1]["content"]


@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        {"choices": []},
        {"choices": [{"message": {"content": "plain prose, no JSON"}}]},
        {"choices": [{"message": {"content": '{"summary": "", "suggested_first_step": "x"}'}}]},
        {"choices": [{"message": {"content": '{"summary": 3, "suggested_first_step": "x"}'}}]},
    ],
)
async def test_openai_malformed_answers_fail_with_a_reason(body: object) -> None:
    async with fake_openai(Reply(body=body)) as fake:
        with pytest.raises(AssessmentFailed) as caught:
            await provider(fake.base_url).assess(handoff("x"))
    assert "answer" in caught.value.reason
    assert len(fake.requests) == 1  # a bad answer is not retried


async def test_openai_timeout_is_retried_then_fails() -> None:
    async with fake_openai(Reply(body=answer("a", "b"), delay=2)) as fake:
        with pytest.raises(AssessmentFailed) as caught:
            await provider(fake.base_url, timeout=0.2).assess(handoff("x"))
    assert "timed out" in caught.value.reason
    assert len(fake.requests) == 3


async def test_openai_server_error_then_success() -> None:
    async with fake_openai(Reply(status=500), Reply(body=answer("ok", "step"))) as fake:
        verdict = await provider(fake.base_url).assess(handoff("x"))
    assert verdict.summary == "ok"
    assert len(fake.requests) == 2


async def test_openai_rate_limited_gives_up_after_bounded_retries() -> None:
    async with fake_openai(Reply(status=429)) as fake:
        with pytest.raises(AssessmentFailed) as caught:
            await provider(fake.base_url).assess(handoff("x"))
    assert "HTTP 429" in caught.value.reason
    assert len(fake.requests) == 3


async def test_openai_client_error_is_not_retried() -> None:
    async with fake_openai(Reply(status=401)) as fake:
        with pytest.raises(AssessmentFailed):
            await provider(fake.base_url).assess(handoff("x"))
    assert len(fake.requests) == 1


def openai_settings(settings: Settings, base_url: str, timeout: float = 30) -> Settings:
    return settings.model_copy(
        update={
            "assessment_provider": "openai",
            "openai_base_url": base_url,
            "openai_api_key": SecretStr("sk-test"),
            "openai_timeout_seconds": timeout,
            "assessment_timeout_seconds": timeout * 4,
        }
    )


async def test_creation_never_waits_for_a_slow_provider(settings: Settings, account: str) -> None:
    async with fake_openai(
        Reply(body=answer("Slow but sure.", "Call the customer"), delay=5)
    ) as fake:
        runtime = ServerRuntime(openai_settings(settings, fake.base_url))
        await runtime.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
                tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
                eng = Client(ch, token(account, "e", Role.ENGINEER), account, "e")
                reader = stream_escalations(eng)
                await reader.wait_for(lambda r: len(r.events) >= 1)
                created = await tech.create()
                assert not fake.answered.is_set(), "CreateHandoff waited for the provider"
                assert created.assessment.status == pb.ASSESSMENT_STATUS_PENDING
                await reader.wait_for(
                    lambda r: len(of_type(r, pb.EVENT_TYPE_ASSESSMENT_READY)) >= 1, timeout=30
                )
                (ready,) = of_type(reader, pb.EVENT_TYPE_ASSESSMENT_READY)
                assert ready.handoff.id == created.id
                assert ready.handoff.assessment.status == pb.ASSESSMENT_STATUS_READY
                assert ready.handoff.assessment.summary == "Slow but sure."
                assert ready.handoff.assessment.provider == "openai-compatible (gpt-4o-mini)"
                stored = await tech.call(
                    "handoffs", "GetHandoff", pb.GetHandoffRequest(handoff_id=created.id)
                )
                assert stored.handoff.assessment.suggested_first_step == "Call the customer"
                reader.cancel()
        finally:
            await runtime.stop(0)


async def test_failing_provider_marks_failed_and_leaves_the_handoff_alone(
    settings: Settings, account: str
) -> None:
    async with fake_openai(Reply(status=503)) as fake:
        runtime = ServerRuntime(openai_settings(settings, fake.base_url))
        await runtime.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
                tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
                eng = Client(ch, token(account, "e", Role.ENGINEER), account, "e")
                reader = stream_escalations(eng, after=0)
                created = await tech.create()
                await reader.wait_for(
                    lambda r: len(of_type(r, pb.EVENT_TYPE_ASSESSMENT_READY)) >= 1
                )
                (event,) = of_type(reader, pb.EVENT_TYPE_ASSESSMENT_READY)
                assert event.handoff.assessment.status == pb.ASSESSMENT_STATUS_FAILED
                assert "HTTP 503" in event.handoff.assessment.failure_reason
                assert event.handoff.status == pb.HANDOFF_STATUS_OPEN
                # The escalation works as ever; the context falls back to the rule-based step.
                context = await eng.call(
                    "escalations",
                    "PickUpEscalation",
                    escalation_pb2.PickUpEscalationRequest(handoff_id=created.id),
                )
                assert context.context.start_here
                reader.cancel()
        finally:
            await runtime.stop(0)


async def test_pending_assessments_survive_a_restart(settings: Settings, account: str) -> None:
    async with fake_openai(Reply(body=answer("never", "arrives"), delay=30)) as fake:
        first = ServerRuntime(openai_settings(settings, fake.base_url, timeout=60))
        await first.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as ch:
            tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
            created = await tech.create()
            await asyncio.wait_for(fake.received.wait(), 10)  # in flight when we stop
        await first.stop(0)
    second = ServerRuntime(settings)  # heuristic provider this time
    await second.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as ch:
            eng = Client(ch, token(account, "e", Role.ENGINEER), account, "e")
            reader = stream_escalations(eng, after=0)
            await reader.wait_for(lambda r: len(of_type(r, pb.EVENT_TYPE_ASSESSMENT_READY)) >= 1)
            (ready,) = of_type(reader, pb.EVENT_TYPE_ASSESSMENT_READY)
            assert ready.handoff.id == created.id
            assert ready.handoff.assessment.status == pb.ASSESSMENT_STATUS_READY
            assert "rule-based" in ready.handoff.assessment.provider
            reader.cancel()
    finally:
        await second.stop(0)


async def test_the_openai_prompt_carries_only_the_accounts_own_past_fixes(
    own_settings: Settings, account: str
) -> None:
    """Through the running server: the request the provider receives for a new escalation
    names the account's resolved fix, never another account's with the same words."""
    other = f"{account}-other"
    async with fake_openai(Reply(body=answer("ok", "step"))) as fake:
        runtime = ServerRuntime(openai_settings(own_settings, fake.base_url))
        await runtime.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
                for acct, note in ((account, "Reissued the VPN certificate"), (other, "SECRET")):
                    tech = Client(ch, token(acct, "t", Role.TECHNICIAN), acct, "t")
                    eng = Client(ch, token(acct, "e", Role.ENGINEER), acct, "e")
                    past = await tech.create(problem_summary="VPN tunnel drops every hour")
                    await eng.call(
                        "escalations",
                        "PickUpEscalation",
                        escalation_pb2.PickUpEscalationRequest(handoff_id=past.id),
                    )
                    await eng.call(
                        "escalations",
                        "ResolveEscalation",
                        escalation_pb2.ResolveEscalationRequest(
                            handoff_id=past.id, resolution_note=note
                        ),
                    )
                tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
                await tech.create(problem_summary="The VPN tunnel drops again")

                def prompts() -> list[str]:
                    return [
                        r["json"]["messages"][1]["content"]
                        for r in fake.requests
                        if "drops again" in r["json"]["messages"][1]["content"]
                    ]

                await wait_until(lambda: bool(prompts()), timeout=30)
                (prompt,) = prompts()
                assert "fixed by: Reissued the VPN certificate" in prompt
                assert "SECRET" not in prompt
        finally:
            await runtime.stop(0)
