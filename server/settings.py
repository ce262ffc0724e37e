"""Typed settings, read from ``RF_*`` environment variables (and CLI flags) on demand.

Nothing reads the environment at import time: ``Settings()`` is built by the CLI or a
test and passed into the factories that need it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.domain.types import Priority

JWT_SECRET_FILE = "jwt-secret"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RF_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/resolutionflow.db"
    grpc_addr: str = "127.0.0.1:50051"
    http_addr: str = "127.0.0.1:8080"
    upstream: str = "127.0.0.1:50051"
    # Log lines as JSON, logfmt, or "auto": logfmt on a terminal, JSON otherwise.
    log_format: Literal["auto", "json", "logfmt"] = "auto"
    # OTLP/HTTP collector for traces (needs resolutionflow[otel]); off when empty.
    otel_endpoint: str = ""
    # HOST:PORT for the Prometheus /metrics endpoint of the server process; off when empty.
    metrics_addr: str = ""
    # Where local state lives: the SQLite file by default and the generated JWT secret.
    var_dir: Path = Path("var")
    jwt_secret: SecretStr | None = None

    assessment_provider: Literal["heuristic", "openai"] = "heuristic"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-4o-mini"
    openai_api_key: SecretStr | None = None
    openai_timeout_seconds: float = Field(default=20, gt=0)
    # Assessments running at once per server; more wait in the queue.
    assessment_concurrency: int = Field(default=4, ge=1)
    # Upper bound for one assessment, retries included; past it the assessment FAILS.
    assessment_timeout_seconds: float = Field(default=60, gt=0)

    # Pickup targets per priority, in seconds (DESIGN: URGENT 5 min ... LOW 4 h).
    sla_urgent_seconds: float = Field(default=300, gt=0)
    sla_high_seconds: float = Field(default=900, gt=0)
    sla_normal_seconds: float = Field(default=3600, gt=0)
    sla_low_seconds: float = Field(default=14400, gt=0)

    heartbeat_seconds: float = Field(default=15, gt=0)
    # Limits, per server process: open streams per user and per account, and creates per
    # user (a token bucket: a burst, refilled at the per-minute rate).
    max_streams_per_user: int = Field(default=20, ge=1)
    max_streams_per_account: int = Field(default=5000, ge=1)
    creates_per_minute: float = Field(default=1200, gt=0)
    create_burst: int = Field(default=200, ge=1)
    # Events a stream may hold in memory; a slower reader catches up from the log instead.
    stream_buffer: int = Field(default=256, ge=1)
    # How each PostgreSQL replica hears that another one committed: NOTIFY inside the write
    # transaction, core NATS after commit, or nothing (the log check alone). SQLite runs in
    # one process and wakes its streams in-process whatever this says.
    wakeup: Literal["postgres", "nats", "none"] = "postgres"
    nats_url: str = "nats://127.0.0.1:4222"
    # How often each replica re-checks the log heads, healing a missed wake-up (with
    # wakeup=none, the only way other replicas' commits are seen).
    log_poll_seconds: float = Field(default=1.0, gt=0)
    sla_check_seconds: float = Field(default=1.0, gt=0)
    # How often the database is pinged; gRPC health is NOT_SERVING while it fails.
    health_check_seconds: float = Field(default=2.0, gt=0)
    # Events older than this are pruned; a cursor older than that gets a RESET.
    event_retention_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    prune_interval_seconds: float = Field(default=300, gt=0)
    # A request larger than this is refused by the transport before it reaches a handler.
    max_request_bytes: int = Field(default=1024 * 1024, gt=1024)
    # Seconds a server waits for in-flight calls on shutdown.
    shutdown_grace_seconds: float = Field(default=5, ge=0)

    def sla_target_seconds(self, priority: Priority) -> float:
        return {
            Priority.URGENT: self.sla_urgent_seconds,
            Priority.HIGH: self.sla_high_seconds,
            Priority.NORMAL: self.sla_normal_seconds,
            Priority.LOW: self.sla_low_seconds,
        }[priority]

    def resolved_jwt_secret(self) -> str:
        """The configured secret, or the local one under ``var_dir`` (created once, 0600)."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return _local_secret(self.var_dir / JWT_SECRET_FILE)


def _local_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL makes concurrent first starts (serve and token) agree on one secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text().strip()
        if not value:
            raise RuntimeError(f"{path} is empty; delete it to create a new secret") from None
        return value
    with os.fdopen(fd, "w") as f:
        value = secrets.token_urlsafe(48)
        f.write(value + "\n")
    return value
