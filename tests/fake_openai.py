"""A local server speaking the chat-completions protocol, scripted per request."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def answer(summary: str, step: str) -> dict[str, Any]:
    content = json.dumps({"summary": summary, "suggested_first_step": step})
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    delay: float = 0.0
    # Answer only once the test sets this (e.g. after it arranged a failure to come).
    gate: asyncio.Event | None = None


@dataclass
class FakeOpenAI:
    """Replies come from ``script`` in order; the last one repeats."""

    script: list[Reply]
    requests: list[dict[str, Any]] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    received: asyncio.Event = field(default_factory=asyncio.Event)
    base_url: str = ""

    async def completions(self, request: Request) -> Response:
        self.requests.append({"headers": dict(request.headers), "json": await request.json()})
        self.received.set()
        reply = self.script[min(len(self.requests), len(self.script)) - 1]
        if reply.delay:
            await asyncio.sleep(reply.delay)  # the provider being slow is the point here
        if reply.gate is not None:
            await reply.gate.wait()
        self.answered.set()
        if isinstance(reply.body, str):
            return Response(reply.body, status_code=reply.status, media_type="application/json")
        return JSONResponse(reply.body or {"error": {"message": "boom"}}, status_code=reply.status)


@asynccontextmanager
async def fake_openai(*script: Reply) -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI(list(script))
    app = Starlette(routes=[Route("/v1/chat/completions", fake.completions, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=0)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # uvicorn offers no event for this
        await asyncio.sleep(0.01)
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    try:
        yield fake
    finally:
        # Requests still sleeping in a scripted delay are dropped, not waited for.
        server.should_exit = server.force_exit = True
        await task
        sock.close()
