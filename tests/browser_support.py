"""Helpers for the browser tests: Debian's Chromium driven by Playwright (async API).

Never ``playwright install``: the browser is the system's ``/usr/bin/chromium`` (CI
installs it with apt). Tests skip when it or the playwright package is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.domain.types import Role
from tests.support import token, wait_until

CHROMIUM = os.environ.get("RF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Default timeout of Playwright's waits and expect() in these tests (ms).
TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Any]:
    """The one Chromium of the session; tests use it through ``browser``."""
    playwright_api = pytest.importorskip("playwright.async_api")
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once per session
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browser(chromium: Any) -> AsyncIterator[CSPCheckedBrowser]:
    """The browser for one test; the test fails on any Content-Security-Policy violation.

    The gateway serves the page with a strict CSP (scripts, styles and connections from
    its own origin only, nothing inline). A page change that breaks it would only show as
    a console error and a missing style or script, so every page opened here is watched.
    """
    checked = CSPCheckedBrowser(chromium)
    try:
        yield checked
    finally:
        await checked.close()
    if checked.violations:
        pytest.fail("Content-Security-Policy violations:\n" + "\n".join(checked.violations))


# Reports each violation event of every frame to the test (Playwright binding below).
_VIOLATION_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__rfCspViolation(
    `${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`
  );
});
"""


class CSPCheckedBrowser:
    """A Playwright browser whose contexts record CSP violations (console and events)."""

    def __init__(self, browser: Any) -> None:
        self._browser = browser
        self._contexts: list[Any] = []
        self.violations: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._browser, name)

    async def new_context(self, **options: Any) -> Any:
        context = await self._browser.new_context(**options)
        self._contexts.append(context)
        await context.expose_binding(
            "__rfCspViolation", lambda _source, text: self.violations.append(str(text))
        )
        await context.add_init_script(_VIOLATION_LISTENER)
        context.on("page", self._watch_console)
        return context

    async def new_page(self, **options: Any) -> Any:
        """A page in a context of its own, as ``Browser.new_page`` gives."""
        context = await self.new_context(**options)
        return await context.new_page()

    def _watch_console(self, page: Any) -> None:
        def on_console(message: Any) -> None:
            if "Content Security Policy" in message.text:
                self.violations.append(f"console: {message.text}")

        page.on("console", on_console)

    async def close(self) -> None:
        for context in self._contexts:
            with contextlib.suppress(Exception):
                await context.close()
        self._contexts.clear()


async def open_page(
    browser: Any,
    base_url: str,
    account: str,
    user: str,
    role: Role | str,
    name: str = "",
    *,
    reduced_motion: bool = False,
    width: int = 1100,
    height: int = 760,
    bearer: str = "",
    ttl: int = 3600,
) -> Any:
    """A page signed in as that user (its own browser context: its own sessionStorage)."""
    context = await browser.new_context(
        base_url=base_url,
        reduced_motion="reduce" if reduced_motion else "no-preference",
        viewport={"width": width, "height": height},
        # Phone-sized pages behave as phones (touch, no hover), as the layout assumes.
        has_touch=width < 600,
        is_mobile=width < 600,
    )
    context.set_default_timeout(TIMEOUT_MS)
    bearer = bearer or token(account, user, Role(role), name=name or user.title(), ttl=ttl)
    await context.add_init_script(f"sessionStorage.setItem('rf.token', {bearer!r});")
    page = await context.new_page()
    await page.goto("/")
    return page


async def wait_for_js(page: Any, expression: str, timeout_ms: float = TIMEOUT_MS) -> None:
    """Until a JavaScript expression is true in the page.

    Playwright's ``wait_for_function`` compiles a string predicate inside the page with
    ``eval``, which the page's CSP (no 'unsafe-eval') refuses; ``evaluate`` runs through
    the DevTools protocol, outside the page's policy, so it is polled instead.
    """
    await wait_until(lambda: page.evaluate(expression), timeout=timeout_ms / 1000, what=expression)


def card(page: Any, handoff_id: str) -> Any:
    return page.locator(f'#queue .card[data-id="{handoff_id}"]')


async def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    # Written aside, then renamed: the same screen on both databases may be taken at once
    # by two test workers, and a reader must never see half of one and half of the other.
    partial = path.with_name(f".{os.getpid()}.{name}")
    await page.screenshot(path=str(partial), full_page=full_page)
    os.replace(partial, path)
    return path


async def assert_accessible(page: Any, screen: str) -> None:
    """axe-core (bundled by axe-playwright-python, no CDN): no serious or critical issue."""
    from axe_playwright_python.async_playwright import Axe

    results = await Axe().run(page)
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"accessibility violations on the {screen} screen: {bad}"


async def assert_no_horizontal_scroll(page: Any, screen: str) -> None:
    widths = await page.evaluate(
        "[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    assert max(widths[:2]) <= widths[2], f"{screen}: scrolls sideways {widths}"


# Every visible control of the page, with its box: tap targets and clipping at 390 px.
CONTROLS = """() => [...document.querySelectorAll('button, input, select, textarea, a[href]')]
    .filter(el => el.offsetParent !== null && !el.closest('.visually-hidden'))
    .map(el => {
        const r = el.getBoundingClientRect();
        return {what: el.id || el.className || el.tagName, text: (el.textContent || '').trim(),
                left: r.left, right: r.right, width: r.width, height: r.height};
    })"""


async def assert_tap_targets(page: Any, screen: str) -> None:
    """At least 44 x 44 px (WCAG 2.5.5) and inside the viewport (nothing clipped)."""
    width = await page.evaluate("window.innerWidth")
    controls = await page.evaluate(CONTROLS)
    assert controls, screen
    small = [c for c in controls if c["height"] < 44 or c["width"] < 44]
    assert not small, f"{screen}: tap targets under 44 px: {small[:5]}"
    clipped = [c for c in controls if c["left"] < 0 or c["right"] > width + 0.5]
    assert not clipped, f"{screen}: controls outside the viewport: {clipped[:5]}"
