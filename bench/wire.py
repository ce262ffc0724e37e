"""What the ceilings send, built by hand so that the bare servers need no protobuf.

A ceiling message is byte-for-byte what the real server sends for an event of the same
kind: a ``HandoffEvent`` (``sequence``, ``type``, ``occurred_at``, ``handoff``) whose
``handoff`` is a real encoded ``Handoff`` captured from the real run (or a synthetic one
of the same shape). Only ``sequence`` and ``occurred_at`` change per event, so the load
generator does exactly the same work (parse, check order, measure latency) on both.

Over SSE the frame is the gateway's framing (``id``/``event``/``data``) around a real
event's JSON with its ``sequence`` and ``occurredAt`` replaced.
"""

from __future__ import annotations

from datetime import UTC, datetime

# EventType numbers of resolutionflow.v1 (checked against the generated enum by a test).
SNAPSHOT = 1
SEQ_PLACEHOLDER = "__BENCH_SEQ__"
TS_PLACEHOLDER = "__BENCH_TS__"


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def timestamp(seconds_since_epoch: float) -> bytes:
    """An encoded ``google.protobuf.Timestamp``."""
    seconds = int(seconds_since_epoch)
    nanos = round((seconds_since_epoch - seconds) * 1e9)
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    body = b"\x08" + varint(seconds)
    if nanos:
        body += b"\x10" + varint(nanos)
    return body


def event(sequence: int, event_type: int, occurred_at: float, handoff: bytes = b"") -> bytes:
    """An encoded ``HandoffEvent`` with fields 1-4 (``handoff`` left out when empty)."""
    ts = timestamp(occurred_at)
    out = b"\x08" + varint(sequence) + b"\x10" + varint(event_type)
    out += b"\x1a" + varint(len(ts)) + ts
    if handoff:
        out += b"\x22" + varint(len(handoff)) + handoff
    return out


def iso(seconds_since_epoch: float) -> str:
    """RFC 3339 in UTC with a ``Z``, as the protobuf JSON mapping prints a Timestamp."""
    text = datetime.fromtimestamp(seconds_since_epoch, UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def sse_frame(sequence: int, name: str, data: str) -> bytes:
    return f"id: {sequence}\nevent: {name}\ndata: {data}\n\n".encode()


def sse_event(sequence: int, name: str, data_template: str, occurred_at: float) -> bytes:
    data = data_template.replace(SEQ_PLACEHOLDER, str(sequence)).replace(
        TS_PLACEHOLDER, iso(occurred_at)
    )
    return sse_frame(sequence, name, data)
