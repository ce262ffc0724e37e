"""Presence reports: which browsers this gateway serves the escalation queue to.

Why: the gateway serves an account's queue to all its browsers from one upstream stream
(gateway.fanout), so the server cannot count who watches the queue from the streams it
holds. The gateway opens its queue streams with ``REPORTER_KEY`` (the server then does not
count them) and reports its browsers instead, with ``ReportPresence``: for each account,
the tokens of the browsers attached now. The server verifies every token and records
presence for the engineer it names, with a TTL; the gateway vouches for nobody. A report
replaces this gateway's previous one for the accounts it names:

- a connect or a disconnect is reported within ``debounce_seconds`` (the accounts that
  changed, in one call), so presence follows browsers within a second or so;
- every ``report_every_seconds`` (the server says: a third of its TTL) a report naming no
  account keeps this gateway's rows alive: one row on the server, however many browsers,
  and a gateway that dies drops out within the TTL. When the server answers ``resync``
  (this gateway's rows had lapsed, after an outage or a long pause) every account is
  reported again;
- an account whose last browser left is reported once with no tokens.

Reports go in calls of at most ``chunk_tokens`` tokens, an account never split across two
calls (a call replaces whole accounts). Each call is authenticated by one of the tokens it
carries (the server requires an engineer's or admin's token, and checks every reported
one on its own): the gateway holds no credential of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from typing import Any

import grpc
from prometheus_client import Counter as Total
from resolutionflow.v1 import handoff_pb2 as pb

log = logging.getLogger(__name__)

# Metadata on a queue stream whose browsers this gateway reports (the server's key).
REPORTER_KEY = "rf-presence-reporter"

# What one ReportPresence call may carry (server/domain/rules.py): tokens, and so those
# of one account, and accounts.
MAX_TOKENS_PER_ACCOUNT = 5000
MAX_GROUPS = 1000
# Tokens' bytes per call, well within the server's 1 MiB request bound (identity
# providers' tokens can be a few KiB each).
MAX_CALL_BYTES = 512 * 1024

REPORTS = Total(
    "resolutionflow_gateway_presence_reports_total",
    "ReportPresence calls, by outcome",
    ["outcome"],
)
REFUSED = Total(
    "resolutionflow_gateway_presence_refused_total",
    "Reported browser tokens the server refused (expired, other account, technician)",
)


class PresenceReporter:
    """The browsers on queue streams, by account and token, and the task reporting them."""

    def __init__(
        self,
        handoffs: Any,
        *,
        debounce_seconds: float = 0.2,
        report_every_seconds: float = 3.0,
        chunk_tokens: int = 1000,
        timeout_seconds: float = 10.0,
    ) -> None:
        # A callable returning the HandoffService stub (the channel is made lazily).
        self._handoffs = handoffs
        self.reporter_id = uuid.uuid4().hex
        self.metadata = ((REPORTER_KEY, self.reporter_id),)
        self.debounce_seconds = debounce_seconds
        self.report_every_seconds = report_every_seconds
        self.chunk_tokens = chunk_tokens
        self.timeout_seconds = timeout_seconds
        # account -> token -> browsers attached with it (tabs of one engineer share one).
        self.watching: dict[str, Counter[str]] = {}
        self.expiry: dict[str, float | None] = {}
        # The token seen last, and its expiry: the credential of a report with no tokens.
        self._last: tuple[str, float | None] = ("", None)
        self.changed: set[str] = set()
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # ---- browsers ------------------------------------------------------------------

    def add(self, account: str, authorization: str, expires_at: float | None) -> str:
        """A browser of ``account`` is on a queue stream; returns its token (for ``remove``)."""
        token = _token(authorization)
        tokens = self.watching.setdefault(account, Counter())
        tokens[token] += 1
        self.expiry[token] = expires_at
        self._last = (token, expires_at)
        if tokens[token] == 1:
            self._changed(account)
        return token

    def remove(self, account: str, token: str) -> None:
        tokens = self.watching.get(account)
        if tokens is None or token not in tokens:
            return
        tokens[token] -= 1
        if tokens[token] <= 0:
            del tokens[token]
            # A token is of one account (the server said which), so it is nowhere else.
            self.expiry.pop(token, None)
            # Kept (empty) until reported: the server must hear that the account emptied.
            self._changed(account)

    def _changed(self, account: str) -> None:
        self.changed.add(account)
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="presence-reports")
        self._poke.set()

    # ---- reports -------------------------------------------------------------------

    async def _run(self) -> None:
        last_full = time.monotonic()
        while not self._closed:
            if not self.changed:
                wait = max(0.0, last_full + self.report_every_seconds - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._poke.wait()
            # Cleared before reading what changed: a change during the report pokes again.
            self._poke.clear()
            if self._closed:
                return
            full = time.monotonic() >= last_full + self.report_every_seconds
            if not full:
                # Connects and disconnects come in bursts (a page reload, a deploy): one
                # report for the burst.
                await asyncio.sleep(self.debounce_seconds)
            accounts = list(self.changed)
            self.changed.difference_update(accounts)
            if full:
                last_full = time.monotonic()
            try:
                # Any report keeps the rows alive; with nothing changed, one naming none.
                delivered = await (self.report(accounts) if accounts else self.keepalive())
            except Exception:
                log.exception("presence report failed")
                delivered = False
            if not delivered:
                # The server is away: what failed is retried, not in a tight loop.
                await asyncio.sleep(min(1.0, self.report_every_seconds))
            if not self.watching and not self.changed:
                # Nobody left to report: the task ends until the next browser comes.
                self._task = None
                return

    async def report(self, accounts: list[str]) -> bool:
        """One report of ``accounts`` (in as many calls as it takes); False if a call
        failed, its accounts marked changed again, to be retried."""
        now = time.time()
        groups: list[tuple[str, list[str]]] = []
        for account in accounts:
            tokens: list[str] = []
            size = 0
            for t in self.watching.get(account, ()):
                if (e := self.expiry.get(t)) is not None and e <= now:
                    continue
                # The server's bounds per call: an account beyond them shows its first
                # browsers.
                if len(tokens) >= MAX_TOKENS_PER_ACCOUNT or size + len(t) > MAX_CALL_BYTES:
                    break
                tokens.append(t)
                size += len(t)
            groups.append((account, tokens))
        delivered = True
        at = 0
        while at < len(groups):
            chunk: list[tuple[str, list[str]]] = []
            count = size = 0
            while at < len(groups):
                tokens = groups[at][1]
                more = sum(map(len, tokens))
                if chunk and (
                    count + len(tokens) > self.chunk_tokens
                    or size + more > MAX_CALL_BYTES
                    or len(chunk) >= MAX_GROUPS
                ):
                    break
                chunk.append(groups[at])
                count, size = count + len(tokens), size + more
                at += 1
            if not await self._send(chunk):
                self.changed.update(a for a, _ in chunk)
                delivered = False
                continue
            for account, _ in chunk:
                if not self.watching.get(account, True):
                    del self.watching[account]  # its emptiness is reported
        return delivered

    async def keepalive(self) -> bool:
        """A report naming no account: the server moves this gateway's liveness forward."""
        return await self._send([], self._credential(list(self.expiry)))

    async def _send(
        self, chunk: list[tuple[str, list[str]]], credential: str | None = None
    ) -> bool:
        credential = credential or self._credential([t for _, tokens in chunk for t in tokens])
        if credential is None:
            # Nobody's token to call with: the rows expire by the TTL instead.
            REPORTS.labels("no_credential").inc()
            return True
        request = pb.ReportPresenceRequest(
            reporter_id=self.reporter_id,
            accounts=[pb.PresenceGroup(account_id=a, tokens=t) for a, t in chunk],
        )
        try:
            reply = await self._handoffs().ReportPresence(
                request,
                metadata=(("authorization", f"Bearer {credential}"),),
                timeout=self.timeout_seconds,
            )
        except grpc.aio.AioRpcError as e:
            REPORTS.labels(e.code().name.lower()).inc()
            log.info("presence report not taken (%s): %s", e.code().name, e.details())
            return e.code() is not grpc.StatusCode.UNAVAILABLE
        REPORTS.labels("ok").inc()
        if reply.refused:
            REFUSED.inc(len(reply.refused))
        if reply.report_every_seconds > 0:
            self.report_every_seconds = reply.report_every_seconds
        if reply.resync:
            # Our rows had lapsed on the server and may be gone: every account again.
            self.changed.update(self.watching)
            self._poke.set()
        return True

    def _credential(self, tokens: list[str]) -> str | None:
        """A live token to authenticate the call: the one it carries that lasts longest,
        else the last one this gateway saw (a report that an account emptied carries
        none), while it lasts."""
        now = time.time()
        best, best_until = None, now
        for token in tokens or [self._last[0]]:
            until = self.expiry.get(token) if tokens else self._last[1]
            lasts = float("inf") if until is None else until
            if token and lasts > best_until:
                best, best_until = token, lasts
        return best

    async def close(self) -> None:
        """On a clean stop: every account this gateway served is reported empty, so its
        engineers drop out now rather than after the TTL."""
        if self._closed:
            return
        self._closed = True
        self._poke.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        accounts = list(self.watching)
        for tokens in self.watching.values():
            tokens.clear()
        if accounts:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.report(accounts)


def _token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else authorization
