"""The browser stream module (clients/web/stream.js) in Chromium against the real gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.serve import RunningGateway, start_gateway
from gateway.settings import GatewaySettings
from server.domain.types import Role
from server.runtime import ServerRuntime
from tests import browser_support
from tests.gateway_support import subscribers
from tests.support import Client, token, wait_until

pytest.importorskip("playwright.async_api")


# Opens a stream in the page and records what it reports in window.log.
OPEN = """async ({url, token}) => {
    const { openStream } = await import('/static/stream.js');
    window.log = { events: [], resets: [], states: [] };
    window.ctl = new AbortController();
    window.handle = openStream({
        url, token, signal: window.ctl.signal, initialDelayMs: 100, maxDelayMs: 1000,
        onEvent: (e) => log.events.push(
            {type: e.type, sequence: e.sequence, id: e.handoff && e.handoff.id}),
        onReset: (r) => log.resets.push({type: r.type, sequence: r.sequence, n: r.handoffs.length}),
        onState: (s) => log.states.push(s),
    });
}"""


@pytest.fixture
async def blank(browser: Any, gateway: RunningGateway) -> AsyncIterator[Any]:
    page = await browser.new_page(base_url=gateway.url)
    page.set_default_timeout(browser_support.TIMEOUT_MS)
    await page.goto("/")
    yield page
    await page.close()


def engineer_token(account: str) -> str:
    return token(account, "eng-web", Role.ENGINEER, name="Web Engineer")


async def test_resumes_after_a_gateway_restart_without_duplicates(
    browser: Any, server: ServerRuntime, account: str, technician: Client
) -> None:
    settings = GatewaySettings(http_addr="127.0.0.1:0", upstream=f"127.0.0.1:{server.port}")
    gw = await start_gateway(settings, log_level="warning")
    page = await browser.new_page(base_url=gw.url)
    try:
        page.set_default_timeout(browser_support.TIMEOUT_MS)
        await page.goto("/")
        existing = await technician.create(problem_summary="already open")
        await page.evaluate(
            OPEN, {"url": "/v1/escalations/stream", "token": engineer_token(account)}
        )
        await browser_support.wait_for_js(page, "log.resets.length === 1 && log.resets[0].n === 1")
        first = await technician.create(problem_summary="live")
        await browser_support.wait_for_js(page, f"log.events.some(e => e.id === {first.id!r})")

        port = gw.port
        await gw.stop()
        await browser_support.wait_for_js(page, "log.states.includes('reconnecting')")
        missed = [await technician.create(problem_summary=f"missed {n}") for n in (1, 2)]
        gw = await start_gateway(
            settings.model_copy(update={"http_addr": f"127.0.0.1:{port}"}), log_level="warning"
        )
        ids = [first.id, *(h.id for h in missed)]
        await browser_support.wait_for_js(
            page, f"{ids!r}.every(id => log.events.some(e => e.type === 'created' && e.id === id))"
        )
        log, last = await page.evaluate("[log, window.handle.lastEventId()]")
        sequences = [e["sequence"] for e in log["events"]]
        assert sequences == sorted(set(sequences)), "out of order or duplicated"
        created = [e["id"] for e in log["events"] if e["type"] == "created"]
        assert created == ids
        assert existing.id not in created
        assert [r["type"] for r in log["resets"]] == ["snapshot"], "resumed, not restarted"
        assert last >= sequences[-1]
    finally:
        await page.close()
        await gw.stop()


async def test_abort_releases_the_upstream_subscriber(
    blank: Any, server: ServerRuntime, account: str
) -> None:
    assert subscribers(server, account) == 0
    await blank.evaluate(OPEN, {"url": "/v1/escalations/stream", "token": engineer_token(account)})
    await browser_support.wait_for_js(blank, "log.resets.length === 1")
    await wait_until(lambda: subscribers(server, account) == 1, what="one subscriber")
    await blank.evaluate("window.ctl.abort()")
    await browser_support.wait_for_js(blank, "log.states.at(-1) === 'closed'")
    await wait_until(lambda: subscribers(server, account) == 0, what="subscriber freed")


async def test_a_bad_token_fails_without_retrying(blank: Any, account: str) -> None:
    await blank.evaluate(OPEN, {"url": "/v1/escalations/stream", "token": "not-a-jwt"})
    await browser_support.wait_for_js(blank, "log.states.at(-1) === 'failed'")
    assert "reconnecting" not in await blank.evaluate("log.states")


# Drives openStream with a scripted fetch: frames per connection, then checks what the
# caller saw and which Last-Event-ID each reconnect sent.
SCRIPTED = """async () => {
    const { openStream, parseFrame, splitFrames, backoffDelay } = await import('/static/stream.js');
    const enc = new TextEncoder();
    const ev = (seq, type, id) => `id: ${seq}\\nevent: ${type}\\ndata: ${JSON.stringify(
        {sequence: String(seq), type: 'EVENT_TYPE_' + type.toUpperCase(), handoff: {id}})}\\n\\n`;
    const snap = 'retry: 3000\\n\\nid: 1\\nevent: snapshot\\n'
        + 'data: {"sequence":"1","snapshot":[{"id":"a"}]}\\n\\n';
    const scripts = [
        // 1: snapshot, an event split across chunks, a duplicate, a ping, then event: error.
        [snap, ev(2, 'created', 'b').slice(0, 9), ev(2, 'created', 'b').slice(9),
         ev(2, 'created', 'b'),
         ': ping\\n\\n', 'id: 2\\nevent: heartbeat\\ndata: {"sequence":"2"}\\n\\n',
         'event: error\\ndata: {"code":"UNAVAILABLE","message":"gone"}\\n\\n'],
        // 2: replays 2 again (dropped), then 3 with CRLF line ends; then silence (dead).
        [ev(2, 'created', 'b'), ev(3, 'released', 'a').replace(/\\n/g, '\\r\\n'), null],
        // 3: a heartbeat moves the cursor, then a clean end.
        ['id: 7\\nevent: heartbeat\\ndata: {}\\n\\n'],
        // 4: carries on after the heartbeat's position.
        [ev(8, 'picked_up', 'a'), null],
    ];
    const sent = [];
    let n = 0;
    const fakeFetch = async (url, init) => {
        sent.push({
            lastEventId: init.headers['Last-Event-ID'] ?? null, auth: init.headers.Authorization,
        });
        const chunks = scripts[Math.min(n++, scripts.length - 1)];
        const body = new ReadableStream({
            async start(controller) {
                for (const chunk of chunks) {
                    if (chunk === null) return; // stay open, silent
                    controller.enqueue(enc.encode(chunk));
                }
                controller.close();
            },
        });
        init.signal.addEventListener('abort', () => { try { body.cancel(); } catch {} });
        const headers = { 'content-type': 'text/event-stream' };
        return new Response(body, { status: 200, headers });
    };
    const log = { events: [], resets: [], states: [], errors: [] };
    const ctl = new AbortController();
    let tokens = 0;
    const handle = openStream({
        url: '/x', getToken: () => `t${++tokens}`, signal: ctl.signal, fetch: fakeFetch,
        heartbeatTimeoutMs: 300, initialDelayMs: 10, maxDelayMs: 40,
        onEvent: (e) => log.events.push([e.sequence, e.type, e.handoff.id]),
        onReset: (r) => log.resets.push([r.type, r.sequence, r.handoffs.length]),
        onState: (s, info) => {
            log.states.push(s);
            if (info.error) log.errors.push(info.error.message);
        },
    });
    const until = Date.now() + 5000;
    while (log.events.length < 3 && Date.now() < until) await new Promise(r => setTimeout(r, 20));
    ctl.abort();
    await handle.done;
    const delays = [1, 2, 3, 10].map(a => backoffDelay(a, 100, 1000, () => 1));
    const jittered = backoffDelay(3, 100, 1000, () => 0);
    return {
        ...log, sent, dropped: handle.duplicatesDropped(), last: handle.lastEventId(),
        delays, jittered, frame: parseFrame('id: 5\\nevent: x\\ndata: a\\ndata: b'),
        split: splitFrames('a\\n\\nb\\r\\n\\r\\nc'),
    };
}"""


async def test_stream_semantics_with_a_scripted_connection(blank: Any) -> None:
    result = await blank.evaluate(SCRIPTED)
    assert result["resets"] == [["snapshot", 1, 1]]
    assert result["events"] == [[2, "created", "b"], [3, "released", "a"], [8, "picked_up", "a"]]
    assert result["dropped"] == 2
    assert result["last"] == 8
    # Each reconnect resumes after the last sequence seen (heartbeats included), with a
    # fresh token from the provider.
    assert [s["lastEventId"] for s in result["sent"]] == [None, "2", "3", "7"]
    assert [s["auth"] for s in result["sent"]] == [
        "Bearer t1",
        "Bearer t2",
        "Bearer t3",
        "Bearer t4",
    ]
    assert any("gone" in e for e in result["errors"])  # event: error -> reconnect
    assert any("presumed dead" in e for e in result["errors"])  # heartbeat timeout
    assert result["states"][-1] == "closed"
    assert result["delays"] == [100, 200, 400, 1000]
    assert result["jittered"] == 200
    assert result["frame"]["id"] == "5" and result["frame"]["data"] == "a\nb"
    assert result["split"] == {"frames": ["a", "b"], "rest": "c"}


async def test_a_cursor_ahead_of_the_log_is_surfaced_as_a_reset(
    blank: Any, account: str, technician: Client
) -> None:
    made = await technician.create(problem_summary="in the fresh snapshot")
    await blank.evaluate(
        OPEN.replace("url, token, signal", "url, token, lastEventId: 999999999, signal"),
        {"url": "/v1/escalations/stream", "token": engineer_token(account)},
    )
    await browser_support.wait_for_js(blank, "log.resets.length === 1")
    (reset,) = await blank.evaluate("log.resets")
    assert reset["type"] == "reset" and reset["n"] == 1
    later = await technician.create(problem_summary="after the reset")
    await browser_support.wait_for_js(blank, f"log.events.some(e => e.id === {later.id!r})")
    await blank.evaluate("window.ctl.abort()")
    events = await blank.evaluate("log.events")
    # Counted from the reset's cursor (not the bogus one): later events are delivered.
    assert all(e["sequence"] > reset["sequence"] for e in events)
    assert await blank.evaluate("window.handle.lastEventId()") == events[-1]["sequence"]
    assert made.id not in [e["id"] for e in events if e["type"] == "created"]


# A token that expires mid-stream: the gateway's `event: error` frame carries
# UNAUTHENTICATED. Retrying cannot fix it; the stream asks for a fresh token once (as for
# a 401), then fails for good instead of reconnecting forever with a dead token.
UNAUTHENTICATED_MID_STREAM = """async () => {
    const { openStream } = await import('/static/stream.js');
    const enc = new TextEncoder();
    const frames = [
        'id: 1\\nevent: snapshot\\ndata: {"sequence":"1","snapshot":[]}\\n\\n',
        'event: error\\ndata: {"code":"UNAUTHENTICATED","message":"token expired"}\\n\\n',
    ];
    let connections = 0;
    const fakeFetch = async (url, init) => {
        connections += 1;
        const body = new ReadableStream({
            start(controller) {
                for (const f of frames) controller.enqueue(enc.encode(f));
                controller.close();
            },
        });
        return new Response(body, { status: 200, headers: {'content-type': 'text/event-stream'} });
    };
    const states = [];
    let failure = null;
    const handle = openStream({
        url: '/x', getToken: () => 't', fetch: fakeFetch, initialDelayMs: 10, maxDelayMs: 20,
        onState: (s, info) => {
            states.push(s);
            if (s === 'failed') failure = {status: info.error.status, code: info.error.body.code};
        },
    });
    await Promise.race([handle.done, new Promise(r => setTimeout(r, 3000))]);
    return { states, failure, connections, final: handle.state() };
}"""


async def test_an_unauthenticated_error_frame_fails_the_stream_instead_of_retrying(
    blank: Any,
) -> None:
    result = await blank.evaluate(UNAUTHENTICATED_MID_STREAM)
    assert result["final"] == "failed", result
    assert result["failure"] == {"status": 401, "code": "UNAUTHENTICATED"}, result
    assert "reconnecting" not in result["states"], result
    assert result["connections"] == 2, result  # the first, then one with a fresh token
