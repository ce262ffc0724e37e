"""A webhook receiver on loopback, speaking plain HTTP/1.1, verifying with standardwebhooks.

It stands for the customer's system. Its ``mode`` says how it answers: "ok" (204),
"hang" (reads the request, never answers), "redirect" (302 to a private address), or
"error" (500). It can be stopped (connections refused) and started again on its port.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: Any

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def sequence(self) -> int:
        return int(self.verified["data"]["sequence"])


@dataclass
class Receiver:
    secret: str = ""
    mode: str = "ok"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    # The headers of every request, answered or not.
    seen: list[dict[str, str]] = field(default_factory=list)
    hanging: int = 0
    failures: list[str] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> Receiver:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve, sock=sock)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append(headers)
                if self.mode == "hang":
                    self.hanging += 1
                    self._changed.set()
                    await asyncio.Event().wait()
                try:
                    verified = Webhook(self.secret).verify(body, headers)
                except Exception as e:
                    self.failures.append(repr(e))
                    verified = json.loads(body)
                if self.mode == "redirect":
                    self.received.append(Received(headers, body, verified))
                    writer.write(
                        b"HTTP/1.1 302 Found\r\nLocation: http://10.0.0.1/\r\n"
                        b"Content-Length: 0\r\n\r\n"
                    )
                elif self.mode == "error":
                    writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
                else:
                    self.received.append(Received(headers, body, verified))
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
                self._changed.set()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def wait_for(self, predicate: Any, timeout: float = 30) -> None:
        async def until() -> None:
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    def sequences(self) -> list[int]:
        return [r.sequence for r in self.received]
