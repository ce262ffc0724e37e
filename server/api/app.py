"""Builds the gRPC server: servicers, interceptors, health and reflection."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from resolutionflow.v1 import escalation_pb2, handoff_pb2
from resolutionflow.v1 import escalation_pb2_grpc as esc_grpc
from resolutionflow.v1 import handoff_pb2_grpc as pb_grpc

from server.api.interceptors import AuthInterceptor, ErrorInterceptor
from server.api.servicers import EscalationService, HandoffService
from server.auth import TokenCodec
from server.core import Core

SERVICE_NAMES = (
    handoff_pb2.DESCRIPTOR.services_by_name["HandoffService"].full_name,
    escalation_pb2.DESCRIPTOR.services_by_name["EscalationService"].full_name,
)


def create_grpc_server(
    core: Core, codec: TokenCodec, *, max_request_bytes: int
) -> tuple[grpc.aio.Server, Any]:
    server = grpc.aio.server(
        interceptors=[ErrorInterceptor(), AuthInterceptor(codec)],
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            # Streams are long-lived: let clients keep them alive through idle proxies.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 0),
        ],
    )
    pb_grpc.add_HandoffServiceServicer_to_server(HandoffService(core), server)
    esc_grpc.add_EscalationServiceServicer_to_server(EscalationService(core), server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server, health_servicer


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
