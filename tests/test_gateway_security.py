"""Security headers, HEAD, and Swagger UI served from this gateway alone.

The page keeps a bearer token in ``sessionStorage``, so everything the gateway serves
carries a strict Content-Security-Policy (scripts, styles and connections from its own
origin, nothing inline, no framing), ``nosniff`` and ``no-referrer``. ``/docs`` works
offline: Swagger UI's assets come from the installed package, and its start-up code is a
file, not an inline script. The browser tests here also show that the shared browser
fixture (``tests/browser_support.py``) catches a CSP violation, which every browser test
then fails on.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from gateway.serve import RunningGateway
from server.domain.types import Role
from tests import browser_support
from tests.gateway_support import bearer
from tests.support import wait_until

PATHS = [
    "/",
    "/static/app.js",
    "/static/style.css",
    "/static/stream.js",
    "/docs",
    "/docs/init.js",
    "/docs/assets/swagger-ui.css",
    "/docs/assets/swagger-ui-bundle.js",
    "/openapi.json",
    "/healthz",
    "/livez",
    "/no/such/route",
    "/v1/escalations",  # 401 without a token: error bodies too
]


def policy(response: httpx.Response) -> dict[str, list[str]]:
    """The Content-Security-Policy as directive -> sources."""
    directives: dict[str, list[str]] = {}
    for part in response.headers["content-security-policy"].split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


def assert_security_headers(response: httpx.Response) -> None:
    csp = policy(response)
    assert csp["default-src"] == ["'none'"], csp
    assert csp["script-src"] == ["'self'"], csp
    assert csp["style-src"] == ["'self'"], csp
    assert csp["connect-src"] == ["'self'"], csp
    assert csp["frame-ancestors"] == ["'none'"], csp
    assert all("unsafe" not in s and "*" not in s for v in csp.values() for s in v), csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("path", PATHS)
async def test_every_response_has_the_security_headers(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)
    assert response.status_code in (200, 401, 404), response.text[:300]
    assert_security_headers(response)


async def test_streams_have_them_too(http: httpx.AsyncClient, account: str) -> None:
    headers = bearer(account, Role.ENGINEER)
    async with http.stream("GET", "/v1/escalations/stream", headers=headers) as response:
        assert response.status_code == 200
        assert_security_headers(response)


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/docs", "/docs/assets/swagger-ui.css"])
async def test_head_answers_like_get_without_a_body(http: httpx.AsyncClient, path: str) -> None:
    get = await http.get(path)
    head = await http.head(path)
    assert head.status_code == 200, head.text
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert_security_headers(head)


class _Refs(HTMLParser):
    """Every URL an HTML page loads, and whether it holds inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if "style" in values or any(name.startswith("on") for name in values):
            self.inline.append(f"<{tag} {attrs}>")
        if tag == "style":
            self.inline.append("<style>")
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(str(values[name]))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"<script>{data[:80]}")


async def test_docs_load_only_same_origin_assets_that_are_served(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200
    refs = _Refs()
    refs.feed(page.text)
    assert refs.inline == []
    scripts = [u for u in refs.urls if u.endswith(".js")]
    assert len(scripts) >= 2 and any(u.endswith("swagger-ui-bundle.js") for u in scripts)
    assert any(u.endswith("swagger-ui.css") for u in refs.urls)
    for url in refs.urls:
        # Same origin: a path on this server, not another host (nor "//host/...").
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await http.get(url)
        assert asset.status_code == 200, url
        kind = asset.headers["content-type"]
        if url.endswith(".js"):
            assert kind.startswith("text/javascript") or "javascript" in kind, (url, kind)
        elif url.endswith(".css"):
            assert kind.startswith("text/css"), (url, kind)
    # Swagger UI is started on this gateway's OpenAPI document.
    init = await http.get(next(u for u in scripts if "init" in u))
    assert "/openapi.json" in init.text


async def test_docs_render_offline_under_the_csp(browser: Any, gateway: RunningGateway) -> None:
    from playwright.async_api import expect

    page = await browser.new_page(base_url=gateway.url)
    page.set_default_timeout(browser_support.TIMEOUT_MS)
    elsewhere: list[str] = []

    async def offline(route: Any) -> None:
        # No internet: anything not on the gateway's origin fails, and is noted.
        if route.request.url.startswith(gateway.url + "/") or route.request.url.startswith("data:"):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    await page.route("**/*", offline)
    await page.goto("/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("gateway")
    await expect(page.locator(".opblock-tag-section").first).to_be_visible()
    # An operation opens (Swagger's own scripting, styles applied).
    await page.locator(".opblock-summary").first.click()
    await expect(page.locator(".opblock-body").first).to_be_visible()
    assert elsewhere == []
    # The fixture fails the test if Swagger UI broke the CSP anywhere.


async def test_the_browser_fixture_catches_a_csp_violation(
    browser: Any, gateway: RunningGateway
) -> None:
    page = await browser.new_page(base_url=gateway.url)
    page.set_default_timeout(browser_support.TIMEOUT_MS)
    await page.goto("/")
    # The kind of change the CSP forbids: inline style in HTML and an inline script.
    await page.evaluate(
        """() => {
        document.body.insertAdjacentHTML("beforeend", '<p style="color: red">x</p>');
        const s = document.createElement("script");
        s.textContent = "window.ran = 1";
        document.body.append(s);
    }"""
    )
    await wait_until(
        lambda: len(browser.violations) >= 2, timeout=10, what="both violations reported"
    )
    assert any("style-src" in v for v in browser.violations), browser.violations
    assert any("script-src" in v for v in browser.violations), browser.violations
    assert await page.evaluate("() => window.ran") is None
    browser.violations.clear()  # expected here; any other test fails on them
