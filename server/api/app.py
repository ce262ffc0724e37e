"""Builds the gRPC server: servicers, interceptors, health and reflection."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from resolutionflow.v1 import escalation_pb2, escalation_policy_pb2, handoff_pb2, webhook_pb2

from server.api.interceptors import ServiceInterceptor
from server.api.servicers import EscalationService, HandoffService
from server.api.webhooks import EscalationPolicyService, WebhookService
from server.auth import TokenVerifier
from server.core import Core
from server.streaming.streams import Streams

SERVICE_NAMES = (
    handoff_pb2.DESCRIPTOR.services_by_name["HandoffService"].full_name,
    escalation_pb2.DESCRIPTOR.services_by_name["EscalationService"].full_name,
    webhook_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
    escalation_policy_pb2.DESCRIPTOR.services_by_name["EscalationPolicyService"].full_name,
)


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def _register(server: grpc.aio.Server, servicer: Any, file: FileDescriptor, name: str) -> None:
    """Like the generated ``add_*_to_server``, but streams send their bytes as they are.

    Stream events arrive already encoded (once for all subscribers of an account), so the
    streaming methods have no serializer at all: gRPC writes the bytes without calling
    back into Python for every message.
    """
    service = file.services_by_name[name]
    handlers = {}
    for method in service.methods:
        deserialize = GetMessageClass(method.input_type).FromString
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                getattr(servicer, method.name), request_deserializer=deserialize
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                getattr(servicer, method.name),
                request_deserializer=deserialize,
                response_serializer=_serialize,
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def create_grpc_server(
    core: Core,
    streams: Streams,
    verifier: TokenVerifier,
    *,
    webhooks: WebhookService | None = None,
    policies: EscalationPolicyService | None = None,
    max_request_bytes: int,
    reuse_port: bool = False,
) -> tuple[grpc.aio.Server, Any]:
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(verifier, core.user_seen)],
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            # gRPC sets SO_REUSEPORT by default: a second server on a busy port would bind
            # silently and take half the connections (and, on another database, split the
            # data). Only several workers of one server may share a port, and they ask.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            # Streams are long-lived: let clients keep them alive through idle proxies.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 0),
            # And ping them: a connection's liveness is shown (and a dead peer found, its
            # streams freed) by one HTTP/2 PING handled below Python, not by a heartbeat
            # message per stream (docs: README, "A heartbeat only when it tells something").
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 20_000),
        ],
    )
    _register(
        server, HandoffService(core, streams, verifier), handoff_pb2.DESCRIPTOR, "HandoffService"
    )
    _register(
        server, EscalationService(core, streams), escalation_pb2.DESCRIPTOR, "EscalationService"
    )
    if webhooks is not None:
        _register(server, webhooks, webhook_pb2.DESCRIPTOR, "WebhookService")
    if policies is not None:
        _register(server, policies, escalation_policy_pb2.DESCRIPTOR, "EscalationPolicyService")
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server, health_servicer


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
