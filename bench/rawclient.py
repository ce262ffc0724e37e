"""Lean stream readers for the load generator: gRPC over plain HTTP/2, and SSE over HTTP/1.1.

Why not grpc.aio / httpx: measured on the 2-core machine, a grpc.aio client spends about
170 µs of CPU per received message (each message is one completion-queue round trip and
one event-loop wake-up), so the load generator saturated its core at ~5,000 messages/s
while the bare server it was reading from was half idle: every figure would have been the
client's. These readers parse whole TCP reads at once inside an ``asyncio.Protocol``
(one ``data_received`` may hold dozens of messages of many streams) and cost a few µs per
message, so the servers are what is measured. ``--client library`` switches back to
grpc.aio / httpx to cross-check.

HTTP/2: prior knowledge (h2c), one connection carrying many streams, flow-control windows
opened wide and refilled, SETTINGS and PING acknowledged, response headers and trailers
decoded with ``hpack`` (to keep its table in step and to read ``grpc-status``). Requests
are sent with literal, unindexed header fields, which needs no encoder state.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import Any

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0,
    1,
    3,
    4,
    6,
    7,
    8,
    9,
)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
MAX_WINDOW = 2**31 - 1
REFILL = 2**30


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", stream)
        + payload
    )


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: str, value: str) -> bytes:
    """Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + _hpack_int(len(n), 7) + n + _hpack_int(len(v), 7) + v


class GrpcStream:
    """One server-streaming call. ``on_message(raw, now)`` for each message, then ``on_end``."""

    __slots__ = ("buffer", "consumed", "ended", "id", "on_end", "on_message", "status")

    def __init__(
        self,
        on_message: Callable[[bytes, float], None],
        on_end: Callable[[int | None, str], None],
    ) -> None:
        self.id = 0
        self.on_message = on_message
        self.on_end = on_end
        self.buffer = b""
        self.consumed = 0
        self.ended = False
        self.status: int | None = None


class H2GrpcConnection(asyncio.Protocol):
    """Many gRPC server-streaming calls on one HTTP/2 connection."""

    def __init__(self, authority: str) -> None:
        self.authority = authority
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.streams: dict[int, GrpcStream] = {}
        self.next_id = 1
        self.decoder = hpack.Decoder()
        self.header_block = bytearray()
        self.header_stream = 0
        self.header_end_stream = False
        self.consumed = 0
        self.closed = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(cls, host: str, port: int) -> H2GrpcConnection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(f"{host}:{port}"), host, port)
        return protocol

    # ---- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        settings = struct.pack(">HI", 0x2, 0) + struct.pack(">HI", 0x4, MAX_WINDOW)
        transport.write(
            PREFACE
            + frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - 65535))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        for stream in list(self.streams.values()):
            self._end(stream, None, f"connection lost: {exc or 'closed by the server'}")
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        now = time.time()
        at = 0
        size = len(buf)
        streams = self.streams
        while size - at >= 9:
            length = (buf[at] << 16) | (buf[at + 1] << 8) | buf[at + 2]
            end = at + 9 + length
            if end > size:
                break
            kind = buf[at + 3]
            flags = buf[at + 4]
            stream_id = int.from_bytes(buf[at + 5 : at + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[at + 9 : end])
            at = end
            if kind == DATA:
                stream = streams.get(stream_id)
                if flags & PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                self.consumed += length
                if stream is not None:
                    stream.consumed += length
                    self._messages(stream, payload, now)
                    if flags & END_STREAM:
                        self._end(stream, stream.status, "")
            else:
                self._control(kind, flags, stream_id, payload)
        del buf[:at]
        self._refill()

    # ---- frames ---------------------------------------------------------------------

    def _messages(self, stream: GrpcStream, payload: bytes, now: float) -> None:
        data = stream.buffer + payload if stream.buffer else payload
        at = 0
        size = len(data)
        on_message = stream.on_message
        while size - at >= 5:
            length = int.from_bytes(data[at + 1 : at + 5], "big")
            end = at + 5 + length
            if end > size:
                break
            on_message(data[at + 5 : end], now)
            at = end
        stream.buffer = data[at:] if at < size else b""

    def _control(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind in (HEADERS, CONTINUATION):
            if kind == HEADERS:
                if flags & PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                if flags & PRIORITY:
                    payload = payload[5:]
                self.header_block = bytearray(payload)
                self.header_stream = stream_id
                self.header_end_stream = bool(flags & END_STREAM)
            else:
                self.header_block += payload
            if flags & END_HEADERS:
                self._headers_done()
        elif kind == SETTINGS:
            if not flags & ACK:
                self._write(frame(SETTINGS, ACK, 0))
        elif kind == PING:
            if not flags & ACK:
                self._write(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            stream = self.streams.get(stream_id)
            if stream is not None:
                code = int.from_bytes(payload[:4], "big")
                self._end(stream, None, f"RST_STREAM {code}")
        elif kind == GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            for sid, stream in list(self.streams.items()):
                if sid > last:
                    self._end(stream, None, "GOAWAY")

    def _headers_done(self) -> None:
        headers = self.decoder.decode(bytes(self.header_block))
        stream = self.streams.get(self.header_stream)
        if stream is None:
            return
        message = ""
        for name, value in headers:
            key = name.decode() if isinstance(name, bytes) else name
            text = value.decode() if isinstance(value, bytes) else value
            if key == "grpc-status":
                stream.status = int(text)
            elif key == "grpc-message":
                message = text
        if self.header_end_stream:
            self._end(stream, stream.status, message)

    def _end(self, stream: GrpcStream, status: int | None, message: str) -> None:
        if stream.ended:
            return
        stream.ended = True
        self.streams.pop(stream.id, None)
        stream.on_end(status, message)

    def _refill(self) -> None:
        updates = b""
        if self.consumed > REFILL:
            updates += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.consumed))
            self.consumed = 0
        for stream in self.streams.values():
            if stream.consumed > REFILL:
                updates += frame(WINDOW_UPDATE, 0, stream.id, struct.pack(">I", stream.consumed))
                stream.consumed = 0
        if updates:
            self._write(updates)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # ---- calls ----------------------------------------------------------------------

    def start(
        self, stream: GrpcStream, path: str, request: bytes, metadata: tuple[tuple[str, str], ...]
    ) -> None:
        """Start a server-streaming call: HEADERS, then the request message with END_STREAM."""
        stream.id = self.next_id
        self.next_id += 2
        self.streams[stream.id] = stream
        block = b"".join(
            _literal(k, v)
            for k, v in (
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", self.authority),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *metadata,
            )
        )
        body = b"\x00" + struct.pack(">I", len(request)) + request
        self._write(
            frame(HEADERS, END_HEADERS, stream.id, block) + frame(DATA, END_STREAM, stream.id, body)
        )

    def cancel(self, stream: GrpcStream) -> None:
        if not stream.ended:
            stream.ended = True
            self.streams.pop(stream.id, None)
            self._write(frame(RST_STREAM, 0, stream.id, struct.pack(">I", 8)))  # CANCEL

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class SSEConnection(asyncio.Protocol):
    """One ``GET`` of an event stream over HTTP/1.1; ``on_frame(frame, now)`` per SSE event."""

    def __init__(
        self,
        request: bytes,
        on_frame: Callable[[bytes, float], None],
        on_end: Callable[[int, str], None],
    ) -> None:
        self.request = request
        self.on_frame = on_frame
        self.on_end = on_end
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.status = 0
        self.chunked = False
        self.raw = b""  # body bytes still to de-chunk
        self.body = b""  # de-chunked bytes not yet split into events
        self.ended = False

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        path: str,
        headers: dict[str, str],
        on_frame: Callable[[bytes, float], None],
        on_end: Callable[[int, str], None],
    ) -> SSEConnection:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            lambda: cls(request, on_frame, on_end), host, port
        )
        return protocol

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(f"connection lost: {exc or 'closed by the server'}")

    def _finish(self, why: str) -> None:
        if not self.ended:
            self.ended = True
            self.on_end(self.status, why)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4 :]
            lines = head.split(b"\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                    self.chunked = True
            if self.status != 200:
                self._finish(f"HTTP {self.status}: {data[:300].decode(errors='replace')}")
                self.close()
                return
        if self.chunked:
            raw = self.raw + data if self.raw else data
            at = 0
            out = []
            size = len(raw)
            while at < size:
                line_end = raw.find(b"\r\n", at)
                if line_end < 0:
                    break
                length = int(raw[at:line_end].split(b";", 1)[0], 16)
                start = line_end + 2
                if size < start + length + 2:
                    break
                if length == 0:
                    self._finish("stream ended by the server")
                    at = size
                    break
                out.append(raw[start : start + length])
                at = start + length + 2
            self.raw = raw[at:]
            data = b"".join(out)
        if b"\r" in data:
            # SSE allows CRLF line ends (sse-starlette's pings use them); a lone CR
            # split across two reads is not handled, which no server here sends.
            data = data.replace(b"\r\n", b"\n")
        body = self.body + data if self.body else data
        at = 0
        on_frame = self.on_frame
        while (end := body.find(b"\n\n", at)) >= 0:
            on_frame(body[at:end], now)
            at = end + 2
        self.body = body[at:]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
