"""The page's opt-in desktop alerts: URGENT arrivals and SLA breaches while the tab is hidden."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from resolutionflow.v1 import handoff_pb2 as pb
from sqlalchemy import update

from gateway.serve import RunningGateway
from server.db.schema import EscalationPolicyRecord, SlaTimerRecord
from server.domain.types import EventType, Role
from server.runtime import ServerRuntime
from server.webhooks import store
from tests import browser_support, gateway_support
from tests.browser_support import screenshot, wait_for_js
from tests.support import Client

pytest.importorskip("playwright.async_api")
from playwright.async_api import expect

gateway = gateway_support.gateway
browser = browser_support.browser
chromium = browser_support.chromium

# The browser's Notification, recorded: headless Chromium shows nothing, and what the page
# asked to show is what this test is about.
RECORD_NOTIFICATIONS = """() => {
    window.shownNotifications = [];
    class Recorded extends EventTarget {
        static permission = 'granted';
        static requestPermission() { return Promise.resolve('granted'); }
        constructor(title, options) {
            super();
            window.shownNotifications.push({title, body: options.body, tag: options.tag});
        }
        close() {}
    }
    window.Notification = Recorded;
}"""
VISIBILITY = """(state) => {
    Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => state});
    Object.defineProperty(document, 'hidden', {configurable: true, get: () => state === 'hidden'});
    document.dispatchEvent(new Event('visibilitychange'));
}"""


@pytest.fixture
async def engineer_page(browser: Any, gateway: RunningGateway, account: str) -> AsyncIterator[Any]:
    page = await browser_support.open_page(browser, gateway.url, account, "eng-1", Role.ENGINEER)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    await page.context.close()
    assert not errors


async def test_alerts_are_opt_in_and_only_for_urgent_arrivals_and_breaches_while_hidden(
    engineer_page: Any, technician: Client, server: ServerRuntime
) -> None:
    page = engineer_page
    await expect(page.locator("#conn-state")).to_have_attribute("data-state", "open")
    await page.evaluate(RECORD_NOTIFICATIONS)
    toggle = page.locator("#alerts")
    await expect(toggle).to_have_text("Alerts off")
    await page.evaluate(VISIBILITY, "hidden")

    before = await technician.create(priority=pb.PRIORITY_URGENT, problem_summary="Off: silent")
    await expect(page.locator(f'#queue .card[data-id="{before.id}"]')).to_be_attached()
    assert await page.evaluate("window.shownNotifications.length") == 0

    await toggle.click()
    await expect(toggle).to_have_text("Alerts on")
    await expect(toggle).to_have_attribute("aria-pressed", "true")
    await page.evaluate(VISIBILITY, "hidden")

    normal = await technician.create(problem_summary="Normal: no alert")
    urgent = await technician.create(priority=pb.PRIORITY_URGENT, problem_summary="Mail is down")
    for made in (normal, urgent):
        await expect(page.locator(f'#queue .card[data-id="{made.id}"]')).to_be_attached()
    await wait_for_js(page, "window.shownNotifications.length === 1")
    shown = await page.evaluate("window.shownNotifications[0]")
    assert shown["title"].startswith("URGENT escalation from")
    assert shown["body"] == "Mail is down" and shown["tag"] == f"rf-{urgent.id}"

    # The normal one's SLA runs out (its breach timer moved to now): a breach alerts too.
    async with server.db.write() as s:
        await s.execute(
            update(SlaTimerRecord)
            .where(SlaTimerRecord.handoff_id == normal.id)
            .values(due_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    await wait_for_js(page, "window.shownNotifications.length === 2")
    breach = await page.evaluate("window.shownNotifications[1]")
    assert breach["title"].startswith("SLA breached") and breach["tag"] == f"rf-{normal.id}"

    # In view, nothing pops up: the page itself shows it.
    await page.evaluate(VISIBILITY, "visible")
    seen = await technician.create(priority=pb.PRIORITY_URGENT, problem_summary="Seen")
    await expect(page.locator(f'#queue .card[data-id="{seen.id}"]')).to_be_attached()
    assert await page.evaluate("window.shownNotifications.length") == 2


async def test_a_raised_priority_and_a_failing_webhook_show_on_the_page(
    browser: Any,
    gateway: RunningGateway,
    account: str,
    engineer_page: Any,
    technician: Client,
    server: ServerRuntime,
) -> None:
    admin_page = await browser_support.open_page(
        browser, gateway.url, account, "admin-1", Role.ADMIN
    )
    errors: list[str] = []
    admin_page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        for page in (admin_page, engineer_page):
            await expect(page.locator("#conn-state")).to_have_attribute("data-state", "open")
        async with server.db.write() as s:
            s.add(
                EscalationPolicyRecord(
                    account_id=account,
                    raise_priority=True,
                    renotify_seconds=0,
                    updated_at=datetime.now(UTC),
                )
            )
        late = await technician.create(problem_summary="Nobody looked at this")
        card = admin_page.locator(f'#queue .card[data-id="{late.id}"]')
        await expect(card).to_have_attribute("data-priority", "normal")
        async with server.db.write() as s:
            await s.execute(
                update(SlaTimerRecord)
                .where(
                    SlaTimerRecord.handoff_id == late.id,
                    SlaTimerRecord.kind == EventType.SLA_BREACHED.value,
                )
                .values(due_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        await expect(card).to_have_attribute("data-priority", "high")
        await expect(card.locator(".badge.priority")).to_have_text("High")

        # An endpoint of the account marked failing: an alert for admins only.
        async with server.db.write() as s:
            endpoint, _secret = await store.create_endpoint(
                s,
                account,
                url="https://hooks.example/ops",
                event_types=[],
                description="Ops channel",
                format=store.STANDARD,
                now=datetime.now(UTC),
            )
            # Not sent anything: it is failing from the start (the test never connects out).
            endpoint.enabled = False
        async with server.db.write() as s:
            assert await store.mark_failing(s, endpoint, "HTTP 503", datetime.now(UTC))
        banner = admin_page.locator("#banner-webhook")
        await expect(banner).to_be_visible()
        await expect(banner).to_contain_text("Webhook hooks.example (Ops channel) is failing")
        await expect(banner).to_contain_text("HTTP 503")
        await screenshot(admin_page, "web-webhook-failing.png")
        await admin_page.set_viewport_size({"width": 390, "height": 844})
        await screenshot(admin_page, "web-webhook-failing-390.png")
        marker = await technician.create(problem_summary="after the failure")
        await expect(engineer_page.locator(f'#queue .card[data-id="{marker.id}"]')).to_be_attached()
        await expect(engineer_page.locator("#banner-webhook")).to_be_hidden()
        await admin_page.locator("#banner-webhook-dismiss").click()
        await expect(banner).to_be_hidden()
    finally:
        await admin_page.context.close()
    assert not errors
