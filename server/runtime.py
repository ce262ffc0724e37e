"""One running server: database, core, live streams, background clocks and gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from sqlalchemy import text

from server import telemetry
from server.api.app import NOT_SERVING, SERVICE_NAMES, SERVING, create_grpc_server
from server.api.convert import ProtoEncoder
from server.api.webhooks import EscalationPolicyService, WebhookService
from server.assessment.providers import provider_from
from server.assessment.worker import AssessmentWorker
from server.auth import TokenCodec, TokenVerifier, verifier_from
from server.core import Core
from server.db.database import Database
from server.db.migrate import upgrade
from server.errors import StartupError, Unavailable
from server.models import events, sla
from server.settings import Settings
from server.streaming.hub import Hub
from server.streaming.nats_wakeup import NatsWakeup
from server.streaming.pg_listener import PgListener, asyncpg_dsn
from server.streaming.pg_listener import parse as parse_notification
from server.streaming.presence import Presence
from server.streaming.streams import Streams
from server.webhooks.worker import WebhookWorker

log = logging.getLogger(__name__)


class ServerRuntime:
    def __init__(self, settings: Settings, worker: int | None = None) -> None:
        """``worker``: this process's index among the workers of one ``server --workers N``,
        which share the gRPC port (SO_REUSEPORT); None for a server that owns its port."""
        self.settings = settings
        self.worker = worker
        self.db = Database(
            settings.database_url,
            pg_bounds=settings.pg_bounds(),
            sqlite_busy_timeout=settings.sqlite_busy_timeout_seconds,
        )
        self.core = Core(self.db, settings)
        self.codec = TokenCodec(settings.resolved_jwt_secret())
        self.verifier: TokenVerifier = verifier_from(settings, self.codec)
        encoder = ProtoEncoder()
        self.hub = Hub(
            self.db,
            encoder.event,
            capacity=settings.stream_buffer,
            max_per_user=settings.max_streams_per_user,
            max_per_account=settings.max_streams_per_account,
            full_check_seconds=settings.log_full_check_seconds,
            idle_heartbeat_sweeps=idle_heartbeat_sweeps(settings),
        )
        self.db.on_commit(self.hub.publish)
        self.db.on_commit(telemetry.events_committed)
        self.presence = Presence(self.db, settings.presence_ttl_seconds)
        self.streams = Streams(self.db, self.hub, encoder, self.presence)
        self.breach_policy = sla.BreachPolicy(
            settings.breach_raise_priority, settings.breach_renotify_seconds
        )
        self.webhooks = WebhookWorker(self.db, settings, self.core.clock)
        self.db.on_commit(self.webhooks.committed)
        self.grpc, self._health = create_grpc_server(
            self.core,
            self.streams,
            self.verifier,
            webhooks=WebhookService(self.db, self.webhooks.policy, self.core.clock),
            policies=EscalationPolicyService(self.db, self.breach_policy, self.core.clock),
            max_request_bytes=settings.max_request_bytes,
            reuse_port=worker is not None,
        )
        self.assessments = AssessmentWorker(
            self.db,
            provider_from(settings),
            self.core.clock,
            concurrency=settings.assessment_concurrency,
            timeout=settings.assessment_timeout_seconds,
            lease=settings.assessment_lease_seconds(),
            retry_every=settings.assessment_retry_seconds,
            save=self.core.save_assessment,
        )
        self.core.created_listeners.append(self.assessments.submit)
        # How other replicas' commits reach this one (the log check heals whatever a
        # wake-up misses, whichever this is). SQLite is one process: in-process only.
        self.wakeup = "local" if self.db.is_sqlite else settings.wakeup
        self.db.pg_notify = self.wakeup == "postgres"
        self.listener: PgListener | None = None
        self.nats: NatsWakeup | None = None
        if self.wakeup == "postgres":
            self.listener = PgListener(
                asyncpg_dsn(self.db.url),
                on_notify=self._notified,
                own_pids=self.db.backend_pids,
                on_connect=self._listening,
            )
        elif self.wakeup == "nats":
            self.nats = NatsWakeup(settings.nats_url, self.hub.moved, self._listening)
            self.db.on_commit(self.nats.committed)
        self._tasks: list[asyncio.Task[None]] = []
        self._periodic: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Future[None]] = set()
        self._metrics_http: WSGIServer | None = None
        self.port = 0
        self.metrics_port = 0
        self._serving = NOT_SERVING
        self._stopping = False
        self._jobs_stop = asyncio.Event()

    async def start(self, grpc_addr: str | None = None) -> int:
        """Migrate, bind and serve; returns the bound port (useful with port 0)."""
        await upgrade(self.settings.database_url)
        addr = grpc_addr or self.settings.grpc_addr
        try:
            self.port = self.grpc.add_insecure_port(addr)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise StartupError(
                f"cannot listen on {addr}: the address is in use or not available "
                "(is another server running on this port?)"
            )
        s = self.settings
        done = self._jobs_stop
        self._periodic = [
            _every(s.log_poll_seconds, "log check", self._wake_feeds, done),
            _every(s.heartbeat_seconds, "stream heartbeats", self._heartbeats, done),
            _every(s.sla_check_seconds, "SLA clock", self.fire_due_sla_timers, done),
            _every(s.prune_interval_seconds, "event retention", self.prune_events, done),
            _every(s.health_check_seconds, "database health", self.check_database, done),
            # Often enough that a connect or disconnect shows within a second or so.
            _every(min(1.0, s.presence_ttl_seconds / 3), "presence", self.presence.refresh, done),
        ]
        self._tasks = list(self._periodic)
        if self.listener is not None:
            self._tasks.append(asyncio.create_task(self.listener.run(), name="pg-listener"))
        if self.nats is not None:
            self._tasks.append(asyncio.create_task(self.nats.run(), name="nats-wakeup"))
        # Workers share the port: the index keeps their names apart, and a restarted
        # worker takes back the claims of the one it replaces (and no sibling's).
        worker = "" if self.worker is None else f"/w{self.worker}"
        self.core.assessment_owner = f"{socket.gethostname()}:{self.port}{worker}"
        await self.assessments.start(self.core.assessment_owner)
        # Per process, not per address: workers sharing a port must not take each
        # other's endpoints for their own (a killed server's are free after the lease).
        await self.webhooks.start(f"{self.core.assessment_owner}:{os.getpid()}")
        if s.metrics_addr:
            host, _, port = s.metrics_addr.rpartition(":")
            # Metrics are per process: worker i serves its own on the given port + i.
            offset = (self.worker or 0) if int(port) else 0
            self._metrics_http, _ = start_http_server(int(port) + offset, host)
            self.metrics_port = self._metrics_http.server_port
            telemetry.WORKER.labels(str(self.worker or 0), str(os.getpid())).set(1)
        await self.grpc.start()
        self._serving = SERVING
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, SERVING)
        log.info("gRPC server listening on %s (port %d)", addr, self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, end open streams with UNAVAILABLE (resumable), then exit."""
        self._stopping = True
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, NOT_SERVING)
        self.hub.close_all()
        await self.grpc.stop(self.settings.shutdown_grace_seconds if grace is None else grace)
        try:
            await self.presence.clear()
        except Exception:  # the rows expire on their own
            log.warning("could not clear this server's presence rows")
        # Periodic jobs finish the one they are in: cancelling a write transaction half-way
        # can leave SQLite's write lock with a connection nobody closes. Whatever is still
        # running after the deadline (and the LISTEN task) is cancelled.
        self._jobs_stop.set()
        if self._periodic:
            await asyncio.wait(self._periodic, timeout=10)
        for task in (*self._tasks, *self._jobs):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._jobs, return_exceptions=True)
        await self.assessments.stop()
        await self.webhooks.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        await self.db.dispose()

    async def wait(self) -> None:
        await self.grpc.wait_for_termination()

    async def check_database(self) -> None:
        """Health follows the database: no database, no service (load balancers move on).

        A database that answers but cannot store anything (its disk is full) is no service
        either: after a write failed for lack of space, each check probes whether a write
        would succeed now, and health stays NOT_SERVING until one does.
        """
        try:
            async with asyncio.timeout(self.settings.health_check_seconds * 2):
                async with self.db.read() as s:
                    await s.execute(text("SELECT 1"))
                if self.db.storage_full:
                    await self.db.check_storage()
            status = SERVING
        except Unavailable as e:
            log.warning("database cannot serve: %s", e.message)
            status = NOT_SERVING
        except Exception as e:
            log.warning("database unreachable: %s", e)
            status = NOT_SERVING
        if status != self._serving and not self._stopping:
            self._serving = status
            for name in ("", *SERVICE_NAMES):
                await self._health.set(name, status)

    def _notified(self, payload: str) -> None:
        account, head = parse_notification(payload)
        if head is None:
            self.hub.notify((account,))
        else:
            self.hub.moved(account, head)

    def _listening(self) -> None:
        # Anything committed while we were not listening is found by one heal, now rather
        # than at the next tick.
        telemetry.LISTEN_RECONNECTS.inc()
        self._background(self._wake_feeds, "log check after reconnecting")

    def _background(self, job: Callable[[], Awaitable[None]], what: str) -> None:
        async def run() -> None:
            try:
                await job()
            except Exception:
                log.exception("%s failed; the periodic one retries", what)

        task = asyncio.ensure_future(run())
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _wake_feeds(self) -> None:
        """The log check: one query however many accounts are online (``Hub.heal``)."""
        await self.hub.heal()

    async def _heartbeats(self) -> None:
        self.hub.sweep_idle()

    async def fire_due_sla_timers(self) -> None:
        while True:
            async with self.db.write() as s:
                if not await sla.fire_next_due(s, self.core.clock(), self.breach_policy):
                    return

    async def prune_events(self) -> None:
        cutoff = self.core.clock() - timedelta(seconds=self.settings.event_retention_seconds)
        async with self.db.write() as s:
            pruned = await events.prune(s, cutoff)
        if pruned:
            log.info("pruned %d events older than %s", pruned, cutoff.isoformat())


def idle_heartbeat_sweeps(settings: Settings) -> int:
    """Quiet sweeps before an unchanged stream's heartbeat, so that one comes within
    ``idle_heartbeat_seconds`` of the stream's last message (the sweep after that message
    starts the count, hence one interval less)."""
    return max(1, int(settings.idle_heartbeat_seconds // settings.heartbeat_seconds) - 1)


def _every(
    seconds: float, what: str, job: Callable[[], Awaitable[None]], done: asyncio.Event
) -> asyncio.Task[None]:
    """Run ``job`` every ``seconds`` until ``done`` is set (never stopped half-way)."""

    async def loop() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), seconds)
            if done.is_set():
                return
            try:
                await job()
            except Exception:
                log.exception("%s failed; retrying in %.1fs", what, seconds)

    return asyncio.create_task(loop(), name=what)
