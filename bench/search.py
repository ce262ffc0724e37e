"""``resolutionflow bench --mode search``: the "what fixed it last time" lookup at scale.

Fills one account with ``--resolved`` resolved escalations in bulk (Core inserts through
the same tables and search index the server writes, a few thousand rows per statement;
not one RPC each), then times ``similar_resolved`` (what the context screen and the
assessment run) for ``--queries`` new problems worded like the stored ones: p50 and p99
in milliseconds. In process, no server: what is measured is the database's full-text
search, not the transport.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert

from bench.loadgen import percentiles
from server.db.database import Database
from server.db.migrate import upgrade
from server.db.schema import HANDOFFS
from server.domain.types import (
    Assessment,
    AssessmentStatus,
    Handoff,
    Intent,
    NewHandoff,
    Priority,
    Status,
    Step,
    UserRef,
)
from server.models import search
from server.models.records import to_row

if TYPE_CHECKING:
    from bench.runner import Bench

BATCH = 5_000
SEED = 18


def _words(text: str) -> list[str]:
    return text.split()


# Help-desk words: what is affected, what it does, where. Drawn with a long tail (the
# first words are much more common), as real problem descriptions are.
THINGS = _words(
    "vpn outlook teams printer laptop monitor wifi password mfa sharepoint onedrive excel "
    "browser chrome edge zoom headset keyboard mouse docking station scanner badge phone "
    "calendar mailbox license citrix rdp drive backup antivirus firewall dns dhcp proxy "
    "certificate sso okta salesforce sap erp crm webcam bluetooth usb battery charger "
    "bitlocker intune jira confluence slack network switch router server database"
)
SYMPTOMS = _words(
    "disconnects crashes freezes slow fails refuses locked expired missing blank "
    "flickers drops hangs errors rejects stuck offline unreachable corrupted duplicates "
    "loops reboots overheats timeout denied unresponsive garbled"
)
WHERE = _words(
    "every morning after update at home in the office on wifi wired since monday "
    "for new hires after password change when docked on battery during calls at login "
    "after restart for the whole team on one floor remote only"
)
FIXES = (
    "Reinstalled the client",
    "Cleared the cached credentials",
    "Replaced the cable",
    "Updated the driver",
    "Reset the profile",
    "Renewed the certificate",
    "Re-enrolled the device",
    "Rebuilt the mail profile",
    "Flushed DNS and renewed the lease",
    "Rolled back the update",
)


def _zipf(words: list[str], rng: random.Random, k: int) -> list[str]:
    weights = [1 / (rank + 1) for rank in range(len(words))]
    return rng.choices(words, weights, k=k)


def problem(rng: random.Random) -> str:
    return " ".join(
        [*_zipf(THINGS, rng, 2), *_zipf(SYMPTOMS, rng, 2), *_zipf(WHERE, rng, 3)]
    ).capitalize()


def resolved_handoff(account: str, rng: random.Random, at: datetime) -> Handoff:
    asked = NewHandoff(
        request_id=None,
        session_id="bench",
        intent=Intent.ESCALATE,
        priority=rng.choice(list(Priority)),
        problem_summary=problem(rng),
        steps_tried=(Step(" ".join([*_zipf(SYMPTOMS, rng, 1), "checked"]), "no change"),),
        notes="",
    )
    creator = UserRef(f"tech-{rng.randrange(200)}", "")
    opened = asked.open(str(uuid.uuid4()), account, creator, at, None)
    return dataclasses.replace(
        opened,
        status=Status.RESOLVED,
        picked_up_by=UserRef(f"eng-{rng.randrange(40)}", ""),
        resolution_note=rng.choice(FIXES),
        assessment=Assessment(AssessmentStatus.READY, provider="bench", completed_at=at),
        picked_up_at=at,
        resolved_at=at,
    )


async def fill(db: Database, account: str, count: int, rng: random.Random) -> float:
    """Insert ``count`` resolved escalations and their search entries; seconds taken."""
    started = time.perf_counter()
    start = datetime.now(UTC) - timedelta(days=365)
    for first in range(0, count, BATCH):
        batch = [
            resolved_handoff(account, rng, start + timedelta(minutes=first + i))
            for i in range(min(BATCH, count - first))
        ]
        async with db.write() as s:
            await s.execute(insert(HANDOFFS), [to_row(h) for h in batch])
            await search.index_many(s, batch)
    return time.perf_counter() - started


async def measure(db: Database, account: str, queries: int, rng: random.Random) -> dict[str, Any]:
    template = resolved_handoff(account, rng, datetime.now(UTC))
    timings: list[float] = []
    found = 0
    for _ in range(queries):
        asked = dataclasses.replace(
            template, id=str(uuid.uuid4()), status=Status.OPEN, problem_summary=problem(rng)
        )
        began = time.perf_counter()
        async with db.read() as s:
            similar = await search.similar_resolved(s, asked)
        timings.append(time.perf_counter() - began)
        found += bool(similar)
    return {"queries": queries, "with_a_match": found, "lookup_ms": percentiles(timings)}


async def _run(database_url: str, resolved: int, queries: int) -> dict[str, Any]:
    await upgrade(database_url)
    db = Database(database_url)
    try:
        rng = random.Random(SEED)
        account = f"bench-search-{uuid.uuid4().hex[:8]}"
        # Another account's rows beside it: the lookup must skip them, as in production.
        await fill(db, f"{account}-other", max(1, resolved // 10), rng)
        fill_seconds = await fill(db, account, resolved, rng)
        await measure(db, account, min(queries, 20), rng)  # warm caches and statements
        out = await measure(db, account, queries, rng)
        return {
            "resolved": resolved,
            "fill_seconds": round(fill_seconds, 2),
            "fill_rows_per_s": round(resolved / fill_seconds) if fill_seconds else 0,
            **out,
        }
    finally:
        await db.dispose()


def run_search(bench: Bench) -> dict[str, Any]:
    a = bench.args
    if a.resolved < 1 or a.queries < 1:
        raise SystemExit("bench: --resolved and --queries must be at least 1")
    bench.say(f"search: filling {a.resolved} resolved escalations, then {a.queries} lookups")
    return asyncio.run(_run(bench.database_url, a.resolved, a.queries))
