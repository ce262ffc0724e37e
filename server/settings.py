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

from server.db.bounds import PgBounds
from server.domain.types import Priority

JWT_SECRET_FILE = "jwt-secret"
# Beyond the assessment's own bound, what its owner has to save the outcome (retrying).
ASSESSMENT_SAVE_ALLOWANCE_SECONDS = 30.0


class ConfigError(RuntimeError):
    """A setting or local file that stops the process from starting; the CLI prints the
    message as one line (it says what is wrong and what to do) instead of a traceback."""


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
    # Identity-provider tokens (RS256/ES256), verified with the keys at this JWKS URL;
    # off when empty. Issuer and audience are then required.
    jwks_url: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    # Claim names (or dotted paths) of the account, role and display name in those tokens.
    jwt_account_claim: str = Field(default="account", min_length=1)
    jwt_role_claim: str = Field(default="role", min_length=1)
    jwt_name_claim: str = Field(default="name", min_length=1)
    # The key set is fetched again after this long, and on an unknown key id at most once
    # per min_refetch; one fetch may take up to the timeout.
    jwks_cache_seconds: float = Field(default=300, gt=0)
    jwks_min_refetch_seconds: float = Field(default=30, ge=0)
    jwks_timeout_seconds: float = Field(default=5, gt=0)

    assessment_provider: Literal["heuristic", "openai"] = "heuristic"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-4o-mini"
    openai_api_key: SecretStr | None = None
    openai_timeout_seconds: float = Field(default=20, gt=0)
    # Assessments running at once per server; more wait in the queue.
    assessment_concurrency: int = Field(default=4, ge=1)
    # Upper bound for one assessment, retries included; past it the assessment FAILS.
    assessment_timeout_seconds: float = Field(default=60, gt=0)
    # How often each replica looks for pending assessments nobody holds (a replica died,
    # or could not save), and the longest pause between attempts to save an outcome.
    assessment_retry_seconds: float = Field(default=5, gt=0)

    # Pickup targets per priority, in seconds (docs/design.md, invariant 12).
    sla_urgent_seconds: float = Field(default=300, gt=0)
    sla_high_seconds: float = Field(default=900, gt=0)
    sla_normal_seconds: float = Field(default=3600, gt=0)
    sla_low_seconds: float = Field(default=14400, gt=0)

    # How long after its resolution a technician (or admin) may reopen an escalation.
    reopen_window_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    # Known users (ListAccountUsers) are recorded from their calls at most this often per
    # user and server process: a write per call would double the load of busy readers.
    user_seen_interval_seconds: float = Field(default=60, ge=0)

    # Presence (engineers watching the queue): a server's rows live this long unless it
    # refreshes them (a third of it); a server that dies drops out within it.
    presence_ttl_seconds: float = Field(default=10, gt=0)
    # The breach policy of accounts whose admins have not set their own: repeat the
    # breach event every 15 minutes while nobody has picked the escalation up (0: never);
    # raising the priority is opt-in (it changes what the creator chose, and the
    # per-priority metrics with it).
    breach_raise_priority: bool = False
    breach_renotify_seconds: int = Field(default=900, ge=0)

    # Every heartbeat interval, a stream that sent nothing since the last one and whose
    # position moved (events it does not carry) hears its new position in a HEARTBEAT.
    heartbeat_seconds: float = Field(default=15, gt=0)
    # The longest a stream goes without any message (a HEARTBEAT with an unchanged
    # position), for proxies that end streams quiet for a while (60 s is a common default);
    # HTTP/2 keepalive pings show connections alive without it.
    idle_heartbeat_seconds: float = Field(default=45, gt=0)
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
    # Most log checks ask only which accounts moved lately (constant cost however many
    # accounts are online); this often one compares every followed account's position
    # with its head, covering a commit that came long after its counter moved.
    log_full_check_seconds: float = Field(default=30.0, gt=0)
    sla_check_seconds: float = Field(default=1.0, gt=0)
    # How often the database is pinged; gRPC health is NOT_SERVING while it fails.
    health_check_seconds: float = Field(default=2.0, gt=0)
    # Events older than this are pruned; a cursor older than that gets a RESET.
    event_retention_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    prune_interval_seconds: float = Field(default=300, gt=0)
    # PostgreSQL bounds per session (0 turns one off): how long a write waits for a row
    # lock (e.g. the account's counter row held by a frozen replica) before answering
    # UNAVAILABLE, how long one statement may run, and how long a session may sit idle
    # inside a transaction before PostgreSQL ends it and releases its locks.
    pg_lock_timeout_seconds: float = Field(default=5, ge=0)
    pg_statement_timeout_seconds: float = Field(default=30, ge=0)
    pg_idle_in_transaction_timeout_seconds: float = Field(default=10, ge=0)
    # SQLite: how long a write waits for another process's write lock on the file.
    sqlite_busy_timeout_seconds: float = Field(default=30, ge=0)
    # A request larger than this is refused by the transport before it reaches a handler.
    max_request_bytes: int = Field(default=1024 * 1024, gt=1024)
    # Webhooks (docs in README, "Webhooks"). Receivers must be https on a public address
    # unless these allow otherwise: plain http, and networks (comma-separated CIDRs, e.g.
    # "127.0.0.0/8") that would be refused as loopback, private or link-local.
    webhook_allow_http: bool = False
    webhook_allowed_networks: str = ""
    # How long one delivery is retried (exponential backoff with jitter, from the first
    # retry's delay up to the longest) before the endpoint is marked failing.
    webhook_retry_window_seconds: float = Field(default=24 * 3600, gt=0)
    webhook_first_retry_seconds: float = Field(default=5, gt=0)
    webhook_max_retry_seconds: float = Field(default=3600, gt=0)
    # One attempt's bound (connect, send, answer), and how much of the answer is read.
    webhook_timeout_seconds: float = Field(default=10, gt=0)
    webhook_max_response_bytes: int = Field(default=64 * 1024, ge=0)
    # Attempts in flight per server (per endpoint it is always one).
    webhook_concurrency: int = Field(default=16, ge=1)
    # How often each replica looks for endpoints with work, and how long it holds one.
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_lease_seconds: float = Field(default=60, gt=0)
    # The page's address, for the links in webhook bodies.
    public_url: str = "http://127.0.0.1:8080"
    # Seconds a server waits for in-flight calls on shutdown.
    shutdown_grace_seconds: float = Field(default=5, ge=0)

    def pg_bounds(self) -> PgBounds:
        return PgBounds(
            lock_timeout=self.pg_lock_timeout_seconds,
            statement_timeout=self.pg_statement_timeout_seconds,
            idle_in_transaction_timeout=self.pg_idle_in_transaction_timeout_seconds,
        )

    def assessment_lease_seconds(self) -> float:
        """How long a replica holds a pending assessment: one assessment with all its
        retries, plus time to save it; after that another replica may take it over."""
        return self.assessment_timeout_seconds + ASSESSMENT_SAVE_ALLOWANCE_SECONDS

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

    def existing_jwt_secret(self) -> str:
        """The configured secret or the local one, never creating it.

        ``token`` uses this: a secret it created would be one no server knows, so every
        token it printed would be refused with nothing pointing at the cause.
        """
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        path = self.var_dir / JWT_SECRET_FILE
        if not path.exists():
            raise ConfigError(
                f"no JWT secret: RF_JWT_SECRET is not set and {path.resolve()} does not exist; "
                "start `resolutionflow serve` (or `server`) in this directory first, which "
                "creates it, or set RF_JWT_SECRET to the secret the server uses"
            )
        return _read_secret(path)


def _read_secret(path: Path) -> str:
    path = path.resolve()
    try:
        value = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path} is not a text secret (it holds binary data); delete it to have a new "
            "one created, or set RF_JWT_SECRET"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read the JWT secret {path}: {e.strerror}") from None
    if not value:
        raise ConfigError(f"{path} is empty; delete it to create a new secret") from None
    return value


def _local_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL makes concurrent first starts (serve and server) agree on one secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w") as f:
        value = secrets.token_urlsafe(48)
        f.write(value + "\n")
    return value
