"""The gateway's settings, read from ``RF_*`` environment variables (and CLI flags).

Separate from the server's settings on purpose: the gateway never imports ``server``.
Names the two share (``RF_HTTP_ADDR``, ``RF_UPSTREAM``, ``RF_HEARTBEAT_SECONDS``,
``RF_SHUTDOWN_GRACE_SECONDS``) mean the same thing for both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RF_", extra="ignore")

    # Where the gateway listens (port 0: any free port) and the gRPC server it talks to.
    http_addr: str = "127.0.0.1:8080"
    upstream: str = "127.0.0.1:50051"
    # Browser origins allowed by CORS: a JSON list or comma-separated; none by default.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # A ": ping" comment on an SSE stream that has sent nothing for this long.
    heartbeat_seconds: float = Field(default=15, gt=0)
    # The reconnect delay suggested to browsers (the SSE "retry:" field).
    sse_retry_ms: int = Field(default=3000, ge=0)
    # How long a stream request waits for the first upstream message before the 200 and
    # the headers go out. Errors the server answers at once (bad token, wrong role) are
    # caught in this window and become ordinary HTTP errors.
    sse_first_event_wait_seconds: float = Field(default=1.0, ge=0)
    # Edge fan-out (gateway.fanout): browsers of one audience share one upstream stream.
    sse_fanout: bool = True
    # A browser whose socket takes longer than this to accept a write, or that has more
    # than sse_queue_frames frames waiting, is disconnected (it resumes by Last-Event-ID).
    sse_send_timeout_seconds: float = Field(default=10, gt=0)
    sse_queue_frames: int = Field(default=1000, ge=1)
    # Bytes written straight to a browser's connection that may wait unsent (beyond what
    # the socket took) before it is disconnected as not reading.
    sse_buffer_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Recent frames each shared feed keeps, so that joining browsers need no replay.
    sse_ring_frames: int = Field(default=1024, ge=1)
    # How long a feed's upstream stream outlives its last browser (a page reload rejoins).
    sse_feed_linger_seconds: float = Field(default=1.0, ge=0)
    # How long a broken shared upstream stream is retried before its browsers are told.
    sse_upstream_resume_seconds: float = Field(default=30, gt=0)

    # Request bodies larger than this are refused (413) before they are read into memory.
    # JSON takes more room than the protobuf it becomes, so it is above the server's 1 MiB.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0)

    # Slow clients: the request line and headers must arrive within this long of the
    # connection opening (or of the previous response on a kept-alive connection), and a
    # request body within http_body_timeout_seconds; otherwise the connection is closed
    # (a late body gets 408 first). A slowloris client holds a connection that long at most.
    http_header_timeout_seconds: float = Field(default=10, gt=0)
    http_body_timeout_seconds: float = Field(default=30, gt=0)
    # uvicorn's HTTP/1.1 parser, both with the bounds above (gateway/protocol.py):
    # httptools (C, less CPU per request and per frame sent) or h11 (pure Python).
    http_parser: Literal["httptools", "h11"] = "httptools"

    # Deadline of each unary upstream call (REST request) and of the health check.
    upstream_timeout_seconds: float = Field(default=10, gt=0)
    health_timeout_seconds: float = Field(default=2, gt=0)
    # HTTP/2 keepalive pings on the upstream channel, and when an unanswered one fails it.
    upstream_keepalive_seconds: float = Field(default=20, ge=10)
    upstream_keepalive_timeout_seconds: float = Field(default=10, gt=0)
    # Reconnect backoff of the upstream channel: starts here, never waits longer than max.
    upstream_initial_backoff_seconds: float = Field(default=0.2, gt=0)
    upstream_max_backoff_seconds: float = Field(default=2, gt=0)

    # How long uvicorn waits for open requests on shutdown before cancelling them.
    shutdown_grace_seconds: float = Field(default=5, ge=0)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [o.strip() for o in text.split(",") if o.strip()]
        return value

    @property
    def http_host_port(self) -> tuple[str, int]:
        return split_addr(self.http_addr)


def split_addr(addr: str) -> tuple[str, int]:
    """``host:port`` (also ``[::1]:port``) into its parts."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {addr!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
