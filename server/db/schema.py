"""Tables. Handoffs, the per-account sequence counter and the per-account event log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no time zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class HandoffRecord(Base):
    __tablename__ = "handoffs"
    __table_args__ = (
        # Idempotency key: one handoff per (account, creator, request_id). A create without
        # a request_id stores NULL, which both backends treat as distinct from every other.
        UniqueConstraint("account_id", "created_by_id", "request_id", name="uq_handoffs_request"),
        Index("ix_handoffs_account_created", "account_id", "created_at", "id"),
        Index("ix_handoffs_queue", "account_id", "intent", "status"),
        Index("ix_handoffs_assessment", "assessment_status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128))
    request_id: Mapped[str | None] = mapped_column(String(128))
    # sha256 of the request's canonical body (NewHandoff.body_hash): a repeated request_id
    # with another body is refused instead of answered with this handoff. NULL on rows made
    # before it was recorded, and on creates without a request_id.
    request_hash: Mapped[str | None] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(String(128))
    intent: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16))
    priority_rank: Mapped[int] = mapped_column(Integer)
    problem_summary: Mapped[str] = mapped_column(Text)
    steps_tried: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    notes: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[str] = mapped_column(String(128))
    created_by_name: Mapped[str] = mapped_column(String(256))
    picked_up_by_id: Mapped[str | None] = mapped_column(String(128))
    picked_up_by_name: Mapped[str | None] = mapped_column(String(256))
    resolution_note: Mapped[str] = mapped_column(Text, default="")
    assessment_status: Mapped[str] = mapped_column(String(16))
    assessment_summary: Mapped[str] = mapped_column(Text, default="")
    assessment_first_step: Mapped[str] = mapped_column(Text, default="")
    assessment_provider: Mapped[str] = mapped_column(String(128), default="")
    assessment_failure_reason: Mapped[str] = mapped_column(Text, default="")
    assessment_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The claim on a PENDING assessment: the replica that set it runs the assessment until
    # then; past it, any replica may claim it again (the owner died or could not save).
    assessment_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Which server holds it ("host:port"): a server restarted on the same address takes
    # its own claims back at once instead of waiting for them to run out.
    assessment_claimed_by: Mapped[str | None] = mapped_column(String(256))
    assessment_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sla_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    picked_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_picked_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sla_breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sequence: Mapped[int] = mapped_column(BigInteger)


class AccountSequence(Base):
    """The last sequence handed out per account.

    Incremented with ``UPDATE ... RETURNING`` inside the writing transaction: the row lock
    serializes writers of one account, so sequences commit in order with no gaps.
    """

    __tablename__ = "account_sequences"
    # The log check reads the accounts that moved since its last tick by this index.
    __table_args__ = (Index("ix_account_sequences_moved", "moved_at_ms"),)

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    # When the counter last moved, by the database's clock (ms since the epoch): the one
    # clock every replica shares. Set by the bump itself, inside the writing transaction.
    moved_at_ms: Mapped[int] = mapped_column(BigInteger, server_default="0")


class EventRecord(Base):
    """The transactional outbox: one row per change, written with the change itself."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_occurred", "occurred_at"),
        # GetHandoffHistory reads one handoff's events.
        Index("ix_events_handoff", "handoff_id", "sequence"),
    )

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    # NULL on an account event (about no handoff: a webhook endpoint marked failing).
    handoff_id: Mapped[str | None] = mapped_column(String(36))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # What the handoff state alone does not say (EventDetail: actor, note, comment,
    # previous holder); NULL for the kinds that need none.
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class HandoffHistoryRecord(Base):
    """Events pruned from the live log, kept per handoff for GetHandoffHistory.

    The live log (``events``) keeps a retention window for resuming streams; pruning moves
    rows here in the same transaction instead of dropping them, so a handoff's history
    is the union of both tables and the write path pays nothing for it.
    """

    __tablename__ = "handoff_history"
    __table_args__ = (Index("ix_handoff_history_handoff", "handoff_id", "sequence"),)

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    # NULL on an account event (about no handoff: a webhook endpoint marked failing).
    handoff_id: Mapped[str | None] = mapped_column(String(36))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AccountUserRecord(Base):
    """Users seen per account (from their verified tokens), so people can be named and
    chosen, e.g. as the new holder of a transfer."""

    __tablename__ = "account_users"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SlaTimerRecord(Base):
    """A pending SLA_WARNING or SLA_BREACHED; ``fired_at`` is set when it is claimed.

    Claiming and appending the event happen in one transaction, so each timer fires
    exactly once, whichever replica gets it and however often servers restart.
    """

    __tablename__ = "sla_timers"
    __table_args__ = (Index("ix_sla_timers_due", "fired_at", "due_at"),)

    handoff_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PresenceRecord(Base):
    """Who watches an account's queue now: one row per engineer and server process with an
    open queue stream, written when that changes. A row counts while its server's
    ``presence_replicas`` row is alive (a process that dies takes its rows with it once
    that expires). Not history: the event log never sees it."""

    __tablename__ = "presence"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    replica_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))

    __table_args__ = (Index("ix_presence_replica", "replica_id"),)


class PresenceReplicaRecord(Base):
    """A server process that mirrors presence, alive until ``expires_at``: the one row the
    process pushes forward on each presence tick, instead of one per watching engineer."""

    __tablename__ = "presence_replicas"

    replica_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookEndpointRecord(Base):
    """An account's webhook receiver, and its place in the account's event log.

    ``cursor_sequence`` is the last event turned into deliveries: the delivery worker
    reads the log after it, so the write path never knows about webhooks. The lease makes
    one replica at a time the endpoint's sender (deliveries go out one by one, in order).
    """

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_account", "account_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text, default="")
    format: Mapped[str] = mapped_column(String(16))
    secret: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean)
    failing: Mapped[bool] = mapped_column(Boolean, default=False)
    cursor_sequence: Mapped[int] = mapped_column(BigInteger)
    lease_owner: Mapped[str | None] = mapped_column(String(256))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDeliveryRecord(Base):
    """One event for one endpoint: its body, frozen when made, and its attempts so far.

    The body is kept here (not re-read from the log) so retention pruning never takes a
    pending delivery's content away; the id is the ``webhook-id`` of every attempt.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "sequence", name="uq_webhook_deliveries_event"),
        Index("ix_webhook_deliveries_next", "endpoint_id", "status", "sequence"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(String(36))
    account_id: Mapped[str] = mapped_column(String(128))
    sequence: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_response_code: Mapped[int | None] = mapped_column(Integer)
    last_latency_ms: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the current run of retries began: past it plus the retry window, give up.
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EscalationPolicyRecord(Base):
    """An account's breach policy; accounts without a row use the server's defaults."""

    __tablename__ = "escalation_policies"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    raise_priority: Mapped[bool] = mapped_column(Boolean)
    renotify_seconds: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


# The Core tables, for statements that need no ORM identity tracking (the write path).
HANDOFFS = cast(Table, HandoffRecord.__table__)
SLA_TIMERS = cast(Table, SlaTimerRecord.__table__)
EVENTS = cast(Table, EventRecord.__table__)
HISTORY = cast(Table, HandoffHistoryRecord.__table__)
ACCOUNT_USERS = cast(Table, AccountUserRecord.__table__)
PRESENCE = cast(Table, PresenceRecord.__table__)
PRESENCE_REPLICAS = cast(Table, PresenceReplicaRecord.__table__)
