"""Webhooks: signed, ordered, at-least-once deliveries from the log, to safe addresses only.

The receiver is a local plain-HTTP server on loopback (the server under test allows
http and 127.0.0.0/8 for it); nothing here connects anywhere else.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from resolutionflow.v1 import handoff_pb2, webhook_pb2, webhook_pb2_grpc
from sqlalchemy import select, update

from clients import AsyncClient, PermissionDenied
from clients import Client as SyncClient
from server.db.schema import (
    EscalationPolicyRecord,
    SlaTimerRecord,
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
)
from server.domain.types import EventType, Role, WebhookEndpointRef
from server.models import events
from server.runtime import ServerRuntime
from server.settings import Settings
from server.webhooks import store
from server.webhooks.safety import Policy, Refused
from server.webhooks.worker import ENDPOINTS_FAILING, Outcome, WebhookWorker
from tests.conftest import TEST_WEBHOOKS
from tests.processes import free_port
from tests.support import Client, stream_escalations, token, wait_until, watch_handoffs
from tests.webhook_receiver import Receiver

pb = webhook_pb2

FAST = TEST_WEBHOOKS


@pytest.fixture
def as_role(channel: grpc.aio.Channel, account: str) -> Callable[[Role], Client]:
    def make(role: Role) -> Client:
        user = f"{role.value}-1"
        return Client(channel, token(account, user, role, name=user), account, user)

    return make


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


def hooks(client: Client) -> webhook_pb2_grpc.WebhookServiceStub:
    return webhook_pb2_grpc.WebhookServiceStub(client.channel)


async def call(client: Client, rpc: str, request: object) -> Any:
    return await getattr(hooks(client), rpc)(request, metadata=client.metadata, timeout=30)


async def subscribe(admin: Client, receiver: Receiver, **fields: Any) -> pb.WebhookEndpoint:
    reply = await call(
        admin, "CreateWebhookEndpoint", pb.CreateWebhookEndpointRequest(url=receiver.url, **fields)
    )
    assert isinstance(reply, pb.CreateWebhookEndpointResponse)
    receiver.secret = reply.secret
    return reply.endpoint


async def deliveries(admin: Client, endpoint_id: str) -> list[pb.WebhookDelivery]:
    reply = await call(
        admin, "ListWebhookDeliveries", pb.ListWebhookDeliveriesRequest(endpoint_id=endpoint_id)
    )
    assert isinstance(reply, pb.ListWebhookDeliveriesResponse)
    return list(reply.deliveries)


async def create(tech: Client, n: int) -> list[handoff_pb2.Handoff]:
    return [await tech.create(problem_summary=f"Printer {i} on fire") for i in range(n)]


async def test_admins_manage_endpoints_and_see_the_secret_once(
    as_role: Callable[[Role], Client], receiver: Receiver
) -> None:
    admin, engineer = as_role(Role.ADMIN), as_role(Role.ENGINEER)
    reply = await call(
        admin,
        "CreateWebhookEndpoint",
        pb.CreateWebhookEndpointRequest(
            url=receiver.url,
            event_types=["escalation.created", "escalation.breached"],
            description="on-call",
            format=pb.WEBHOOK_FORMAT_SLACK,
        ),
    )
    assert reply.secret.startswith("whsec_")
    endpoint = reply.endpoint
    assert endpoint.state == pb.WEBHOOK_ENDPOINT_STATE_ACTIVE
    listed = await call(admin, "ListWebhookEndpoints", pb.ListWebhookEndpointsRequest())
    assert [e.id for e in listed.endpoints] == [endpoint.id]
    assert reply.secret not in str(listed)

    updated = await call(
        admin,
        "UpdateWebhookEndpoint",
        pb.UpdateWebhookEndpointRequest(endpoint_id=endpoint.id, enabled=False, description="x"),
    )
    assert updated.endpoint.state == pb.WEBHOOK_ENDPOINT_STATE_DISABLED
    assert updated.endpoint.description == "x"
    assert list(updated.endpoint.event_types) == ["escalation.breached", "escalation.created"]
    rotated = await call(
        admin, "RotateWebhookSecret", pb.RotateWebhookSecretRequest(endpoint_id=endpoint.id)
    )
    assert rotated.secret.startswith("whsec_") and rotated.secret != reply.secret

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(engineer, "ListWebhookEndpoints", pb.ListWebhookEndpointsRequest())
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await call(
            admin,
            "CreateWebhookEndpoint",
            pb.CreateWebhookEndpointRequest(url=receiver.url, event_types=["nope"]),
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    await call(
        admin, "DeleteWebhookEndpoint", pb.DeleteWebhookEndpointRequest(endpoint_id=endpoint.id)
    )
    listed = await call(admin, "ListWebhookEndpoints", pb.ListWebhookEndpointsRequest())
    assert list(listed.endpoints) == []
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await call(
            admin, "DeleteWebhookEndpoint", pb.DeleteWebhookEndpointRequest(endpoint_id=endpoint.id)
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_events_arrive_signed_and_in_order(
    as_role: Callable[[Role], Client], receiver: Receiver
) -> None:
    admin, tech = as_role(Role.ADMIN), as_role(Role.TECHNICIAN)
    endpoint = await subscribe(admin, receiver)
    made = await create(tech, 5)
    await receiver.wait_for(lambda r: len(r.received) >= 5)
    assert receiver.failures == []
    assert receiver.sequences() == sorted(receiver.sequences())
    first = receiver.received[0].verified
    assert first["type"] == "escalation.created"
    assert first["data"]["handoff"]["id"] == made[0].id
    assert first["data"]["url"].endswith(made[0].id)
    assert len({r.id for r in receiver.received}) == 5

    async def all_succeeded() -> bool:
        listed = await deliveries(admin, endpoint.id)
        return len(listed) >= 5 and all(
            d.status == pb.WEBHOOK_DELIVERY_STATUS_SUCCEEDED for d in listed
        )

    await wait_until(all_succeeded, what="deliveries recorded")
    listed = await deliveries(admin, endpoint.id)
    assert {d.id for d in listed} == {r.id for r in receiver.received}
    assert all(d.attempts == 1 and d.last_response_code == 204 for d in listed)


async def test_slack_format_is_a_text_with_a_link(
    as_role: Callable[[Role], Client], receiver: Receiver
) -> None:
    admin, tech = as_role(Role.ADMIN), as_role(Role.TECHNICIAN)
    await subscribe(admin, receiver, format=pb.WEBHOOK_FORMAT_SLACK)
    made = await tech.create(priority=handoff_pb2.PRIORITY_URGENT, problem_summary="<b>VPN</b>")
    await receiver.wait_for(lambda r: len(r.received) >= 1)
    text = receiver.received[0].verified["text"]
    assert text.startswith("[URGENT] escalation created: &lt;b&gt;VPN")
    assert f"#handoff={made.id}|Open>" in text


async def test_receiver_down_then_back_gets_everything_in_order(
    as_role: Callable[[Role], Client], receiver: Receiver
) -> None:
    admin, tech = as_role(Role.ADMIN), as_role(Role.TECHNICIAN)
    endpoint = await subscribe(admin, receiver)
    await receiver.stop()
    await create(tech, 6)

    async def retried() -> bool:
        listed = await deliveries(admin, endpoint.id)
        return any(d.attempts >= 2 for d in listed)

    await wait_until(retried, what="a failed delivery retried")
    listed = await deliveries(admin, endpoint.id)
    assert all(d.status == pb.WEBHOOK_DELIVERY_STATUS_PENDING for d in listed)
    assert any(d.last_error and d.next_attempt_at.seconds for d in listed)
    await receiver.start()
    await receiver.wait_for(lambda r: len({x.sequence for x in r.received}) >= 6)
    # At-least-once: a repeat carries the same id; none is missing and the order holds.
    unique = list(dict.fromkeys(receiver.sequences()))
    assert unique == sorted(unique) and len(unique) == 6
    assert receiver.failures == []


async def test_a_receiver_that_never_answers_does_not_slow_the_others(
    as_role: Callable[[Role], Client], receiver: Receiver
) -> None:
    admin, tech = as_role(Role.ADMIN), as_role(Role.TECHNICIAN)
    stuck = await Receiver(mode="hang").start()
    try:
        await subscribe(admin, stuck)
        await subscribe(admin, receiver)
        started = time.monotonic()
        await create(tech, 3)
        created = time.monotonic() - started
        await stuck.wait_for(lambda r: r.hanging >= 1)
        await receiver.wait_for(lambda r: len(r.received) >= 3, timeout=15)
        took = time.monotonic() - started
        # The stuck receiver holds its attempt for the full 5 s bound; the other endpoint
        # got all three before that, and creating never waited for either.
        assert took < FAST["webhook_timeout_seconds"], took
        assert created < 2, created
    finally:
        await stuck.stop()


async def test_a_redirect_is_not_followed(
    as_role: Callable[[Role], Client], receiver: Receiver
) -> None:
    admin, tech = as_role(Role.ADMIN), as_role(Role.TECHNICIAN)
    receiver.mode = "redirect"
    endpoint = await subscribe(admin, receiver, event_types=["escalation.created"])
    await create(tech, 1)

    async def attempted() -> bool:
        listed = await deliveries(admin, endpoint.id)
        return bool(listed) and listed[0].attempts >= 1

    await wait_until(attempted, what="an attempt")
    (delivery,) = await deliveries(admin, endpoint.id)
    assert delivery.status == pb.WEBHOOK_DELIVERY_STATUS_PENDING
    assert delivery.last_response_code == 302
    assert "redirect" in delivery.last_error

    # Redelivery after the receiver is fixed: the same id.
    receiver.mode = "ok"
    await receiver.wait_for(lambda r: len(r.received) >= 2)
    assert len({r.id for r in receiver.received}) == 1
    redone = await call(
        admin,
        "RedeliverWebhook",
        pb.RedeliverWebhookRequest(endpoint_id=endpoint.id, delivery_id=delivery.id),
    )
    assert redone.delivery.id == delivery.id
    await receiver.wait_for(lambda r: len(r.received) >= 3)
    assert {r.id for r in receiver.received} == {delivery.id}


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/hooks",
        "https://[::1]/hooks",
        "https://192.168.1.10/hooks",
        "ftp://example.com/hooks",
        "https://user:pw@example.com/hooks",
    ],
)
async def test_unsafe_urls_are_refused_when_saved(
    as_role: Callable[[Role], Client], url: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(
            as_role(Role.ADMIN), "CreateWebhookEndpoint", pb.CreateWebhookEndpointRequest(url=url)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_default_policy_refuses_loopback_http_and_names_that_resolve_to_it() -> None:
    policy = Policy.parse(False, "")
    for url in ("http://127.0.0.1/", "https://127.0.0.1/", "https://10.1.2.3/"):
        with pytest.raises(Refused):
            policy.check_url(url)
    with pytest.raises(Refused, match="loopback"):
        await policy.resolve("https://localhost/hooks")
    assert Policy.parse(True, "127.0.0.0/8").check_url("http://127.0.0.1:9/x")[1] == "127.0.0.1"


async def test_an_attempt_to_a_name_resolving_to_loopback_never_connects(
    settings: Settings, receiver: Receiver
) -> None:
    """Checked on the resolved address, before any connection: the receiver sees none."""
    defaults = Settings(database_url=settings.database_url)
    worker = WebhookWorker(None, defaults, lambda: datetime.now(UTC))  # type: ignore[arg-type]
    try:
        endpoint = WebhookEndpointRecord(
            id="e", url=f"https://localhost:{receiver.port}/hooks", secret="whsec_" + "A" * 32
        )
        endpoint.format = "STANDARD"
        delivery = WebhookDeliveryRecord(id=f"msg_{uuid.uuid4().hex}", payload={"type": "x"})
        outcome = await worker.attempt(endpoint, delivery)
    finally:
        await worker._http.aclose()
    assert not outcome.ok
    assert "refused" in outcome.error and "loopback" in outcome.error
    assert receiver.connections == 0


async def test_deliveries_survive_a_restart(
    settings: Settings, receiver: Receiver, account: str
) -> None:
    """The cursor and the deliveries are in the database: a new server carries on."""
    runtime = ServerRuntime(settings)
    await runtime.start("127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
        admin = Client(ch, token(account, "a", Role.ADMIN), account, "a")
        tech = Client(ch, token(account, "t", Role.TECHNICIAN), account, "t")
        await subscribe(admin, receiver)
        await receiver.stop()
        await create(tech, 3)
    await runtime.stop(0)
    await receiver.start()
    again = ServerRuntime(settings)
    await again.start("127.0.0.1:0")
    try:
        await receiver.wait_for(lambda r: len({x.sequence for x in r.received}) >= 3)
        assert receiver.failures == []
    finally:
        await again.stop(0)


def test_backoff_grows_with_jitter(settings: Settings) -> None:
    worker_settings = settings.model_copy(
        update={"webhook_first_retry_seconds": 1, "webhook_max_retry_seconds": 8}
    )
    worker = WebhookWorker.__new__(WebhookWorker)
    worker.settings = worker_settings
    delays = [worker.backoff(n) for n in range(1, 8)]
    assert 0.5 <= delays[0] <= 1 and 1 <= delays[1] <= 2 and 2 <= delays[2] <= 4
    assert all(4 <= d <= 8 for d in delays[3:])


async def test_the_python_clients_manage_webhooks(
    server: ServerRuntime, account: str, receiver: Receiver
) -> None:
    target = f"127.0.0.1:{server.port}"
    async with (
        AsyncClient(target, token=token(account, "a", Role.ADMIN)) as admin,
        AsyncClient(target, token=token(account, "t", Role.TECHNICIAN)) as tech,
    ):
        made = await admin.create_webhook_endpoint(
            receiver.url, event_types=["escalation.created"], description="ops"
        )
        receiver.secret = made.secret
        endpoint = made.endpoint
        assert [e.id for e in await admin.list_webhook_endpoints()] == [endpoint.id]
        await tech.create_handoff("Mail is down", session_id="s")
        await receiver.wait_for(lambda r: len(r.received) >= 1)

        async def delivered() -> bool:
            listed = await admin.list_webhook_deliveries(endpoint.id, status="succeeded")
            return len(listed) == 1

        await wait_until(delivered, what="delivery recorded")
        (delivery,) = await admin.list_webhook_deliveries(endpoint.id)
        assert (await admin.redeliver_webhook(endpoint.id, delivery.id)).id == delivery.id
        updated = await admin.update_webhook_endpoint(endpoint.id, enabled=False, format="slack")
        assert updated.format == pb.WEBHOOK_FORMAT_SLACK and not updated.enabled
        receiver.secret = await admin.rotate_webhook_secret(endpoint.id)
        with pytest.raises(PermissionDenied):
            await tech.list_webhook_endpoints()

    def script() -> list[str]:
        with SyncClient(target, token=token(account, "a", Role.ADMIN)) as sync_admin:
            ids = [e.id for e in sync_admin.list_webhook_endpoints()]
            sync_admin.delete_webhook_endpoint(endpoint.id)
            return ids + [e.id for e in sync_admin.list_webhook_endpoints()]

    assert await asyncio.to_thread(script) == [endpoint.id]


async def test_the_readme_receiver_verifies_and_prints_each_event(
    server: ServerRuntime, channel: grpc.aio.Channel, account: str, repo_root: Path
) -> None:
    text = (repo_root / "README.md").read_text()
    section = text[text.index("## Webhooks\n") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match
    port = free_port()
    async with AsyncClient(
        f"127.0.0.1:{server.port}", token=token(account, "a", Role.ADMIN)
    ) as admin:
        made = await admin.create_webhook_endpoint(
            f"http://127.0.0.1:{port}/", event_types=["escalation.created"]
        )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        match.group(1),
        env={**os.environ, "WEBHOOK_SECRET": made.secret, "PORT": str(port)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        tech = Client(channel, token(account, "t", Role.TECHNICIAN), account, "t")
        handoff = await tech.create()
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        webhook_id, event_type, handoff_id = line.decode().split()
        assert webhook_id.startswith("msg_")
        assert (event_type, handoff_id) == ("escalation.created", handoff.id)
    finally:
        process.kill()
        await process.wait()


async def test_past_the_retry_window_the_endpoint_is_marked_failing_until_enabled(
    as_role: Callable[[Role], Client], receiver: Receiver, server: ServerRuntime
) -> None:
    admin, tech = as_role(Role.ADMIN), as_role(Role.TECHNICIAN)
    receiver.mode = "error"
    endpoint = await subscribe(admin, receiver, event_types=["escalation.created"])
    await create(tech, 1)

    async def failed_once() -> bool:
        listed = await deliveries(admin, endpoint.id)
        return bool(listed) and listed[0].attempts >= 1

    await wait_until(failed_once, what="a failed attempt")
    # The outcome of one more failed attempt, recorded by a worker whose window is over.
    short = WebhookWorker(
        server.db,
        server.settings.model_copy(update={"webhook_retry_window_seconds": 0.001}),
        lambda: datetime.now(UTC) + timedelta(seconds=1),
    )
    await short._http.aclose()
    async with server.db.read() as s:
        record = await s.get(WebhookEndpointRecord, endpoint.id)
        (delivery,) = (
            await s.scalars(
                select(WebhookDeliveryRecord).where(
                    WebhookDeliveryRecord.endpoint_id == endpoint.id
                )
            )
        ).all()
    assert record is not None
    before = ENDPOINTS_FAILING._value.get()
    await short._record(record, delivery, Outcome(False, 500, 3, "HTTP 500"))
    assert ENDPOINTS_FAILING._value.get() == before + 1
    # Told once, as an account event in the log, with the attempt's error.
    async with server.db.read() as s:
        logged = await events.read_after(s, record.account_id, 0)
    (told,) = [e for e in logged if e.type is EventType.WEBHOOK_FAILING]
    assert told.handoff is None and told.detail is not None
    assert told.detail.webhook_endpoint == WebhookEndpointRef(
        endpoint.id, "127.0.0.1", "", "HTTP 500"
    )

    (listed,) = await deliveries(admin, endpoint.id)
    assert listed.status == pb.WEBHOOK_DELIVERY_STATUS_FAILED
    assert listed.last_response_code == 500
    (state,) = (
        await call(admin, "ListWebhookEndpoints", pb.ListWebhookEndpointsRequest())
    ).endpoints
    assert state.state == pb.WEBHOOK_ENDPOINT_STATE_FAILING

    # Paused: nothing more is sent until an admin acts; enabling carries on from there.
    receiver.mode = "ok"
    await call(
        admin,
        "UpdateWebhookEndpoint",
        pb.UpdateWebhookEndpointRequest(endpoint_id=endpoint.id, enabled=True),
    )
    after = await tech.create(problem_summary="after the pause")
    await receiver.wait_for(
        lambda r: any(x.verified["data"]["handoff"]["id"] == after.id for x in r.received)
    )
    await call(
        admin,
        "RedeliverWebhook",
        pb.RedeliverWebhookRequest(endpoint_id=endpoint.id, delivery_id=delivery.id),
    )
    await receiver.wait_for(lambda r: any(x.id == delivery.id for x in r.received))


@pytest.mark.parametrize(
    "fields",
    [
        {"url": "https://example.com/\x00hook"},
        {"url": "https://exa\nmple.com/"},
        {"url": "https://example.com/", "description": "bell\x07"},
        {"url": "https://example.com/", "description": "x" * 501},
        {"url": "https://" + "a" * 2048 + ".com/"},
        {"url": "https://[::1"},
        {"url": ""},
    ],
)
async def test_bad_endpoint_fields_are_invalid_argument(
    as_role: Callable[[Role], Client], fields: dict[str, str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(
            as_role(Role.ADMIN),
            "CreateWebhookEndpoint",
            pb.CreateWebhookEndpointRequest(**fields),
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_endpoint_marked_failing_is_an_event_once_on_the_stream_and_to_the_others(
    as_role: Callable[[Role], Client], receiver: Receiver, server: ServerRuntime
) -> None:
    """WEBHOOK_FAILING: on the staff's streams (not a technician's), delivered to the
    account's healthy endpoints subscribed to ``webhook.failing`` (not to the failing one),
    and written once however many markers race (the mark is a conditional update)."""
    admin, tech, eng = as_role(Role.ADMIN), as_role(Role.TECHNICIAN), as_role(Role.ENGINEER)
    healthy = await Receiver().start()
    try:
        broken = await subscribe(
            admin, receiver, event_types=["escalation.created"], description="Ops pager"
        )
        await subscribe(admin, healthy, event_types=["webhook.failing"])
        queue, mine = stream_escalations(eng), watch_handoffs(tech)
        for r in (queue, mine):
            await r.wait_for(lambda r: bool(r.events))
        async with server.db.read() as s:
            record = await s.get(WebhookEndpointRecord, broken.id)
        assert record is not None
        now = datetime.now(UTC)

        async def mark() -> bool:
            async with server.db.write() as s:
                return await store.mark_failing(s, record, "HTTP 503", now)

        marked = await asyncio.gather(mark(), mark(), mark())
        assert sorted(marked) == [False, False, True]
        marker = await tech.create(problem_summary="after the failure")
        for r in (queue, mine):
            await r.wait_for(lambda r: any(e.handoff.id == marker.id for e in r.events))
        queue.cancel()
        mine.cancel()

        (event,) = [e for e in queue.events if e.type == handoff_pb2.EVENT_TYPE_WEBHOOK_FAILING]
        assert not event.HasField("handoff")
        ref = event.webhook_endpoint
        assert (ref.id, ref.host, ref.description, ref.last_error) == (
            broken.id,
            "127.0.0.1",
            "Ops pager",
            "HTTP 503",
        )
        assert all(e.type != handoff_pb2.EVENT_TYPE_WEBHOOK_FAILING for e in mine.events)

        await healthy.wait_for(lambda r: bool(r.received))
        (told,) = healthy.received
        assert told.verified["type"] == "webhook.failing"
        assert told.verified["data"]["webhookEndpoint"]["id"] == broken.id
        assert told.sequence == event.sequence
        (state,) = [
            e
            for e in (
                await call(admin, "ListWebhookEndpoints", pb.ListWebhookEndpointsRequest())
            ).endpoints
            if e.id == broken.id
        ]
        assert state.state == pb.WEBHOOK_ENDPOINT_STATE_FAILING
        # Enabled again, the broken endpoint is not sent the news of its own failure.
        await call(
            admin,
            "UpdateWebhookEndpoint",
            pb.UpdateWebhookEndpointRequest(endpoint_id=broken.id, enabled=True),
        )
        receiver.mode = "ok"
        after = await tech.create(problem_summary="after re-enabling")
        await receiver.wait_for(
            lambda r: any(x.verified["data"]["handoff"]["id"] == after.id for x in r.received)
        )
        assert all(x.verified["type"] != "webhook.failing" for x in receiver.received)
    finally:
        await healthy.stop()


async def test_slack_text_of_an_account_event() -> None:
    body = {
        "type": "webhook.failing",
        "data": {
            "url": "https://rf.example/",
            "webhookEndpoint": {"host": "hooks.example", "description": "<ops>", "lastError": "x"},
        },
    }
    assert store.slack_text(body) == {
        "text": "Webhook endpoint hooks.example (&lt;ops&gt;) is failing and gets no events "
        "until an admin redelivers or re-enables it: x. <https://rf.example/|Open>"
    }


async def test_a_breach_and_the_raise_it_causes_are_two_webhook_events(
    as_role: Callable[[Role], Client], receiver: Receiver, server: ServerRuntime, account: str
) -> None:
    admin, tech = as_role(Role.ADMIN), as_role(Role.TECHNICIAN)
    async with server.db.write() as s:
        s.add(
            EscalationPolicyRecord(
                account_id=account,
                raise_priority=True,
                renotify_seconds=0,
                updated_at=datetime.now(UTC),
            )
        )
    await subscribe(
        admin, receiver, event_types=["escalation.breached", "escalation.priority_raised"]
    )
    late = await tech.create(priority=handoff_pb2.PRIORITY_HIGH)
    async with server.db.write() as s:
        await s.execute(
            update(SlaTimerRecord)
            .where(SlaTimerRecord.handoff_id == late.id, SlaTimerRecord.kind == "SLA_BREACHED")
            .values(due_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    await receiver.wait_for(lambda r: len(r.received) >= 2)
    breached, raised = receiver.received
    assert breached.verified["type"] == "escalation.breached"
    assert breached.verified["data"]["handoff"]["priority"] == "PRIORITY_HIGH"
    assert raised.verified["type"] == "escalation.priority_raised"
    assert raised.sequence == breached.sequence + 1
    assert raised.verified["data"]["handoff"]["priority"] == "PRIORITY_URGENT"
    assert raised.verified["data"]["note"].startswith("raised from HIGH to URGENT")
