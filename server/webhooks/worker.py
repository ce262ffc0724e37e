"""Sends webhook deliveries: one sender per endpoint, one replica per endpoint.

Each replica claims endpoints with a lease in the database (on PostgreSQL the candidates
are read ``FOR UPDATE SKIP LOCKED``, so replicas take different ones; the claim itself
is a conditional update, which is what makes it exclusive on SQLite too). The holder runs
one task per endpoint: it renews the lease, turns new log events into deliveries, and
sends the oldest pending one; the next waits until it succeeded or was given up. So an
endpoint's deliveries go out in sequence order, one at a time, and exactly one replica
makes a given attempt (the lease outlasts an attempt's bound and is renewed before each).

An attempt is recorded after it ends. A replica killed mid-attempt leaves the delivery
pending: whoever holds the endpoint next (once the lease ran out; the holder is named per
process, so workers sharing a port never mistake each other's claims for their own)
sends it again, with the same ``webhook-id``: at-least-once, and
receivers drop duplicates by that id.

A slow or dead receiver holds only its own endpoint's task: attempts are bounded in time
and in the answer read, a global semaphore bounds attempts in flight per server, and
nothing here runs on the write path or the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client import Counter
from sqlalchemy import or_, select, update
from standardwebhooks.webhooks import Webhook

from server.db.database import Database
from server.db.schema import WebhookDeliveryRecord, WebhookEndpointRecord
from server.domain.types import Event
from server.models import events
from server.settings import Settings
from server.webhooks import store
from server.webhooks.safety import Policy, Refused

log = logging.getLogger(__name__)

ATTEMPTS = Counter(
    "resolutionflow_webhook_attempts_total", "Webhook delivery attempts by outcome", ["outcome"]
)
ENDPOINTS_FAILING = Counter(
    "resolutionflow_webhook_endpoints_failing_total",
    "Endpoints marked failing after a delivery failed for the whole retry window",
)
USER_AGENT = "ResolutionFlow-Webhooks/1"
CLAIM_BATCH = 100


@dataclass(frozen=True)
class Outcome:
    ok: bool
    code: int | None
    latency_ms: int
    error: str


class WebhookWorker:
    def __init__(self, db: Database, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.policy = Policy.parse(settings.webhook_allow_http, settings.webhook_allowed_networks)
        self.owner = ""
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._wakes: dict[str, asyncio.Event] = {}
        self._account_of: dict[str, str] = {}
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)
        self._stop = asyncio.Event()
        self._claimer: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(
            follow_redirects=False,
            # Proxies from the environment would connect to an address we did not check.
            trust_env=False,
            timeout=httpx.Timeout(settings.webhook_timeout_seconds),
            limits=httpx.Limits(max_connections=settings.webhook_concurrency * 2),
        )

    async def start(self, owner: str) -> None:
        self.owner = owner
        self._claimer = asyncio.create_task(self._claim_loop(), name="webhook claims")

    async def stop(self) -> None:
        """Finish the attempts in flight (bounded), then give the endpoints back."""
        self._stop.set()
        for wake in self._wakes.values():
            wake.set()
        tasks = [t for t in (self._claimer, *self._senders.values()) if t is not None]
        if tasks:
            _done, pending = await asyncio.wait(
                tasks, timeout=self.settings.webhook_timeout_seconds + 5
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with self.db.write() as s:
                await s.execute(
                    update(WebhookEndpointRecord)
                    .where(WebhookEndpointRecord.lease_owner == self.owner)
                    .values(lease_owner=None, lease_until=None)
                )
        await self._http.aclose()

    def committed(self, appended: list[Event]) -> None:
        """Wake this server's senders of the accounts that just wrote (a shortcut: the
        poll finds the same events a moment later)."""
        accounts = {e.account_id for e in appended}
        for endpoint_id, account in self._account_of.items():
            if account in accounts and endpoint_id in self._wakes:
                self._wakes[endpoint_id].set()

    def wake_all(self) -> None:
        for wake in self._wakes.values():
            wake.set()

    async def _claim_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.claim()
            except Exception:
                log.exception("claiming webhook endpoints failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.webhook_poll_seconds)

    async def claim(self) -> None:
        """Take endpoints nobody holds: never claimed, given back, or a lease run out."""
        now = self.clock()
        until = now + timedelta(seconds=self.settings.webhook_lease_seconds)
        free = or_(
            WebhookEndpointRecord.lease_until.is_(None),
            WebhookEndpointRecord.lease_until < now,
            WebhookEndpointRecord.lease_owner == self.owner,
        )
        mine = list(self._senders)
        query = (
            select(WebhookEndpointRecord.id, WebhookEndpointRecord.account_id)
            .where(
                WebhookEndpointRecord.enabled.is_(True),
                WebhookEndpointRecord.failing.is_(False),
                free,
            )
            .limit(CLAIM_BATCH)
        )
        if mine:
            query = query.where(WebhookEndpointRecord.id.not_in(mine))
        claimed: list[tuple[str, str]] = []
        async with self.db.write() as s:
            if not self.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            for endpoint_id, account_id in (await s.execute(query)).all():
                result = await s.execute(
                    update(WebhookEndpointRecord)
                    .where(WebhookEndpointRecord.id == endpoint_id, free)
                    .values(lease_owner=self.owner, lease_until=until)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append((endpoint_id, account_id))
        for endpoint_id, account_id in claimed:
            self._account_of[endpoint_id] = account_id
            self._wakes[endpoint_id] = asyncio.Event()
            self._senders[endpoint_id] = asyncio.create_task(
                self._send_loop(endpoint_id), name=f"webhook {endpoint_id}"
            )

    async def _renew(self, endpoint_id: str) -> WebhookEndpointRecord | None:
        """Extend the lease; the endpoint as it is now, or None if no longer ours to send."""
        now = self.clock()
        async with self.db.write() as s:
            result = await s.execute(
                update(WebhookEndpointRecord)
                .where(
                    WebhookEndpointRecord.id == endpoint_id,
                    WebhookEndpointRecord.lease_owner == self.owner,
                )
                .values(lease_until=now + timedelta(seconds=self.settings.webhook_lease_seconds))
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            endpoint = await s.get(WebhookEndpointRecord, endpoint_id)
            if endpoint is None or not endpoint.enabled or endpoint.failing:
                if endpoint is not None:
                    endpoint.lease_owner = None
                    endpoint.lease_until = None
                return None
            await store.materialize(s, endpoint, self.settings.public_url, now)
            return endpoint

    async def _send_loop(self, endpoint_id: str) -> None:
        wake = self._wakes[endpoint_id]
        try:
            while not self._stop.is_set():
                wake.clear()
                try:
                    wait = await self._step(endpoint_id)
                except _Lost:
                    return
                except Exception:
                    log.exception("webhook endpoint %s: step failed", endpoint_id)
                    wait = self.settings.webhook_poll_seconds
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), wait)
        finally:
            self._senders.pop(endpoint_id, None)
            self._wakes.pop(endpoint_id, None)
            self._account_of.pop(endpoint_id, None)

    async def _step(self, endpoint_id: str) -> float:
        """One attempt if one is due; returns how long to wait before the next step.

        An idle endpoint costs a read per poll, not a write: the lease is renewed (and
        the log read) only when the log moved, a delivery is due, or half the lease is
        gone. Writes are what SQLite serializes and what PostgreSQL must log.
        """
        poll = self.settings.webhook_poll_seconds
        async with self.db.read() as s:
            current = await s.get(WebhookEndpointRecord, endpoint_id)
            head = await events.head(s, current.account_id) if current is not None else 0
            delivery = await store.next_pending(s, endpoint_id)
        now = self.clock()
        half = timedelta(seconds=self.settings.webhook_lease_seconds / 2)
        if (
            current is not None
            and current.lease_owner == self.owner
            and current.enabled
            and not current.failing
            and current.lease_until is not None
            and current.lease_until - now > half
            and head <= current.cursor_sequence
            and (delivery is None or (delivery.next_attempt_at or now) > now)
        ):
            if delivery is None or delivery.next_attempt_at is None:
                return poll
            return min(poll, (delivery.next_attempt_at - now).total_seconds())
        endpoint = await self._renew(endpoint_id)
        if endpoint is None:
            raise _Lost
        async with self.db.read() as s:
            delivery = await store.next_pending(s, endpoint_id)
        if delivery is None:
            return poll
        now = self.clock()
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
            return min(poll, (delivery.next_attempt_at - now).total_seconds())
        async with self._slots:
            outcome = await self.attempt(endpoint, delivery)
        await self._record(endpoint, delivery, outcome)
        return 0

    async def attempt(
        self, endpoint: WebhookEndpointRecord, delivery: WebhookDeliveryRecord
    ) -> Outcome:
        started = time.perf_counter()

        def ended(ok: bool, code: int | None, error: str) -> Outcome:
            ATTEMPTS.labels("ok" if ok else "failed").inc()
            return Outcome(ok, code, int((time.perf_counter() - started) * 1000), error)

        try:
            # Resolving is part of the attempt's time bound: a name server that never
            # answers holds this endpoint no longer than a receiver that never answers.
            async with asyncio.timeout(self.settings.webhook_timeout_seconds):
                scheme, host, address, port = await self.policy.resolve(endpoint.url)
        except Refused as e:
            return ended(False, None, f"refused: {e}")
        except TimeoutError:
            return ended(False, None, "the name did not resolve in time")
        body = (
            delivery.payload
            if endpoint.format != store.SLACK
            else store.slack_text(delivery.payload)
        )
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        sent_at = datetime.now(UTC)
        parts = urlsplit(endpoint.url)
        ip_host = f"[{address}]" if ":" in address else address
        target = urlunsplit((scheme, f"{ip_host}:{port}", parts.path or "/", parts.query, ""))
        default_port = 443 if scheme == "https" else 80
        headers = {
            "host": host if port == default_port else f"{host}:{port}",
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": Webhook(endpoint.secret).sign(delivery.id, sent_at, data),
        }
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        try:
            async with asyncio.timeout(self.settings.webhook_timeout_seconds):
                async with self._http.stream(
                    "POST", target, content=data.encode(), headers=headers, extensions=extensions
                ) as response:
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read >= self.settings.webhook_max_response_bytes:
                            break  # the rest is not ours to wait for
                    code = response.status_code
        except TimeoutError:
            return ended(False, None, "no answer in time")
        except httpx.HTTPError as e:
            return ended(False, None, f"{type(e).__name__}: {e}"[:500])
        if 200 <= code < 300:
            return ended(True, code, "")
        if 300 <= code < 400:
            return ended(False, code, "redirects are not followed")
        return ended(False, code, f"HTTP {code}")

    async def _record(
        self,
        endpoint: WebhookEndpointRecord,
        delivery: WebhookDeliveryRecord,
        outcome: Outcome,
    ) -> None:
        now = self.clock()
        s_ = self.settings
        async with self.db.write() as s:
            record = await s.get(
                WebhookDeliveryRecord, delivery.id, populate_existing=True, with_for_update=True
            )
            if record is None or record.status != store.PENDING:
                return  # deleted or changed meanwhile
            record.attempts += 1
            record.last_response_code = outcome.code
            record.last_latency_ms = outcome.latency_ms
            record.last_error = outcome.error
            # Redelivered while this attempt ran (RedeliverWebhook moved its next attempt):
            # what the admin asked for still stands, so it stays pending.
            requeued = record.next_attempt_at != delivery.next_attempt_at
            if outcome.ok and requeued:
                return
            if outcome.ok:
                record.status = store.SUCCEEDED
                record.delivered_at = now
                record.next_attempt_at = None
                return
            first = record.first_attempt_at or now
            record.first_attempt_at = first
            if now - first >= timedelta(seconds=s_.webhook_retry_window_seconds):
                record.status = store.FAILED
                record.next_attempt_at = None
                if not await store.mark_failing(s, endpoint, outcome.error, now):
                    return  # already failing: marked (and told) once
                ENDPOINTS_FAILING.inc()
                log.warning(
                    "webhook endpoint %s of account %s marked failing: delivery %s failed "
                    "for %.0fs (%s)",
                    endpoint.id,
                    endpoint.account_id,
                    record.id,
                    s_.webhook_retry_window_seconds,
                    outcome.error,
                )
                return
            record.next_attempt_at = now + timedelta(seconds=self.backoff(record.attempts))

    def backoff(self, attempts: int) -> float:
        """Exponential, capped, with full jitter in its upper half (receivers coming back
        are not hit by every sender at the same instant)."""
        s = self.settings
        delay = min(
            s.webhook_max_retry_seconds, s.webhook_first_retry_seconds * 2 ** (attempts - 1)
        )
        return delay / 2 + random.uniform(0, delay / 2)


class _Lost(Exception):
    """The endpoint is no longer this server's to send (lease lost, disabled, deleted)."""
