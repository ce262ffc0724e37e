"""The web page in a real browser (Debian's Chromium) against the real gateway and server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import pytest
from resolutionflow.v1 import escalation_pb2 as esc
from resolutionflow.v1 import handoff_pb2 as pb

from gateway.serve import RunningGateway, start_gateway
from gateway.settings import GatewaySettings
from server.auth import LocalSignIn, TokenCodec
from server.domain.types import Role
from server.runtime import ServerRuntime
from server.settings import Settings
from tests import browser_support, gateway_support
from tests.browser_support import (
    assert_accessible,
    assert_no_horizontal_scroll,
    assert_tap_targets,
    card,
    screenshot,
    wait_for_js,
)
from tests.fake_openai import Reply, answer, fake_openai
from tests.support import JWT_SECRET, Client, settled, token
from tests.test_assessment import openai_settings

pytest.importorskip("playwright.async_api")
from playwright.async_api import expect

LIVE = "open"  # data-state of the connection badge while the stream is up


@pytest.fixture
async def pages(browser: Any, gateway: RunningGateway) -> AsyncIterator[Callable[..., Any]]:
    """``await pages(account, user, role, name=..., url=..., reduced_motion=...)``."""
    opened: list[Any] = []
    errors: list[str] = []

    async def make(account: str, user: str, role: Role | str, name: str = "", **kw: Any) -> Any:
        url = kw.pop("url", gateway.url)
        page = await browser_support.open_page(browser, url, account, user, role, name, **kw)
        page.on("pageerror", lambda error: errors.append(f"{user}: {error}"))
        opened.append(page)
        return page

    yield make
    for page in opened:
        await page.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


# Records when each card is inserted into the queue (epoch ms, the tests' shared clock).
ARRIVALS = """() => {
    window.arrivals = {};
    new MutationObserver((changes) => {
        for (const change of changes) for (const node of change.addedNodes) {
            if (node.dataset && node.dataset.id && !(node.dataset.id in arrivals)) {
                arrivals[node.dataset.id] = Date.now();
            }
        }
    }).observe(document.querySelector('#queue'), {childList: true});
}"""


async def live(*pages: Any) -> None:
    for page in pages:
        await expect(page.locator("#conn-state")).to_have_attribute("data-state", LIVE)


async def test_escalation_from_a_technician_page_reaches_every_engineer_page_of_the_account(
    pages: Callable[..., Any], account: str, client_for: Callable[..., Client]
) -> None:
    other = f"{account}-other"
    eng1 = await pages(account, "eng-1", Role.ENGINEER, "Eng One")
    eng2 = await pages(account, "eng-2", Role.ENGINEER, "Eng Two")
    stranger = await pages(other, "eng-9", Role.ENGINEER, "Other Account")
    tech = await pages(account, "tech-1", Role.TECHNICIAN, "Tina Tech")
    await live(eng1, eng2, stranger, tech)

    await tech.fill("#esc-summary", "Printer on floor 3 prints blank pages")
    await tech.fill(".step-description", "Replaced the toner")
    await tech.fill(".step-outcome", "still blank")
    await tech.click("#add-step")
    await tech.locator(".step-description").nth(1).fill("Printed a test page")
    await tech.locator(".step-outcome").nth(1).fill("blank too")
    await tech.select_option("#esc-priority", "PRIORITY_URGENT")
    for page in (eng1, eng2):
        await page.evaluate(ARRIVALS)
    await tech.evaluate(
        "document.querySelector('#escalate-form').addEventListener("
        "'submit', () => { window.submittedAt = Date.now(); }, {capture: true})"
    )
    await tech.click("#escalate")
    # From the submit to the card on both engineer pages (same clock): within a second.
    for page in (eng1, eng2):
        arrived = page.locator("#queue .card", has_text="Printer on floor 3 prints blank pages")
        await expect(arrived).to_be_visible()
    submitted = await tech.evaluate("window.submittedAt")
    for page in (eng1, eng2):
        delays = [at - submitted for at in await page.evaluate("Object.values(window.arrivals)")]
        assert len(delays) == 1 and delays[0] < 1000, delays
    mine = tech.locator("#mine .card")
    await expect(mine).to_have_count(1)
    handoff_id = await mine.first.get_attribute("data-id")
    assert handoff_id
    for page in (eng1, eng2):
        item = card(page, handoff_id)
        await expect(item.locator(".priority")).to_have_text("Urgent")
        await expect(item.locator(".summary")).to_have_text("Printer on floor 3 prints blank pages")
        await expect(item.locator(".by")).to_contain_text("Tina Tech")
        await expect(item.locator(".wait")).to_contain_text("waiting")
        await expect(item.locator(".sla")).to_have_attribute("data-sla", "due")
        # Created with a pending assessment; ASSESSMENT_READY fills it in live.
        await expect(item.locator(".assessment")).to_have_attribute("data-status", "ready")
        await expect(item.locator(".assessment")).not_to_contain_text("pending")
    await expect(tech.locator("#mine .card .status")).to_have_text("Waiting for an engineer")

    # The other account's page: its own escalation arrives, the first one never does.
    outsider = client_for(Role.TECHNICIAN, "tech-9", acct=other)
    theirs = await outsider.create(problem_summary="Only the other account sees this")
    await expect(card(stranger, theirs.id)).to_be_visible()
    await expect(stranger.locator("#queue .card")).to_have_count(1)
    await expect(card(stranger, handoff_id)).to_have_count(0)
    for page in (eng1, eng2):
        await expect(card(page, theirs.id)).to_have_count(0)
    # Announced for screen readers.
    await expect(eng1.locator("#announcer")).to_contain_text("Printer on floor 3")


async def test_pickup_leaves_the_other_queue_and_a_stale_pickup_names_the_holder(
    pages: Callable[..., Any], account: str, technician: Client
) -> None:
    eng1 = await pages(account, "eng-1", Role.ENGINEER, "Eng One")
    eng2 = await pages(account, "eng-2", Role.ENGINEER, "Eng Two")
    tech = await pages(account, "tech-1", Role.TECHNICIAN, "Tina Tech")
    await live(eng1, eng2, tech)

    first = await technician.create(problem_summary="Shared drive is read-only")
    await expect(card(eng1, first.id)).to_be_visible()
    await expect(card(eng2, first.id)).to_be_visible()
    await card(eng1, first.id).get_by_role("button", name="Pick up").click()
    await expect(eng1.locator("#context")).to_be_visible()
    await expect(card(eng2, first.id)).to_have_count(0)
    # The technician sees who has it, then the resolution, live.
    status = tech.locator(f'#mine .card[data-id="{first.id}"] .status')
    await expect(status).to_have_text("Picked up by Eng One")
    await eng1.fill("#resolution-note", "Remounted the share read-write")
    await eng1.click("#resolve")
    await expect(eng1.locator("#engineer")).to_be_visible()
    await expect(status).to_have_text("Resolved: Remounted the share read-write")

    # A pickup race: engineer 2 clicks, but engineer 1's pickup lands first and its
    # picked_up event removes the card before engineer 2's 409 arrives. The message about
    # who won outlives the card (a toast, not the card's own error line).
    second = await technician.create(problem_summary="Laptop fan is loud")
    await expect(card(eng2, second.id)).to_be_visible()
    await expect(card(eng1, second.id)).to_be_visible()

    async def lose_the_race(route: Any) -> None:
        await card(eng1, second.id).get_by_role("button", name="Pick up").click()
        await expect(eng1.locator("#context")).to_be_visible()
        await expect(card(eng2, second.id)).to_have_count(0)
        await route.continue_()

    await eng2.route("**/pickup", lose_the_race)
    await card(eng2, second.id).get_by_role("button", name="Pick up").click()
    toast = eng2.locator("#toasts .toast")
    await expect(toast).to_contain_text("Eng One picked up")
    await expect(toast).to_contain_text("Laptop fan is loud")
    await expect(eng2.locator("#context")).to_be_hidden()
    await expect(card(eng2, second.id)).to_have_count(0)
    await toast.get_by_role("button", name="Dismiss").click()
    await expect(toast).to_have_count(0)

    # After a reload engineer 1 finds the escalation they hold and gets back to it.
    await eng1.reload()
    await live(eng1)
    held = eng1.locator(f'#working-list .card[data-id="{second.id}"]')
    await expect(held).to_be_visible()
    await expect(card(eng1, second.id)).to_have_count(0)
    await held.get_by_role("button", name="Open").click()
    await expect(eng1.locator("#ctx-problem .body")).to_have_text("Laptop fan is loud")
    await eng1.click("#release")
    await expect(eng1.locator("#working")).to_be_hidden()
    await expect(card(eng1, second.id)).to_have_count(1)


async def test_handoff_context_screen_shows_everything_needed_to_start(
    pages: Callable[..., Any], account: str, technician: Client, engineer: Client
) -> None:
    created = await technician.create(
        priority=pb.PRIORITY_HIGH,
        session_id="guided-4711",
        problem_summary="Outlook asks for the password on every start",
        steps_tried=[
            pb.Step(description="Re-entered the password", outcome="asked again"),
            pb.Step(description="Cleared the credential manager", outcome="no change"),
        ],
        notes="Customer is on the VPN from home; call before 15:00.",
    )
    await settled(technician, created.id)
    eng = await pages(account, "eng-1", Role.ENGINEER, "Erin Engineer")
    await live(eng)
    item = card(eng, created.id)
    await expect(item.locator(".assessment")).to_have_attribute("data-status", "ready")
    await expect(item.locator(".by")).to_contain_text("2 steps tried · has notes")
    await assert_accessible(eng, "queue")

    await item.get_by_role("button", name="Pick up").click()
    context = eng.locator("#context")
    await expect(context).to_be_visible()
    await expect(eng.locator("#context-title")).to_be_focused()
    truth = (
        await engineer.call(
            "escalations", "GetHandoffContext", esc.GetHandoffContextRequest(handoff_id=created.id)
        )
    ).context
    for heading in (
        "Problem summary",
        "Technician's notes",
        "What's been tried",
        "AI assessment",
        "Start here",
    ):
        await expect(context.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    await expect(eng.locator("#ctx-problem .body")).to_have_text(truth.problem_summary)
    await expect(eng.locator("#ctx-notes .body")).to_have_text(truth.handoff.notes)
    tried = eng.locator("#ctx-tried .body li")
    await expect(tried).to_have_count(2)
    await expect(tried.nth(0).locator(".step-what")).to_have_text("Re-entered the password")
    await expect(tried.nth(0).locator(".step-outcome")).to_have_text("asked again")
    await expect(tried.nth(1)).to_contain_text("Cleared the credential manager")
    await expect(tried.nth(1)).to_contain_text("no change")
    assert truth.ai_assessment.summary
    await expect(eng.locator("#ctx-assessment .body")).to_contain_text(truth.ai_assessment.summary)
    assert truth.start_here
    await expect(eng.locator("#ctx-start .body")).to_have_text(truth.start_here)
    await expect(eng.locator("#ctx-priority")).to_have_text("High")
    await expect(eng.locator("#ctx-by")).to_have_text("Tina Tech")
    await expect(eng.locator("#ctx-session")).to_have_text("guided-4711")
    await expect(eng.locator("#ctx-waited")).to_contain_text("before pickup")
    await expect(eng.locator("#ctx-sla")).to_contain_text("to spare")
    await assert_accessible(eng, "context")

    # Not a dead end: the live queue's count stays on screen while working on this one.
    await expect(eng.locator("#ctx-live")).to_have_text("0 open in the queue")
    newer = await technician.create(problem_summary="Meanwhile: the projector is dark")
    await expect(eng.locator("#ctx-live")).to_have_text("1 open in the queue")

    # "Start here" starts the resolution note with the suggested step.
    await eng.get_by_role("button", name="Start with this step").click()
    note = eng.locator("#resolution-note")
    await expect(note).to_be_focused()
    await expect(note).to_have_value(f"Started with: {truth.start_here}\n")
    await expect(eng.locator("#ctx-start")).to_have_class(re.compile(r"\bstarted\b"))
    await screenshot(eng, "web-context.png")

    # A resolution without a note is refused in the page, in words.
    await note.fill("   ")
    await eng.click("#resolve")
    await expect(eng.locator("#ctx-error")).to_contain_text("Write what fixed it")
    await expect(context).to_be_visible()

    # Back to the queue and into the context again (still held: "In progress").
    await eng.get_by_role("button", name="Back to the queue").click()
    await expect(eng.locator("#queue-title")).to_be_focused()
    await expect(card(eng, newer.id)).to_be_visible()
    await (
        eng.locator(f'#working-list .card[data-id="{created.id}"]')
        .get_by_role("button", name="Open")
        .click()
    )
    await expect(eng.locator("#context")).to_be_visible()
    await expect(eng.locator("#context-title")).to_be_focused()
    await expect(eng.locator("#ctx-notes .body")).to_have_text(truth.handoff.notes)

    # Release by keyboard: it goes back to the queue (a RELEASED event re-adds the card).
    await eng.locator("#release").focus()
    await eng.keyboard.press("Enter")
    await expect(eng.locator("#engineer")).to_be_visible()
    await expect(card(eng, created.id)).to_have_count(1)


async def test_reconnects_after_a_gateway_restart_and_shows_each_escalation_once(
    browser: Any, server: ServerRuntime, account: str, technician: Client
) -> None:
    settings = GatewaySettings(http_addr="127.0.0.1:0", upstream=f"127.0.0.1:{server.port}")
    gw = await start_gateway(settings, log_level="warning")
    page = None
    try:
        before = await technician.create(problem_summary="Before the restart")
        page = await browser_support.open_page(browser, gw.url, account, "eng-1", Role.ENGINEER)
        await live(page)
        await expect(card(page, before.id)).to_be_visible()
        port = gw.port
        await gw.stop()
        await expect(page.locator("#conn-state")).to_have_attribute("data-state", "reconnecting")
        made = [
            await technician.create(problem_summary=f"While the gateway was down #{n}")
            for n in (1, 2)
        ]
        gw = await start_gateway(
            settings.model_copy(update={"http_addr": f"127.0.0.1:{port}"}), log_level="warning"
        )
        await live(page)
        for h in made:
            await expect(card(page, h.id)).to_have_count(1)
        await expect(page.locator("#queue .card")).to_have_count(3)
        await expect(card(page, before.id)).to_have_count(1)
        assert await page.evaluate("window.rf.stream.duplicatesDropped()") >= 0
    finally:
        if page is not None:
            await page.context.close()
        await gw.stop()


async def test_reduced_motion_turns_the_slide_in_off_and_a_hidden_tab_counts_in_the_title(
    pages: Callable[..., Any], account: str, technician: Client
) -> None:
    moving = await pages(account, "eng-1", Role.ENGINEER)
    still = await pages(account, "eng-2", Role.ENGINEER, reduced_motion=True)
    await live(moving, still)
    hide = """() => {
        Object.defineProperty(
            document, 'visibilityState', {configurable: true, get: () => 'hidden'});
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
        document.dispatchEvent(new Event('visibilitychange'));
    }"""
    for page in (moving, still):
        await page.evaluate(hide)
    base = await still.title()

    first = await technician.create(problem_summary="Keyboard types the wrong letters")
    for page in (moving, still):
        await expect(card(page, first.id)).to_be_visible()
    animation = (
        "el => getComputedStyle(el).animationName + ' ' + getComputedStyle(el).animationDuration"
    )
    assert await card(moving, first.id).evaluate(animation) == "slide-in 0.2s"
    assert (await card(still, first.id).evaluate(animation)).startswith("none")
    assert await still.evaluate("document.getAnimations().length") == 0

    await technician.create(problem_summary="Monitor flickers")
    await expect(still.locator("#queue .card")).to_have_count(2)
    await expect(still).to_have_title(f"(2) New escalations · {base}")
    # Reduced motion: the title holds still instead of flashing.
    flashed = await still.evaluate(
        """() => new Promise(resolve => {
            const seen = new Set([document.title]);
            const watcher = new MutationObserver(() => seen.add(document.title));
            watcher.observe(
                document.querySelector('title'),
                {childList: true, subtree: true, characterData: true});
            setTimeout(() => { watcher.disconnect(); resolve(seen.size); }, 2500);
        })"""
    )
    assert flashed == 1
    # Without it the title flashes between the count and the plain title.
    await browser_support.wait_for_js(moving, f"document.title === {base!r}")
    await browser_support.wait_for_js(moving, "document.title.startsWith('(2) ')")

    show = """() => {
        Object.defineProperty(
            document, 'visibilityState', {configurable: true, get: () => 'visible'});
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});
        document.dispatchEvent(new Event('visibilitychange'));
    }"""
    for page in (moving, still):
        await page.evaluate(show)
        await expect(page).to_have_title(base)


async def test_technician_page_and_metrics_panel(
    pages: Callable[..., Any], account: str, technician: Client, engineer: Client
) -> None:
    made = await technician.create(priority=pb.PRIORITY_LOW, problem_summary="Mouse is slow")
    eng = await pages(account, "eng-1", Role.ENGINEER)
    await live(eng)
    await expect(eng.locator("#m-open")).to_have_text("1")
    await expect(eng.locator("#m-chart svg rect.bar")).to_have_count(7)
    await expect(eng.locator('#m-priority [data-priority="low"]')).to_contain_text("1 created")
    await expect(card(eng, made.id)).to_be_visible()


async def test_technician_sees_history_cancels_and_gets_errors_in_human_words(
    pages: Callable[..., Any],
    account: str,
    technician: Client,
    engineer: Client,
    client_for: Callable[..., Client],
) -> None:
    # Before the tab opens: one resolved (with its note), one waiting, one of a colleague.
    done = await technician.create(
        priority=pb.PRIORITY_HIGH, problem_summary="Shared mailbox not visible in Outlook"
    )
    await engineer.call(
        "escalations", "PickUpEscalation", esc.PickUpEscalationRequest(handoff_id=done.id)
    )
    await engineer.call(
        "escalations",
        "ResolveEscalation",
        esc.ResolveEscalationRequest(
            handoff_id=done.id, resolution_note="Granted Full Access to the mailbox group"
        ),
    )
    waiting = await technician.create(
        priority=pb.PRIORITY_NORMAL, problem_summary="Label printer prints offset"
    )
    colleague = await client_for(Role.TECHNICIAN, "tech-2").create(problem_summary="Not mine")

    tech = await pages(account, "tech-1", Role.TECHNICIAN, "Tina Tech")
    await live(tech)
    resolved = tech.locator(f'#mine .card[data-id="{done.id}"]')
    await expect(resolved.locator(".status")).to_have_text(
        "Resolved: Granted Full Access to the mailbox group"
    )
    await expect(resolved.get_by_role("button", name=re.compile("^Cancel"))).to_have_count(0)
    await expect(tech.locator(f'#mine .card[data-id="{colleague.id}"]')).to_have_count(0)
    await assert_accessible(tech, "technician")

    # Cancel a waiting one (POST /v1/handoffs/{id}/cancel): the card says so.
    open_one = tech.locator(f'#mine .card[data-id="{waiting.id}"]')
    await expect(open_one.locator(".status")).to_have_text("Waiting for an engineer")
    await open_one.get_by_role("button", name=re.compile("^Cancel")).click()
    await expect(open_one.locator(".status")).to_have_text("Cancelled")
    await expect(open_one.get_by_role("button")).to_have_count(0)

    # Counters against the limits; the server's refusal in the form's own words.
    await expect(tech.locator("#esc-summary-count")).to_have_text("0 / 2,000")
    await expect(tech.locator("#esc-notes-count")).to_have_text("0 / 10,000")
    await tech.fill("#esc-summary", "z" * 2013)
    await expect(tech.locator("#esc-summary-count")).to_have_text("2,013 / 2,000")
    await expect(tech.locator("#esc-summary-count")).to_have_attribute("data-over", "true")
    await tech.fill(".step-description", "Restarted the spooler")
    await tech.click("#escalate")
    error = tech.locator("#esc-error")
    await expect(error).to_contain_text("Problem summary: at most 2000 characters")
    await expect(error).not_to_contain_text("problem_summary")
    await tech.fill("#esc-summary", "")
    await tech.click("#escalate")
    await expect(error).to_contain_text("the problem summary is required")

    # A good one: the form resets, the card arrives at the top of "My escalations".
    await tech.fill("#esc-summary", "Docking station does not charge the laptop")
    await tech.fill(".step-outcome", "no change")
    await tech.fill("#esc-notes", "Customer has a spare dock on site.")
    await expect(tech.locator("#esc-notes-count")).to_have_text("34 / 10,000")
    await tech.click("#escalate")
    await expect(tech.locator("#mine .card").first).to_contain_text("Docking station")
    await expect(tech.locator("#esc-summary-count")).to_have_text("0 / 2,000")
    await expect(error).to_be_hidden()
    await screenshot(tech, "web-technician.png")


async def test_local_sign_in_form_only_in_local_mode(
    browser: Any, server: ServerRuntime, gateway: RunningGateway, account: str
) -> None:
    # The `gateway` command's page: no form, no route.
    plain = await browser.new_page(base_url=gateway.url)
    try:
        await plain.goto("/")
        await expect(plain.locator("#token-form")).to_be_visible()
        await expect(plain.locator("#local-form")).to_be_hidden()
    finally:
        await plain.close()
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        missing = await http.post("/local/token", json={"account": account, "user": "u"})
        assert missing.status_code in (404, 405)

    # `serve` hands the gateway the server's secret: the form signs in for real.
    async with gateway_support.running_gateway(
        f"127.0.0.1:{server.port}",
        local_sign_in=LocalSignIn(TokenCodec(JWT_SECRET), allow_admin=False),
    ) as local:
        async with httpx.AsyncClient(base_url=local.url) as http:
            bad = await http.post("/local/token", json={"account": account, "role": "boss"})
            assert bad.status_code == 400
            assert bad.json()["code"] == "INVALID_ARGUMENT"
        page = await browser.new_page(base_url=local.url)
        try:
            await page.goto("/")
            form = page.locator("#local-form")
            await expect(form).to_be_visible()
            await page.fill("#local-account", account)
            await page.fill("#local-user", "erin")
            await page.fill("#local-name", "Erin Engineer")
            await page.select_option("#local-role", "engineer")
            await form.get_by_role("button").click()
            await expect(page.locator("#who-name")).to_contain_text("Erin Engineer")
            await live(page)
            await expect(page.locator("#queue-empty")).to_be_visible()
        finally:
            await page.close()


# ---- the shift: order, authentication, connection, layout, figures, technician, a11y ----


@pytest.fixture
async def sla_gateway(settings: Settings) -> AsyncIterator[tuple[ServerRuntime, RunningGateway]]:
    """A server whose URGENT SLA target is 2 s (checked every 0.2 s): a breach in seconds."""
    runtime = ServerRuntime(
        settings.model_copy(update={"sla_urgent_seconds": 2, "sla_check_seconds": 0.2})
    )
    await runtime.start()
    try:
        async with gateway_support.running_gateway(f"127.0.0.1:{runtime.port}") as gw:
            yield runtime, gw
    finally:
        await runtime.stop(0)


QUEUE_ORDER = "() => [...document.querySelectorAll('#queue .card')].map(c => c.dataset.id)"
FIGURES = """() => ({
    cards: document.querySelectorAll('#queue .card').length,
    open: document.querySelector('#m-open').textContent,
    count: document.querySelector('#queue-count').textContent,
    breached: document.querySelector('#m-breached').textContent,
    breachedCards: document.querySelectorAll('#queue .card[data-sla="breached"]').length,
    oldest: document.querySelector('#m-oldest').textContent,
    waits: [...document.querySelectorAll('#queue .card .wait')].map(w => w.textContent),
})"""


async def assert_figures_agree(page: Any) -> None:
    f = await page.evaluate(FIGURES)
    assert f["open"] == f["count"] == str(f["cards"]), f
    assert f["breached"] == str(f["breachedCards"]), f
    if f["cards"]:
        # "waiting 1m 05s" on the oldest card is the "Oldest waiting" figure.
        longest = max(f["waits"], key=lambda w: _seconds(w.removeprefix("waiting ")))
        assert longest == f"waiting {f['oldest']}", f
    else:
        assert f["oldest"] == "\u2013", f


def _seconds(text: str) -> int:
    total = 0
    for number, unit in re.findall(r"(\d+)([dhms])", text):
        total += int(number) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    return total


async def test_queue_order_is_breached_then_sla_due_then_age_and_figures_follow_it(
    browser: Any, sla_gateway: tuple[ServerRuntime, RunningGateway], account: str
) -> None:
    runtime, gw = sla_gateway
    async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
        tech = Client(channel, token(account, "tech-1", Role.TECHNICIAN, "Tina Tech"), account, "t")
        page = await browser_support.open_page(
            browser, gw.url, account, "eng-1", Role.ENGINEER, "Erin Engineer", width=1280
        )
        try:
            await live(page)
            await expect(page.locator("#m-chart .chart-empty")).to_have_text(
                "No escalations in the last 7 days."
            )
            await assert_figures_agree(page)
            normal = await tech.create(
                priority=pb.PRIORITY_NORMAL, problem_summary="Teams calls drop after 10 minutes"
            )
            low = await tech.create(
                priority=pb.PRIORITY_LOW, problem_summary="Wallpaper resets after every login"
            )
            high = await tech.create(
                priority=pb.PRIORITY_HIGH, problem_summary="Sales team cannot open the CRM"
            )
            # Newest-first would put LOW above NORMAL: due time (priority folded in) decides.
            expected = [high.id, normal.id, low.id]
            await wait_for_js(page, f"({QUEUE_ORDER})().join() === {','.join(expected)!r}")
            await assert_figures_agree(page)
            urgent = await tech.create(
                priority=pb.PRIORITY_URGENT,
                problem_summary="Payment terminal in store 12 rejects every card",
            )
            await wait_for_js(
                page, f"({QUEUE_ORDER})().join() === {','.join([urgent.id, *expected])!r}"
            )
            # The 2 s target passes: the breach event marks the card, figures follow.
            await expect(card(page, urgent.id)).to_have_attribute("data-sla", "breached")
            await expect(page.locator("#m-breached")).to_have_text("1")
            await assert_figures_agree(page)
            # A second urgent one queues behind the breached one, then breaches too.
            later = await tech.create(
                priority=pb.PRIORITY_URGENT, problem_summary="Warehouse scanners are offline"
            )
            await expect(card(page, later.id)).to_be_visible()
            order = await page.evaluate(QUEUE_ORDER)
            assert order == [urgent.id, later.id, *expected], order
            await expect(card(page, later.id)).to_have_attribute("data-sla", "breached")
            await expect(card(page, later.id).locator(".sla")).to_contain_text("SLA breached")
            await assert_figures_agree(page)
            # The history chart gets axes, tick labels and a caption once there is data.
            await page.click("#m-refresh")
            await expect(page.locator("#m-chart svg rect.bar")).not_to_have_count(0)
            await expect(page.locator("#m-chart svg line.axis")).to_have_count(2)
            await expect(page.locator("#m-chart svg text.label")).to_contain_text("Date")
            await expect(page.locator('#m-priority [data-priority="urgent"]')).to_contain_text(
                "2 created"
            )
            await expect(card(page, normal.id).locator(".assessment")).to_have_attribute(
                "data-status", "ready"
            )
            await screenshot(page, "web-queue.png")
            await page.set_viewport_size({"width": 390, "height": 844})
            await assert_no_horizontal_scroll(page, "queue at 390px")
            await screenshot(page, "web-mobile.png", full_page=False)
            await page.set_viewport_size({"width": 1280, "height": 900})
            # Picking one up: the figures drop with the cards, at once.
            await card(page, urgent.id).get_by_role("button", name="Pick up").click()
            await expect(page.locator("#context")).to_be_visible()
            await expect(page.locator("#ctx-sla")).to_contain_text("breached, picked up")
            await expect(page.locator("#ctx-live")).to_have_text("4 open in the queue, 1 past SLA")
            await page.click("#back")
            await expect(page.locator("#m-open")).to_have_text("4")
            await assert_figures_agree(page)
        finally:
            await page.context.close()


async def test_a_token_the_server_refuses_returns_to_sign_in_with_the_reason(
    pages: Callable[..., Any], account: str, technician: Client
) -> None:
    await technician.create(problem_summary="Nobody may see this with a forged token")
    forged = TokenCodec("another-secret-" + "x" * 40).issue(
        account=account, user="eng-1", role=Role.ENGINEER, name="Forged"
    )
    page = await pages(account, "eng-1", Role.ENGINEER, bearer=forged)
    await expect(page.locator("#sign-in")).to_be_visible()
    await expect(page.locator("#sign-in-reason")).to_contain_text("no longer valid")
    await expect(page.locator("#engineer")).to_be_hidden()
    await expect(page.locator("#who")).to_be_hidden()
    await expect(page.locator("#queue .card")).to_have_count(0)
    await expect(page.locator("button.pickup")).to_have_count(0)


async def test_an_expiring_token_warns_then_signs_out_mid_shift(
    pages: Callable[..., Any], account: str, technician: Client
) -> None:
    made = await technician.create(problem_summary="Card on screen when the token expires")
    page = await pages(account, "eng-1", Role.ENGINEER, "Erin Engineer", ttl=6)
    await live(page)
    await expect(card(page, made.id)).to_be_visible()
    # Minutes before expiry the banner warns (here the whole life of the token is "soon").
    await expect(page.locator("#banner-expiry")).to_be_visible()
    await expect(page.locator("#banner-expiry")).to_contain_text("Your sign-in expires in")
    # At expiry: back to sign-in with the reason, and no stale card keeps its button.
    await expect(page.locator("#sign-in")).to_be_visible(timeout=15_000)
    await expect(page.locator("#sign-in-reason")).to_contain_text("expired")
    await expect(page.locator("#queue .card")).to_have_count(0)
    await expect(page.locator("#engineer")).to_be_hidden()
    await expect(page.locator("#banner-expiry")).to_be_hidden()
    assert await page.evaluate("window.rf.stream") is None
    assert await page.evaluate("sessionStorage.getItem('rf.token')") is None


async def test_sign_in_screen_has_no_session_controls_and_is_accessible(
    browser: Any, gateway: RunningGateway
) -> None:
    for width in (1280, 390):
        context = await browser.new_context(
            base_url=gateway.url, viewport={"width": width, "height": 800}
        )
        page = await context.new_page()
        try:
            await page.goto("/")
            await expect(page.locator("#token-form")).to_be_visible()
            await expect(page.get_by_text("offline")).to_have_count(0)
            await expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
            await expect(page.locator("#conn-state")).to_be_hidden()
            await assert_accessible(page, "sign-in")
            await assert_tap_targets(page, f"sign-in at {width}px")
        finally:
            await context.close()


LONG_URL = "https://intranet.example.com/" + "a1b2c3d4e5" * 29 + "x"  # 320 characters
RTL = "הדפסת דוח נכשלת בכל פעם שמנסים לשלוח לתור ההדפסה המשותף בקומה השנייה "


async def hostile_handoff(client: Client) -> Any:
    assert len(LONG_URL) == 320
    summary = (f"VPN portal {LONG_URL} fails. {RTL}" + "word " * 400)[:2000]
    return await client.create(
        priority=pb.PRIORITY_URGENT,
        problem_summary=summary,
        steps_tried=[
            pb.Step(
                description=("x" * 999) if n == 0 else f"Step {n}: {LONG_URL}", outcome="y" * 200
            )
            for n in range(50)
        ],
        notes=(RTL + LONG_URL + " ") * 25,
    )


async def test_hostile_content_never_scrolls_sideways_and_mobile_targets_are_44px(
    pages: Callable[..., Any], account: str, technician: Client
) -> None:
    hostile = await hostile_handoff(technician)
    await technician.create(priority=pb.PRIORITY_LOW, problem_summary=RTL)
    for width in (1280, 390):
        eng = await pages(account, f"eng-{width}", Role.ENGINEER, "Erin Engineer", width=width)
        await live(eng)
        await expect(card(eng, hostile.id)).to_be_visible()
        await assert_no_horizontal_scroll(eng, f"queue at {width}px")
        # The header stays one row: brand, connection and Sign out, nothing clipped.
        header = await eng.locator("header.top").bounding_box()
        assert header and header["height"] <= 64, header
        sign_out = await eng.get_by_role("button", name="Sign out").bounding_box()
        assert sign_out and sign_out["x"] + sign_out["width"] <= width, sign_out
        await assert_tap_targets(eng, f"queue at {width}px")
        if width == 390:
            await screenshot(eng, "web-hostile-mobile.png", full_page=False)
        await card(eng, hostile.id).get_by_role("button", name="Pick up").click()
        await expect(eng.locator("#ctx-tried .body li")).to_have_count(50)
        await assert_no_horizontal_scroll(eng, f"context at {width}px")
        await assert_tap_targets(eng, f"context at {width}px")
        await screenshot(eng, f"web-hostile-context-{width}.png")
        await eng.click("#release")
        await expect(eng.locator("#engineer")).to_be_visible()

        tech = await pages(account, "tech-1", Role.TECHNICIAN, "Tina Tech", width=width)
        await live(tech)
        await expect(tech.locator(f'#mine .card[data-id="{hostile.id}"]')).to_be_visible()
        await tech.fill("#esc-summary", LONG_URL)
        for _ in range(2):
            await tech.click("#add-step")
        await tech.locator(".step-description").nth(1).fill(LONG_URL)
        await assert_no_horizontal_scroll(tech, f"technician at {width}px")
        await assert_tap_targets(tech, f"technician at {width}px")
        await screenshot(tech, f"web-hostile-technician-{width}.png", full_page=False)


async def test_disconnected_stream_shows_a_banner_and_pauses_actions(
    browser: Any, server: ServerRuntime, account: str, technician: Client
) -> None:
    settings = GatewaySettings(http_addr="127.0.0.1:0", upstream=f"127.0.0.1:{server.port}")
    gw = await start_gateway(settings, log_level="warning")
    page = None
    try:
        made = await technician.create(problem_summary="Pick me up after the outage")
        page = await browser_support.open_page(browser, gw.url, account, "eng-1", Role.ENGINEER)
        await live(page)
        pickup = card(page, made.id).get_by_role("button", name="Pick up")
        await expect(pickup).to_be_enabled()
        await expect(page.locator("#banner-conn")).to_be_hidden()
        port = gw.port
        await gw.stop()
        await expect(page.locator("#banner-conn")).to_be_visible()
        await expect(page.locator("#banner-conn")).to_contain_text("actions are paused")
        await expect(pickup).to_be_disabled()
        gw = await start_gateway(
            settings.model_copy(update={"http_addr": f"127.0.0.1:{port}"}), log_level="warning"
        )
        await live(page)
        await expect(page.locator("#banner-conn")).to_be_hidden()
        await expect(pickup).to_be_enabled()
    finally:
        if page is not None:
            await page.context.close()
        await gw.stop()


async def test_keyboard_only_pickup_and_resolve_and_arrivals_announced_once(
    pages: Callable[..., Any], account: str, technician: Client
) -> None:
    eng = await pages(account, "eng-1", Role.ENGINEER, "Erin Engineer")
    await live(eng)
    await eng.evaluate(
        """() => {
            window.said = [];
            new MutationObserver(() => {
                const text = document.querySelector('#announcer').textContent;
                if (text) said.push(text);
            }).observe(document.querySelector('#announcer'),
                       {childList: true, characterData: true, subtree: true});
        }"""
    )
    made = await technician.create(problem_summary="Scanner on desk 4 is not found")
    await settled(technician, made.id)
    await expect(card(eng, made.id).locator(".assessment")).to_have_attribute(
        "data-status", "ready"
    )
    said = await eng.evaluate("window.said.filter(t => t.includes('Scanner on desk 4'))")
    assert len(said) == 1, said  # the arrival, once (the assessment does not repeat it)

    # Keyboard only: Tab to the card's button, Enter; type the note, Tab to Resolve, Enter.
    pickup = card(eng, made.id).get_by_role("button", name="Pick up")
    for _ in range(30):
        await eng.keyboard.press("Tab")
        if await pickup.evaluate("el => el === document.activeElement"):
            break
    else:
        raise AssertionError("Tab never reached the Pick up button")
    await eng.keyboard.press("Enter")
    await expect(eng.locator("#context-title")).to_be_focused()
    note = eng.locator("#resolution-note")
    for _ in range(30):
        await eng.keyboard.press("Tab")
        if await note.evaluate("el => el === document.activeElement"):
            break
    else:
        raise AssertionError("Tab never reached the resolution note")
    await eng.keyboard.type("Reinstalled the scanner driver")
    await eng.keyboard.press("Tab")
    await expect(eng.locator("#resolve")).to_be_focused()
    await eng.keyboard.press("Enter")
    await expect(eng.locator("#engineer")).to_be_visible()
    await expect(eng.locator("#announcer")).to_have_text("Resolved.")
    await expect(card(eng, made.id)).to_have_count(0)


async def test_context_screen_says_when_the_assessment_failed_or_is_pending(
    browser: Any, own_settings: Settings, account: str
) -> None:
    # A provider that refuses the first request (not retried), then is slow for the rest.
    async with fake_openai(
        Reply(status=400), Reply(body=answer("Late.", "Call the customer"), delay=8)
    ) as fake:
        runtime = ServerRuntime(openai_settings(own_settings, fake.base_url))
        await runtime.start()
        page = None
        try:
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel,
                gateway_support.running_gateway(f"127.0.0.1:{runtime.port}") as gw,
            ):
                tech = Client(channel, token(account, "t", Role.TECHNICIAN, "Tina"), account, "t")
                failed = await tech.create(problem_summary="Assessment will fail")
                await settled(tech, failed.id)
                pending = await tech.create(problem_summary="Assessment still pending")
                page = await browser_support.open_page(
                    browser, gw.url, account, "eng-1", Role.ENGINEER
                )
                await live(page)
                await expect(card(page, failed.id).locator(".assessment")).to_have_text(
                    "AI assessment unavailable"
                )
                await expect(card(page, pending.id).locator(".assessment")).to_have_text(
                    "AI assessment pending…"
                )
                await card(page, failed.id).get_by_role("button", name="Pick up").click()
                await expect(page.locator("#ctx-assessment")).to_have_attribute(
                    "data-status", "failed"
                )
                await expect(page.locator("#ctx-assessment .body")).to_contain_text(
                    "The AI assessment failed"
                )
                await expect(page.locator("#ctx-start .body")).not_to_be_empty()
                await page.click("#back")
                await card(page, pending.id).get_by_role("button", name="Pick up").click()
                await expect(page.locator("#ctx-assessment")).to_have_attribute(
                    "data-status", "pending"
                )
                await expect(page.locator("#ctx-assessment .body")).to_contain_text(
                    "still being prepared"
                )
        finally:
            if page is not None:
                await page.context.close()
            await runtime.stop(0)
