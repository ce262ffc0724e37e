"""Webhook endpoints and deliveries in the database, and the bodies built from the log.

Deliveries are made from the event log by a cursor per endpoint (``cursor_sequence``):
the endpoint's sender reads the events after it, inserts one delivery per matching event
and moves the cursor, all in one transaction. The write path (creates, pickups, SLA
timers) never looks at webhooks, so an account with many endpoints writes as fast as one
with none, and a restart or SIGKILL loses nothing: the log and the cursor are durable,
and a cursor that did not move is read again.
"""

from __future__ import annotations

import base64
import logging
import os
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from google.protobuf.json_format import MessageToDict
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.api import convert
from server.db.schema import WebhookDeliveryRecord, WebhookEndpointRecord
from server.domain.types import Event, EventDetail, EventType, Intent, WebhookEndpointRef
from server.errors import FieldViolation, InvalidArgument, NotFound
from server.models import events

log = logging.getLogger(__name__)

PENDING = "PENDING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
STANDARD = "STANDARD"
SLACK = "SLACK"
# Events turned into deliveries per transaction.
MATERIALIZE_BATCH = 500
MAX_ENDPOINTS_PER_ACCOUNT = 50
MAX_DESCRIPTION = 500
# An attempt's error as events name it.
MAX_ERROR = 300

# Webhook event names: "<escalation|handoff>.<what>". An SLA breach is
# "escalation.breached": the name receivers and breach policies key on. Account events,
# about no handoff, are named by their subject: "webhook.failing".
_WHAT = {EventType.SLA_BREACHED: "breached"}
_ACCOUNT_EVENTS = {EventType.WEBHOOK_FAILING: "webhook.failing"}
KINDS = ("escalation", "handoff")
WHATS = (
    "created",
    "picked_up",
    "released",
    "resolved",
    "cancelled",
    "assessment_ready",
    "sla_warning",
    "breached",
    # The collaboration events (transfer, comment, reopen).
    "transferred",
    "commented",
    "reopened",
    # The breach policy raised the priority (after "breached").
    "priority_raised",
)
EVENT_TYPES = (*(f"{k}.{w}" for k in KINDS for w in WHATS), *_ACCOUNT_EVENTS.values())


def webhook_type(event: Event) -> str:
    if event.handoff is None:
        return _ACCOUNT_EVENTS[event.type]
    kind = "escalation" if event.handoff.intent == Intent.ESCALATE else "handoff"
    return f"{kind}.{_WHAT.get(event.type, event.type.value.lower())}"


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def validate_event_types(values: list[str]) -> list[str]:
    unknown = [v for v in values if v not in EVENT_TYPES]
    if unknown:
        raise InvalidArgument(
            [
                FieldViolation(
                    "event_types",
                    f"unknown {', '.join(unknown[:5])}; known: {', '.join(EVENT_TYPES)}",
                )
            ]
        )
    return sorted(set(values))


def _control(c: str, allowed: str = "") -> bool:
    return (ord(c) < 32 and c not in allowed) or 0x7F <= ord(c) <= 0x9F


def validate_description(value: str) -> str:
    if len(value) > MAX_DESCRIPTION:
        raise InvalidArgument(
            [FieldViolation("description", f"at most {MAX_DESCRIPTION} characters")]
        )
    if any(_control(c, "\n\r\t") for c in value):
        raise InvalidArgument(
            [FieldViolation("description", "must not contain control characters")]
        )
    return value


def has_control(value: str) -> bool:
    """Control characters anywhere (tabs and line breaks too): never in a URL we store."""
    return any(_control(c) for c in value)


def link(public_url: str, handoff_id: str) -> str:
    return f"{public_url.rstrip('/')}/#handoff={handoff_id}"


def payload(event: Event, public_url: str) -> dict[str, Any]:
    """The standard body: Standard Webhooks' recommended {type, timestamp, data} shape,
    the handoff as the REST API shows it (protobuf JSON mapping). An account event has
    what it is about instead (``webhookEndpoint``) and links to the page."""
    message = MessageToDict(convert.handoff_event(event))
    data: dict[str, Any] = {"sequence": event.sequence}
    if event.handoff is None:
        data["url"] = public_url.rstrip("/") + "/"
        data["webhookEndpoint"] = message.get("webhookEndpoint", {})
    else:
        data["url"] = link(public_url, event.handoff.id)
        data["handoff"] = message["handoff"]
        if message.get("note"):
            data["note"] = message["note"]
    return {
        "type": webhook_type(event),
        "timestamp": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }


def slack_text(body: dict[str, Any]) -> dict[str, str]:
    """The Slack / Teams / Mattermost incoming-webhook body of a standard body."""
    if "handoff" not in body["data"]:
        return {"text": _slack_account_text(body)}
    handoff = body["data"]["handoff"]
    priority = str(handoff.get("priority", "")).removeprefix("PRIORITY_")
    summary = _slack_escape(str(handoff.get("problemSummary", ""))[:300])
    kind, _, what = body["type"].partition(".")
    return {
        "text": f"[{priority}] {kind} {what.replace('_', ' ')}: {summary} "
        f"<{body['data']['url']}|Open>"
    }


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn control characters; "&" first, so the others' entities stay intact.
    for ch, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(ch, entity)
    return text


def _slack_account_text(body: dict[str, Any]) -> str:
    endpoint = body["data"].get("webhookEndpoint", {})
    about = endpoint.get("host", "?")
    if endpoint.get("description"):
        about += f" ({endpoint['description'][:100]})"
    why = endpoint.get("lastError", "")[:200]
    return (
        _slack_escape(
            f"Webhook endpoint {about} is failing and gets no events until an admin "
            f"redelivers or re-enables it{': ' + why if why else ''}."
        )
        + f" <{body['data']['url']}|Open>"
    )


async def create_endpoint(
    s: AsyncSession,
    account_id: str,
    *,
    url: str,
    event_types: list[str],
    description: str,
    format: str,
    now: datetime,
) -> tuple[WebhookEndpointRecord, str]:
    count = len(
        (
            await s.scalars(
                select(WebhookEndpointRecord.id).where(
                    WebhookEndpointRecord.account_id == account_id
                )
            )
        ).all()
    )
    if count >= MAX_ENDPOINTS_PER_ACCOUNT:
        raise InvalidArgument(
            [FieldViolation("url", f"at most {MAX_ENDPOINTS_PER_ACCOUNT} endpoints per account")]
        )
    secret = new_secret()
    record = WebhookEndpointRecord(
        id=str(uuid.uuid4()),
        account_id=account_id,
        url=url,
        event_types=event_types,
        description=description,
        format=format,
        secret=secret,
        enabled=True,
        failing=False,
        # Events from now on: an endpoint is not sent the account's past.
        cursor_sequence=await events.head(s, account_id),
        created_at=now,
        updated_at=now,
    )
    s.add(record)
    await s.flush()
    return record, secret


async def list_endpoints(s: AsyncSession, account_id: str) -> list[WebhookEndpointRecord]:
    rows = await s.scalars(
        select(WebhookEndpointRecord)
        .where(WebhookEndpointRecord.account_id == account_id)
        .order_by(WebhookEndpointRecord.created_at, WebhookEndpointRecord.id)
    )
    return list(rows)


async def get_endpoint(s: AsyncSession, account_id: str, endpoint_id: str) -> WebhookEndpointRecord:
    record = await s.scalar(
        select(WebhookEndpointRecord).where(
            WebhookEndpointRecord.id == endpoint_id,
            WebhookEndpointRecord.account_id == account_id,
        )
    )
    if record is None:
        raise NotFound(f"webhook endpoint {endpoint_id} not found")
    return record


async def delete_endpoint(s: AsyncSession, account_id: str, endpoint_id: str) -> None:
    await get_endpoint(s, account_id, endpoint_id)
    await s.execute(
        delete(WebhookDeliveryRecord).where(WebhookDeliveryRecord.endpoint_id == endpoint_id)
    )
    await s.execute(delete(WebhookEndpointRecord).where(WebhookEndpointRecord.id == endpoint_id))


async def list_deliveries(
    s: AsyncSession, account_id: str, endpoint_id: str, status: str | None, limit: int
) -> list[WebhookDeliveryRecord]:
    await get_endpoint(s, account_id, endpoint_id)
    query = select(WebhookDeliveryRecord).where(WebhookDeliveryRecord.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(WebhookDeliveryRecord.status == status)
    rows = await s.scalars(query.order_by(WebhookDeliveryRecord.sequence.desc()).limit(limit))
    return list(rows)


async def redeliver(
    s: AsyncSession, account_id: str, endpoint_id: str, delivery_id: str, now: datetime
) -> WebhookDeliveryRecord:
    """Queue the delivery again (same id); an endpoint marked failing is given a new try."""
    endpoint = await get_endpoint(s, account_id, endpoint_id)
    # Locked: an attempt of this delivery may be recording its outcome right now; both
    # sides lock the row, so one sees the other's change instead of half-overwriting it.
    record = await s.scalar(
        select(WebhookDeliveryRecord)
        .where(
            WebhookDeliveryRecord.id == delivery_id,
            WebhookDeliveryRecord.endpoint_id == endpoint_id,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if record is None:
        raise NotFound(f"webhook delivery {delivery_id} not found")
    record.status = PENDING
    record.next_attempt_at = now
    record.first_attempt_at = None
    record.delivered_at = None
    endpoint.failing = False
    endpoint.updated_at = now
    await s.flush()
    return record


# The sender's side.


async def materialize(
    s: AsyncSession, endpoint: WebhookEndpointRecord, public_url: str, now: datetime
) -> int:
    """Turn the events after the endpoint's cursor into deliveries; move the cursor.

    Idempotent per (endpoint, sequence): a cursor that did not move (its transaction was
    lost) makes the same rows again, which the unique key drops.
    """
    batch = await events.read_after(
        s, endpoint.account_id, endpoint.cursor_sequence, MATERIALIZE_BATCH
    )
    if not batch:
        return 0
    if batch[0].sequence > endpoint.cursor_sequence + 1:
        # Pruned by retention before this endpoint got to them (it was disabled or failing
        # for longer than the log keeps events): say so rather than skip them silently.
        log.warning(
            "webhook endpoint %s of account %s missed events %d..%d: pruned from the log",
            endpoint.id,
            endpoint.account_id,
            endpoint.cursor_sequence + 1,
            batch[0].sequence - 1,
        )
    wanted = set(endpoint.event_types)
    rows = []
    for event in batch:
        name = webhook_type(event)
        if wanted and name not in wanted:
            continue
        about = event.detail.webhook_endpoint if event.detail else None
        if about is not None and about.id == endpoint.id:
            continue  # its own failure is news for the others, not for itself
        rows.append(
            {
                "id": f"msg_{uuid.uuid4().hex}",
                "endpoint_id": endpoint.id,
                "account_id": endpoint.account_id,
                "sequence": event.sequence,
                "event_type": name,
                "payload": payload(event, public_url),
                "status": PENDING,
                "attempts": 0,
                "last_error": "",
                "next_attempt_at": now,
                "created_at": now,
            }
        )
    if rows:
        postgres = s.get_bind().dialect.name == "postgresql"
        await s.execute(
            (pg_insert if postgres else sqlite_insert)(WebhookDeliveryRecord)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["endpoint_id", "sequence"])
        )
    await s.execute(
        update(WebhookEndpointRecord)
        .where(WebhookEndpointRecord.id == endpoint.id)
        .values(cursor_sequence=batch[-1].sequence)
    )
    return len(rows)


async def mark_failing(
    s: AsyncSession, endpoint: WebhookEndpointRecord, error: str, now: datetime
) -> bool:
    """Mark the endpoint failing and, in the same transaction, log WEBHOOK_FAILING to its
    account. A conditional update: of replicas (or a retry) marking it at once, exactly
    one changes the row, and only that one writes the event. Whether this call did."""
    result = await s.execute(
        update(WebhookEndpointRecord)
        .where(WebhookEndpointRecord.id == endpoint.id, WebhookEndpointRecord.failing.is_(False))
        .values(failing=True, updated_at=now)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    about = WebhookEndpointRef(
        id=endpoint.id,
        host=urlsplit(endpoint.url).hostname or "",
        description=endpoint.description[:MAX_DESCRIPTION],
        last_error=error[:MAX_ERROR],
    )
    await events.append_account_event(
        s,
        endpoint.account_id,
        EventType.WEBHOOK_FAILING,
        now,
        EventDetail(webhook_endpoint=about),
    )
    return True


async def next_pending(s: AsyncSession, endpoint_id: str) -> WebhookDeliveryRecord | None:
    """The endpoint's oldest pending delivery: deliveries go out in sequence order."""
    return await s.scalar(
        select(WebhookDeliveryRecord)
        .where(
            WebhookDeliveryRecord.endpoint_id == endpoint_id,
            WebhookDeliveryRecord.status == PENDING,
        )
        .order_by(WebhookDeliveryRecord.sequence)
        .limit(1)
    )
