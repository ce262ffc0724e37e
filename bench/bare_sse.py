"""The SSE ceiling: a bare FastAPI + sse-starlette app fanning pre-made frames.

``GET /stream?account=A`` is an ``EventSourceResponse`` over an in-memory queue holding
ready-made SSE frames (the gateway's framing around a real event's JSON), built once per
event and shared by every subscriber of the account. ``POST /start`` starts the producer.
No gRPC upstream, no auth, no JSON rendering per event beyond two string replaces.

``python -m bench.bare_sse --port PORT --templates FILE``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from sse_starlette import EventSourceResponse

from bench import wire
from bench.bare_hub import BareHub
from server import loops


def create_app(templates: list[tuple[str, str]], snapshot: str) -> FastAPI:
    def build(sequence: int, index: int, now: float) -> bytes:
        name, data = templates[index % len(templates)]
        return wire.sse_event(sequence, name, data, now)

    hub = BareHub(build)
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "SERVING"}

    @app.get("/stream")
    async def stream(account: str) -> EventSourceResponse:
        queue = hub.subscribe(account)

        async def frames() -> AsyncIterator[bytes]:
            try:
                yield wire.sse_event(0, "snapshot", snapshot, time.time())
                while True:
                    yield await queue.get()
            finally:
                hub.unsubscribe(account, queue)

        return EventSourceResponse(frames())

    @app.post("/start")
    async def start(request: Request) -> dict[str, Any]:
        spec = await request.json()
        hub.start(float(spec["rate"]), {str(k): int(v) for k, v in spec["events"].items()})
        return {}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_sse")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--templates", required=True, type=Path)
    args = parser.parse_args()
    spec = json.loads(args.templates.read_text())
    app = create_app([(str(n), str(d)) for n, d in spec["sse"]], spec["sse_snapshot"])
    loops.run(
        uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=args.port,
                log_level="warning",
                access_log=False,
                ws="none",
                lifespan="off",
            )
        ).serve()
    )


if __name__ == "__main__":
    main()
