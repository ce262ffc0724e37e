"""The one gRPC channel from the gateway to the server, and the stubs on it.

One ``grpc.aio`` channel multiplexes every REST call and every SSE stream over HTTP/2.
It pings the server when idle (keepalive), so a dead peer is noticed even on a quiet
stream, and it reconnects by itself with a bounded backoff, so when the server comes back
the gateway recovers without a restart. Calls are never ``wait_for_ready``: while the
server is down they fail at once with ``UNAVAILABLE`` (HTTP 503) instead of hanging.

The channel is created lazily on first use, inside the running event loop.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from resolutionflow.v1 import escalation_pb2_grpc, handoff_pb2_grpc

from gateway.settings import GatewaySettings


def channel_options(settings: GatewaySettings) -> list[tuple[str, Any]]:
    initial_backoff_ms = int(settings.upstream_initial_backoff_seconds * 1000)
    return [
        ("grpc.keepalive_time_ms", int(settings.upstream_keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.upstream_keepalive_timeout_seconds * 1000)),
        # Long-lived streams can be idle for a while: keep pinging (the server permits it).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", initial_backoff_ms),
        ("grpc.min_reconnect_backoff_ms", initial_backoff_ms),
        ("grpc.max_reconnect_backoff_ms", int(settings.upstream_max_backoff_seconds * 1000)),
        # Bodies are bounded by the server (RESOURCE_EXHAUSTED); replies can be large lists.
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ]


class Upstream:
    """The channel, its stubs, and a count of the streaming calls still open."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.target = settings.upstream
        self._channel: grpc.aio.Channel | None = None
        self._handoffs: handoff_pb2_grpc.HandoffServiceStub | None = None
        self._escalations: escalation_pb2_grpc.EscalationServiceStub | None = None
        self._health: health_pb2_grpc.HealthStub | None = None
        # Streaming calls started and not yet finished (cancelled, failed or ended).
        self.open_streams = 0

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.target, options=channel_options(self.settings)
            )
            self._handoffs = handoff_pb2_grpc.HandoffServiceStub(self._channel)
            self._escalations = escalation_pb2_grpc.EscalationServiceStub(self._channel)
            self._health = health_pb2_grpc.HealthStub(self._channel)
        return self._channel

    @property
    def handoffs(self) -> handoff_pb2_grpc.HandoffServiceStub:
        self.channel  # noqa: B018 - creates the stubs on first use
        assert self._handoffs is not None
        return self._handoffs

    @property
    def escalations(self) -> escalation_pb2_grpc.EscalationServiceStub:
        self.channel  # noqa: B018
        assert self._escalations is not None
        return self._escalations

    @property
    def health(self) -> health_pb2_grpc.HealthStub:
        self.channel  # noqa: B018
        assert self._health is not None
        return self._health

    def track(self, call: Any) -> None:
        """Count a streaming call as open until gRPC reports it finished."""
        self.open_streams += 1

        def finished(_: Any) -> None:
            self.open_streams -= 1

        call.add_done_callback(finished)

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close(None)
