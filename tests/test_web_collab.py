"""The page's collaboration features in a real browser: transfer, live comments on both
sides, the activity timeline, and reopen from the technician's view."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from resolutionflow.v1 import escalation_pb2 as esc
from resolutionflow.v1 import handoff_pb2 as pb

from gateway.serve import RunningGateway
from server.domain.types import Role
from tests import browser_support, gateway_support
from tests.browser_support import assert_accessible, card, screenshot
from tests.support import Client

pytest.importorskip("playwright.async_api")
from playwright.async_api import expect

gateway = gateway_support.gateway
browser = browser_support.browser
chromium = browser_support.chromium


@pytest.fixture
async def pages(browser: Any, gateway: RunningGateway) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Any] = []
    errors: list[str] = []

    async def make(account: str, user: str, role: Role | str, name: str = "") -> Any:
        page = await browser_support.open_page(browser, gateway.url, account, user, role, name)
        page.on("pageerror", lambda error: errors.append(f"{user}: {error}"))
        opened.append(page)
        await expect(page.locator("#conn-state")).to_have_attribute("data-state", "open")
        return page

    yield make
    for page in opened:
        await page.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


async def test_transfer_comments_and_reopen_across_three_pages(
    pages: Callable[..., Any], account: str, technician: Client
) -> None:
    sam = await pages(account, "sam", Role.ENGINEER, "Sam Vpn")  # known from its stream
    eng = await pages(account, "eng-1", Role.ENGINEER, "Erin Engineer")
    tech = await pages(account, "tech-1", Role.TECHNICIAN, "Tina Tech")
    h = await technician.create(problem_summary="VPN drops every ten minutes")
    # Who is watching: the technician sees how many, the engineers who.
    await expect(tech.locator("#presence-count")).to_have_text("2 engineers online")
    await expect(eng.locator("#m-online")).to_have_text("Erin Engineer, Sam Vpn")

    # Erin picks it up and hands it to Sam, who is chosen from the account's engineers.
    await card(eng, h.id).get_by_role("button", name="Pick up").click()
    await expect(eng.locator("#context")).to_be_visible()
    await expect(eng.locator("#ctx-timeline .event")).to_have_count(3)  # created, ready, picked
    await expect(eng.locator("#transfer-to option", has_text="Sam Vpn")).to_have_count(1)
    await eng.select_option("#transfer-to", "sam")
    await eng.fill("#transfer-note", "You know the VPN concentrator")
    await eng.click("#transfer")
    await expect(eng.locator("#engineer")).to_be_visible()

    # Sam lands on its context screen, with the transfer in the timeline.
    await expect(sam.locator("#context")).to_be_visible()
    await expect(sam.locator("#context-title")).to_have_text("VPN drops every ten minutes")
    transferred = sam.locator('#ctx-timeline .event[data-type="transferred"]')
    await expect(transferred).to_contain_text(
        "Erin Engineer transferred it to Sam Vpn: You know the VPN concentrator"
    )
    await expect(sam.locator("#working-list .card")).to_have_count(1)

    # A comment appears live on the technician's card, and the reply on Sam's screen.
    mine = tech.locator(f'#mine .card[data-id="{h.id}"]')
    await expect(mine.locator(".status")).to_have_text("Picked up by Sam Vpn")
    await mine.get_by_role("button", name="Activity and comments").click()
    await expect(mine.locator(".timeline .event")).to_have_count(4)
    await sam.fill("#comment-body", "Which client version?\nAnd since when?")
    await sam.click("#comment-send")
    asked = mine.locator('.timeline .event[data-type="commented"]')
    await expect(asked).to_contain_text("Sam Vpn: Which client version?")
    await mine.locator(".comment-body").fill("5.2, since Monday")
    await mine.get_by_role("button", name="Add comment").click()
    answer = sam.locator('#ctx-timeline .event[data-type="commented"]')
    await expect(answer).to_have_count(2)
    await expect(answer.nth(1)).to_contain_text("Tina Tech: 5.2, since Monday")
    await assert_accessible(sam, "context with activity")
    await screenshot(sam, "web-context-activity.png")

    # Sam resolves; Tina reopens it with a reason, and it is back in every queue.
    await sam.fill("#resolution-note", "Updated the client to 5.4")
    await sam.click("#resolve")
    await expect(mine.locator(".status")).to_have_text("Resolved: Updated the client to 5.4")
    await mine.locator(".reopen-reason").fill("Dropped again this morning")
    await mine.get_by_role("button", name="Reopen").click()
    await expect(mine.locator(".status")).to_have_text("Waiting for an engineer")
    await expect(mine.locator('.timeline .event[data-type="reopened"]')).to_contain_text(
        "Reopened by Tina Tech: Dropped again this morning"
    )
    for page in (eng, sam):
        await expect(card(page, h.id)).to_be_visible()
    await assert_accessible(tech, "technician with activity")


async def test_the_context_screen_shows_what_fixed_it_last_time(
    pages: Callable[..., Any], account: str, technician: Client, engineer: Client
) -> None:
    before = await technician.create(
        problem_summary="Outlook asks for the password", steps_tried=[]
    )
    await engineer.call(
        "escalations", "PickUpEscalation", esc.PickUpEscalationRequest(handoff_id=before.id)
    )
    await engineer.call(
        "escalations",
        "ResolveEscalation",
        esc.ResolveEscalationRequest(handoff_id=before.id, resolution_note="Cleared the vault"),
    )
    eng = await pages(account, "eng-1", Role.ENGINEER, "Erin Engineer")
    now = await technician.create(problem_summary="Outlook password prompt loops", steps_tried=[])
    await card(eng, now.id).get_by_role("button", name="Pick up").click()
    similar = eng.locator("#ctx-similar")
    await expect(similar).to_be_visible()
    await expect(similar.locator("li")).to_have_count(1)
    await expect(similar).to_contain_text("Outlook asks for the password")
    await expect(similar).to_contain_text("Erin Engineer: Cleared the vault")


async def test_reopen_refusal_and_blank_comment_are_explained(
    pages: Callable[..., Any], account: str, technician: Client, engineer: Client
) -> None:
    tech = await pages(account, "tech-1", Role.TECHNICIAN, "Tina Tech")
    h = await technician.create(problem_summary="Printer jams")
    mine = tech.locator(f'#mine .card[data-id="{h.id}"]')
    await mine.get_by_role("button", name="Activity and comments").click()
    await mine.get_by_role("button", name="Add comment").click()
    await expect(mine.locator(".error")).to_have_text("Write the comment first.")
    await expect(mine.get_by_role("button", name=re.compile("^Reopen"))).to_have_count(0)
    # A live comment while the technician types: the draft and the cursor stay.
    await mine.locator(".comment-body").fill("half a thought")
    await engineer.call(
        "handoffs", "AddComment", pb.AddCommentRequest(handoff_id=h.id, body="Any news?")
    )
    await expect(mine.locator('.timeline .event[data-type="commented"]')).to_have_count(1)
    await expect(mine.locator(".comment-body")).to_have_value("half a thought")
    await expect(mine.locator(".comment-body")).to_be_focused()
