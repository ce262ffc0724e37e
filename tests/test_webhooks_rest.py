"""Webhooks and the breach policy over REST: the routes their google.api.http options give."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from server.domain.types import Role
from tests import gateway_support
from tests.gateway_support import bearer
from tests.support import wait_until
from tests.webhook_receiver import Receiver

gateway = gateway_support.gateway
http = gateway_support.http


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_admins_manage_webhooks_over_rest(
    http: httpx.AsyncClient, account: str, receiver: Receiver
) -> None:
    admin, tech = bearer(account, Role.ADMIN), bearer(account, Role.TECHNICIAN)
    made = await http.post(
        "/v1/webhooks",
        headers=admin,
        json={"url": receiver.url, "eventTypes": ["escalation.created"], "format": "SLACK"},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    receiver.secret = body["secret"]
    Webhook(body["secret"])  # a valid Standard Webhooks secret
    endpoint = body["endpoint"]
    assert endpoint["format"] == "WEBHOOK_FORMAT_SLACK"
    assert endpoint["state"] == "WEBHOOK_ENDPOINT_STATE_ACTIVE"

    listed = await http.get("/v1/webhooks", headers=admin)
    assert [e["id"] for e in listed.json()["endpoints"]] == [endpoint["id"]]
    assert body["secret"] not in listed.text

    created = await http.post(
        "/v1/handoffs",
        headers=tech,
        json={"sessionId": "s", "intent": "HANDOFF_INTENT_ESCALATE", "problemSummary": "VPN"},
    )
    assert created.status_code == 201, created.text
    await receiver.wait_for(lambda r: len(r.received) >= 1)
    assert receiver.received[0].verified["text"].startswith("[NORMAL] escalation created: VPN")

    async def delivered() -> bool:
        got = await http.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=admin)
        items = got.json().get("deliveries", [])
        return bool(items) and items[0]["status"] == "WEBHOOK_DELIVERY_STATUS_SUCCEEDED"

    await wait_until(delivered, what="delivery recorded")
    (delivery,) = (
        await http.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=admin)
    ).json()["deliveries"]
    assert delivery["lastResponseCode"] == 204 and delivery["attempts"] == 1
    again = await http.post(
        f"/v1/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/redeliver",
        headers=admin,
    )
    assert again.status_code == 200 and again.json()["delivery"]["id"] == delivery["id"]
    await receiver.wait_for(lambda r: len(r.received) >= 2)
    assert {r.id for r in receiver.received} == {delivery["id"]}

    patched = await http.patch(
        f"/v1/webhooks/{endpoint['id']}", headers=admin, json={"enabled": False}
    )
    assert patched.json()["endpoint"]["state"] == "WEBHOOK_ENDPOINT_STATE_DISABLED"
    rotated = await http.post(
        f"/v1/webhooks/{endpoint['id']}/rotate-secret", headers=admin, json={}
    )
    assert rotated.json()["secret"].startswith("whsec_")

    forbidden = await http.get("/v1/webhooks", headers=bearer(account, Role.ENGINEER))
    assert forbidden.status_code == 403
    unsafe = await http.post(
        "/v1/webhooks", headers=admin, json={"url": "https://169.254.169.254/latest"}
    )
    assert unsafe.status_code == 400 and "url" in unsafe.text

    gone = await http.delete(f"/v1/webhooks/{endpoint['id']}", headers=admin)
    assert gone.status_code == 200
    assert (await http.delete(f"/v1/webhooks/{endpoint['id']}", headers=admin)).status_code == 404


async def test_the_breach_policy_over_rest(http: httpx.AsyncClient, account: str) -> None:
    admin = bearer(account, Role.ADMIN)
    got = await http.get("/v1/escalation-policy", headers=admin)
    assert got.status_code == 200, got.text
    assert got.json()["policy"]["renotifySeconds"] == 900
    changed = await http.patch(
        "/v1/escalation-policy", headers=admin, json={"raisePriority": True, "renotifySeconds": 60}
    )
    assert changed.json()["policy"] == {"raisePriority": True, "renotifySeconds": 60}
    assert (
        await http.get("/v1/escalation-policy", headers=bearer(account, "engineer"))
    ).status_code == 403
