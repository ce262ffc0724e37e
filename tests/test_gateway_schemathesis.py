"""Schemathesis against the gateway's own /openapi.json: no generated request gets a 5xx.

Valid and schema-violating requests (positive and negative generation) for every REST
operation, sent with a valid admin token to a real gateway and server. The two SSE
routes never end by design, so they are left to test_gateway_sse.py.

Schemathesis and Hypothesis are synchronous: they run in a worker thread while this
event loop keeps serving the gateway and the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.generation import GenerationMode

from server.domain.types import Role
from tests.gateway_support import bearer

EXAMPLES = 25


def fuzz(base_url: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    calls = [0]
    results: list[Any] = list(schema.get_all_operations())
    for result in results:
        operation = result.ok()  # raises on an operation schemathesis cannot use
        if operation.path.endswith("/stream"):
            continue
        for mode in GenerationMode:
            check = checker(operation, mode, base_url, headers, calls, failures)
            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                # Nothing to break (e.g. no parameters at all): no negative cases exist.
                assert mode is GenerationMode.NEGATIVE, operation.label
    return calls[0], failures


def checker(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str],
    calls: list[int],
    failures: list[str],
) -> Callable[[], None]:
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        calls[0] += 1
        response = case.call(base_url=base_url, headers=headers, timeout=15)
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} {mode.value} -> "
                f"{response.status_code} {response.text[:300]}"
            )

    return check


async def test_no_5xx_for_generated_requests(gateway: Any, account: str) -> None:
    headers = bearer(account, Role.ADMIN)
    calls, failures = await asyncio.wait_for(
        asyncio.to_thread(fuzz, gateway.url, headers), timeout=100
    )
    assert calls > 100
    assert not failures, "\n".join(failures)
