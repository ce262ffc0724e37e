"""Optional OpenTelemetry tracing (``pip install resolutionflow[otel]``).

Off unless ``RF_OTEL_ENDPOINT`` names an OTLP/HTTP collector. It is switched on before
any server, channel or app exists, because the instrumentations patch grpc.aio and
FastAPI themselves: the server's spans, the gateway's HTTP spans and the gateway's gRPC
client spans then join one trace, the context travelling in the gRPC metadata.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def configure(endpoint: str, service_name: str) -> bool:
    """Export spans to ``endpoint`` (e.g. http://127.0.0.1:4318); False when off."""
    if not endpoint:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.grpc import (
            GrpcAioInstrumentorClient,
            GrpcAioInstrumentorServer,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("RF_OTEL_ENDPOINT is set but tracing is not installed: resolutionflow[otel]")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()
    GrpcAioInstrumentorClient().instrument()
    FastAPIInstrumentor().instrument()
    log.info("tracing to %s as %s", endpoint, service_name)
    return True


def shutdown() -> None:
    """Flush what is buffered; a no-op when tracing is off."""
    try:
        from opentelemetry import trace
    except ImportError:
        return
    provider = trace.get_tracer_provider()
    flush = getattr(provider, "shutdown", None)
    if flush is not None:
        flush()
