"""Requests that are broken on the wire: undecodable protobuf bytes, out-of-range timestamps.

Both used to reach code that could not cope (the message parser, the datetime conversion)
and answered UNKNOWN or INTERNAL with a traceback in the log. They are the caller's
mistake: INVALID_ARGUMENT, nothing internal in the answer, no traceback in the log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from resolutionflow.v1 import escalation_pb2 as esc

from clients import resuming_stream
from server.domain.types import Role
from tests.gateway_support import assert_error, bearer, violations
from tests.support import Client, wait_until

GARBAGE = [
    b"\xff\xff\xff\xff\xff",  # a varint that never ends
    b"\x0a\x40abc",  # a string field longer than the message
    b"\x0a\x02\xff\xfe",  # a string field that is not UTF-8
    b"\x07",  # field number 0, wire type 7
]

METHODS = [
    "/resolutionflow.v1.HandoffService/CreateHandoff",
    "/resolutionflow.v1.HandoffService/GetHandoff",
    "/resolutionflow.v1.EscalationService/GetEscalationMetrics",
    "/resolutionflow.v1.EscalationService/StreamEscalations",
    "/resolutionflow.v1.HandoffService/WatchHandoffs",
]


def bad_request(error: grpc.aio.AioRpcError) -> dict[str, str]:
    trailers: Any = error.trailing_metadata() or ()
    raw = dict(trailers).get("grpc-status-details-bin")
    assert isinstance(raw, bytes), "no rich status"
    found: dict[str, str] = {}
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            message = error_details_pb2.BadRequest()
            detail.Unpack(message)
            found.update({v.field: v.description for v in message.field_violations})
    return found


async def raw_call(channel: grpc.aio.Channel, method: str, payload: bytes, token: str) -> Any:
    """The bytes as they are, through a generic channel call (no stubs, no serializers)."""
    metadata = (("authorization", f"Bearer {token}"),)
    if method.endswith(("StreamEscalations", "WatchHandoffs")):
        call = channel.unary_stream(method, None, None)(payload, metadata=metadata, timeout=10)
        return [m async for m in call]
    return await channel.unary_unary(method, None, None)(payload, metadata=metadata, timeout=10)


@pytest.mark.parametrize("method", METHODS)
async def test_undecodable_request_is_invalid_argument_without_a_traceback(
    channel: grpc.aio.Channel,
    engineer: Client,
    method: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    streaming = method.endswith(("StreamEscalations", "WatchHandoffs"))
    # The streams' requests have no string field 1: there, those bytes are an unknown field.
    garbage = [g for g in GARBAGE if not (streaming and g.startswith(b"\x0a\x02"))]
    for payload in garbage:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw_call(channel, method, payload, engineer.token)
        error = caught.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (payload, error)
        details = error.details() or ""
        assert "request" in details
        for internal in ("DecodeError", "protobuf", "Exception", "class", "Traceback"):
            assert internal not in details, details
        assert "request" in bad_request(error)
    name = method.rsplit("/", 1)[1]

    def codes() -> list[Any]:
        return [
            getattr(r, "code", None) for r in caplog.records if getattr(r, "method", None) == name
        ]

    # The server writes its access line as the call ends, maybe after the client has heard.
    await wait_until(lambda: len(codes()) >= len(garbage), timeout=10, what="access lines")
    assert codes() == ["INVALID_ARGUMENT"] * len(garbage)
    loud = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not loud, [(r.name, r.getMessage()) for r in loud]


async def test_undecodable_health_check_without_a_token(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """The health service is open to anyone: garbage there must not flood the log either."""
    caplog.set_level(logging.INFO)
    for payload in GARBAGE[:2]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/grpc.health.v1.Health/Check", None, None)(
                payload, timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "DecodeError" not in (caught.value.details() or "")
    loud = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not loud, [(r.name, r.getMessage()) for r in loud]


async def test_undecodable_request_still_needs_a_token(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary("/resolutionflow.v1.HandoffService/GetHandoff", None, None)(
            GARBAGE[0], timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_client_does_not_retry_unknown() -> None:
    """UNKNOWN says nothing about the failure being transient: a retry loop would spin."""
    opened = 0

    async def open_stream(after: int | None) -> Any:
        nonlocal opened
        opened += 1
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNKNOWN, grpc.aio.Metadata(), grpc.aio.Metadata(), "boom", "boom"
        )
        yield  # pragma: no cover - makes this an async generator

    async def consume() -> None:
        async for _ in resuming_stream(open_stream, initial_backoff=0.01):
            pass

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(consume(), 5)
    assert caught.value.code() == grpc.StatusCode.UNKNOWN
    assert opened == 1


def ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


YEAR_1 = -62_135_596_800
YEAR_9999_END = 253_402_300_799


@pytest.mark.parametrize(
    ("request_fields", "fields"),
    [
        ({"start_time": ts(YEAR_9999_END + 1)}, {"start_time"}),
        ({"end_time": ts(2**62)}, {"end_time"}),
        ({"start_time": ts(YEAR_1 - 1)}, {"start_time"}),
        ({"end_time": ts(0, -1)}, {"end_time"}),
        ({"start_time": ts(0, 1_000_000_000)}, {"start_time"}),
        ({"start_time": ts(-(2**63)), "end_time": ts(0, -5)}, {"start_time", "end_time"}),
    ],
)
async def test_out_of_range_timestamps_are_invalid_argument(
    engineer: Client, request_fields: dict[str, Timestamp], fields: set[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await engineer.call(
            "escalations", "GetEscalationMetrics", esc.GetEscalationMetricsRequest(**request_fields)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad_request(caught.value)) == fields


async def test_timestamps_at_the_edges_of_the_range(engineer: Client) -> None:
    """The extremes are valid timestamps: an answer, never INTERNAL."""
    day = 86_400
    for start, end in [
        (ts(YEAR_1), ts(YEAR_1 + day)),
        (ts(YEAR_9999_END - day), ts(YEAR_9999_END, 999_999_999)),
        (None, ts(YEAR_1 + day)),  # the default 7-day window would start before year 1
    ]:
        request = esc.GetEscalationMetricsRequest(start_time=start, end_time=end)
        reply = await engineer.call("escalations", "GetEscalationMetrics", request)
        assert reply.metrics.created == 0
    for start in (ts(YEAR_1), ts(YEAR_9999_END)):  # too long, inverted
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await engineer.call(
                "escalations",
                "GetEscalationMetrics",
                esc.GetEscalationMetricsRequest(start_time=start),
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("start_time=10000-01-01T00:00:00Z", "start_time"),
        ("end_time=0000-12-31T00:00:00Z", "end_time"),
        ("start_time=0001-01-01T00:00:00%2B01:00", "start_time"),
        ("end_time=9999-12-31T23:59:59-01:00", "end_time"),
        ("start_time=not-a-time", "start_time"),
    ],
)
async def test_out_of_range_timestamps_over_http(
    http: httpx.AsyncClient, account: str, query: str, field: str
) -> None:
    response = await http.get(
        f"/v1/escalations/metrics?{query}", headers=bearer(account, Role.ENGINEER)
    )
    body = assert_error(response, 400, "INVALID_ARGUMENT")
    assert field in violations(body)


async def test_edges_of_the_range_over_http(http: httpx.AsyncClient, account: str) -> None:
    headers = bearer(account, Role.ENGINEER)
    for query in (
        "start_time=0001-01-01T00:00:00Z&end_time=0001-01-02T00:00:00Z",
        "start_time=9999-12-30T23:59:59Z&end_time=9999-12-31T23:59:59.999999999Z",
        "end_time=0001-01-02T00:00:00Z",
    ):
        response = await http.get(f"/v1/escalations/metrics?{query}", headers=headers)
        assert response.status_code == 200, (query, response.text)
    response = await http.get(
        "/v1/escalations/metrics?start_time=9999-12-31T23:59:59Z", headers=headers
    )
    assert_error(response, 400, "INVALID_ARGUMENT")
