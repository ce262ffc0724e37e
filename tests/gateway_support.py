"""Helpers for the gateway tests: a real uvicorn gateway, tokens as headers, SSE readers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from gateway.app import LocalSignIn
from gateway.serve import RunningGateway, start_gateway
from gateway.settings import GatewaySettings
from server.domain.types import Role
from server.runtime import ServerRuntime
from tests.support import TLS, token


@asynccontextmanager
async def running_gateway(
    upstream: str, *, local_sign_in: LocalSignIn | None = None, **settings: Any
) -> AsyncIterator[RunningGateway]:
    """A real gateway under uvicorn on a free port, in this event loop."""
    gateway = await start_gateway(
        GatewaySettings(http_addr="127.0.0.1:0", upstream=upstream, **settings),
        log_level="warning",
        local_sign_in=local_sign_in,
    )
    try:
        yield gateway
    finally:
        await gateway.stop()


def bearer(
    account: str, role: Role | str, user: str | None = None, name: str = ""
) -> dict[str, str]:
    role = Role(role)
    user = user or f"{role.value}-1"
    return {"Authorization": f"Bearer {token(account, user, role, name=name or user.title())}"}


def handoff_body(**fields: Any) -> dict[str, Any]:
    import uuid

    body: dict[str, Any] = {
        "requestId": str(uuid.uuid4()),
        "sessionId": "session-1",
        "intent": "HANDOFF_INTENT_ESCALATE",
        "priority": "PRIORITY_HIGH",
        "problemSummary": "Outlook keeps asking for a password",
        "stepsTried": [{"description": "Re-entered the password", "outcome": "failed"}],
    }
    body.update(fields)
    return body


# Checks of REST answers, shared by the gateway test modules.

BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


def violations(body: dict[str, Any]) -> dict[str, str]:
    """field -> description of the google.rpc.BadRequest in an error body."""
    found: dict[str, str] = {}
    for detail in body["details"]:
        if detail.get("@type") == BAD_REQUEST_TYPE:
            for v in detail["fieldViolations"]:
                found[v["field"]] = v["description"]
    return found


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == code
    assert body["message"]
    assert isinstance(body["details"], list)
    return body


async def create(http: httpx.AsyncClient, account: str, **fields: Any) -> dict[str, Any]:
    response = await http.post(
        "/v1/handoffs",
        json=handoff_body(**fields),
        headers=bearer(account, Role.TECHNICIAN, "tina", "Tina Tech"),
    )
    assert response.status_code == 201, response.text
    handoff: dict[str, Any] = response.json()["handoff"]
    return handoff


class SSEReader:
    """One SSE request consumed in the background with httpx-sse, events kept in order."""

    def __init__(
        self, client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
    ) -> None:
        self.events: list[ServerSentEvent] = []
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(client, path, headers or {}))

    async def _run(self, client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> None:
        try:
            async with aconnect_sse(client, "GET", path, headers=headers) as source:
                self.response = source.response
                self._changed.set()
                async for event in source.aiter_sse():
                    self.events.append(event)
                    self._changed.set()
        except (httpx.HTTPError, ValueError) as e:
            self.error = e
        finally:
            self._changed.set()

    @property
    def data_events(self) -> list[ServerSentEvent]:
        """Named events with data, heartbeats left out (the retry hint has no data)."""
        return [e for e in self.events if e.data and e.event != "heartbeat"]

    def of(self, name: str) -> list[ServerSentEvent]:
        return [e for e in self.data_events if e.event == name]

    @property
    def ended(self) -> bool:
        return self.task.done()

    async def wait_for(self, predicate: Callable[[SSEReader], bool], timeout: float = 15) -> None:
        async def until() -> None:
            while not predicate(self):
                if self.task.done():
                    raise AssertionError(
                        f"stream ended early ({self.error!r}): {[e.event for e in self.events]}"
                    )
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def wait_done(self, timeout: float = 15) -> None:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)

    async def close(self) -> None:
        """Drop the HTTP connection, as a browser tab closing does."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def event_json(event: ServerSentEvent) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(event.data)
    return data


def subscribers(server: Any, account: str) -> int:
    """The server-side subscriber count of an account (0 when it has no feed)."""
    feed = server.hub.feeds.get(account)
    return 0 if feed is None else len(feed.subscribers)


# Fixtures, registered for every test module by conftest.py's ``pytest_plugins``.


@pytest.fixture(scope="session")
async def gateway(server: ServerRuntime) -> AsyncIterator[RunningGateway]:
    """The gateway in front of the session's in-process server."""
    async with running_gateway(f"127.0.0.1:{server.port}") as gw:
        yield gw


@pytest.fixture
async def http(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, verify=TLS) as client:
        yield client
