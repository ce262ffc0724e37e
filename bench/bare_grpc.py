"""The gRPC ceiling: a bare grpc.aio server streaming pre-made bytes.

No database, no auth, no interceptors, no protobuf: one generic handler whose
unary-stream method takes the account name (raw bytes) and yields ready-made
``HandoffEvent`` bytes from an in-memory queue, with pass-through (``None``)
serializers. ``/bench.Bare/Start`` starts the producer.

``python -m bench.bare_grpc --addr 127.0.0.1:PORT --templates FILE`` prints ``READY``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from bench import wire
from bench.bare_hub import BareHub
from server import loops

SERVICE = "bench.Bare"


def make_builder(templates: list[tuple[int, bytes]]) -> Any:
    def build(sequence: int, index: int, now: float) -> bytes:
        event_type, handoff = templates[index % len(templates)]
        return wire.event(sequence, event_type, now, handoff)

    return build


async def serve(addr: str, templates: list[tuple[int, bytes]]) -> None:
    hub = BareHub(make_builder(templates))

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        account = request.decode()
        queue = hub.subscribe(account)
        try:
            # Like the real stream's SNAPSHOT: the client knows it is subscribed.
            yield wire.event(0, wire.SNAPSHOT, time.time())
            while True:
                yield await queue.get()
        finally:
            hub.unsubscribe(account, queue)

    async def start(request: bytes, context: Any) -> bytes:
        spec = json.loads(request)
        hub.start(float(spec["rate"]), {str(k): int(v) for k, v in spec["events"].items()})
        return b""

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Start": grpc.unary_unary_rpc_method_handler(start),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(addr)
    await server.start()
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_grpc")
    parser.add_argument("--addr", required=True)
    parser.add_argument("--templates", required=True, type=Path)
    args = parser.parse_args()
    spec = json.loads(args.templates.read_text())
    templates = [(int(t), bytes.fromhex(h)) for t, h in spec["grpc"]]
    loops.run(serve(args.addr, templates))


if __name__ == "__main__":
    main()
