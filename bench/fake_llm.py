"""An OpenAI-compatible chat-completions endpoint that answers after a fixed delay.

Used by ``resolutionflow bench --assessment-delay S``: the server's assessment provider
(``RF_ASSESSMENT_PROVIDER=openai``) talks to it, so CreateHandoff latency is measured
while every assessment takes S seconds. One request per connection, plain asyncio.

``python -m bench.fake_llm --port PORT --delay SECONDS`` prints ``READY``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

ANSWER = json.dumps(
    {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": json.dumps(
                        {
                            "summary": "Benchmark answer: the VPN client loses its tunnel "
                            "when the Wi-Fi roams between access points.",
                            "suggested_first_step": "Check the VPN client's keepalive and "
                            "reconnect settings",
                        }
                    ),
                }
            }
        ]
    }
).encode()


async def serve(port: int, delay: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(delay)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(ANSWER)}\r\n".encode()
                + b"connection: close\r\n\r\n"
                + ANSWER
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_llm")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--delay", required=True, type=float)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.delay))


if __name__ == "__main__":
    main()
