"""Helpers for the browser tests: Debian's Chromium driven by Playwright (async API).

Never ``playwright install``: the browser is the system's ``/usr/bin/chromium`` (CI
installs it with apt). Tests skip when it or the playwright package is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.domain.types import Role
from tests.support import token

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
async def browser() -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip("playwright.async_api")
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once per session
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(
    browser: Any,
    base_url: str,
    account: str,
    user: str,
    role: Role | str,
    name: str = "",
    *,
    reduced_motion: bool = False,
) -> Any:
    """A page signed in as that user (its own browser context: its own sessionStorage)."""
    context = await browser.new_context(
        base_url=base_url,
        reduced_motion="reduce" if reduced_motion else "no-preference",
        viewport={"width": 1100, "height": 760},
    )
    context.set_default_timeout(TIMEOUT_MS)
    bearer = token(account, user, Role(role), name=name or user.title())
    await context.add_init_script(f"sessionStorage.setItem('rf.token', {bearer!r});")
    page = await context.new_page()
    await page.goto("/")
    return page


def card(page: Any, handoff_id: str) -> Any:
    return page.locator(f'#queue .card[data-id="{handoff_id}"]')


async def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    return path
