"""The HTTP gateway's REST side: a real uvicorn on a free port, the real server behind it.

Every route, its success and each error class, the JSON mapping, the error table and body,
OpenAPI and CORS. Streams are in test_gateway_sse.py.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from server.domain.types import Role
from server.runtime import ServerRuntime
from tests.gateway_support import (
    BAD_REQUEST_TYPE,
    assert_error,
    bearer,
    create,
    handoff_body,
    running_gateway,
    violations,
)
from tests.support import token

# Fixtures (conftest.py is shared; these live beside the helpers).

# ---- handoffs ---------------------------------------------------------------------------


async def test_create_is_201_in_the_protobuf_json_mapping(
    http: httpx.AsyncClient, account: str
) -> None:
    body = handoff_body(notes="Customer is on a laptop")
    tech = bearer(account, Role.TECHNICIAN, "tina", "Tina Tech")
    response = await http.post("/v1/handoffs", json=body, headers=tech)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    handoff = response.json()["handoff"]
    assert response.headers["location"] == f"/v1/handoffs/{handoff['id']}"
    # lowerCamelCase names, enums by name, 64-bit integers as strings, defaults omitted.
    assert handoff["accountId"] == account
    assert handoff["sessionId"] == "session-1"
    assert handoff["intent"] == "HANDOFF_INTENT_ESCALATE"
    assert handoff["status"] == "HANDOFF_STATUS_OPEN"
    assert handoff["priority"] == "PRIORITY_HIGH"
    assert handoff["problemSummary"] == body["problemSummary"]
    assert handoff["stepsTried"] == body["stepsTried"]
    assert handoff["notes"] == "Customer is on a laptop"
    assert handoff["createdBy"] == {"id": "tina", "name": "Tina Tech"}
    assert handoff["sequence"] == "1"
    assert handoff["createdAt"].endswith("Z")
    assert "pickedUpBy" not in handoff and "resolutionNote" not in handoff
    assert "problem_summary" not in handoff

    # Idempotent: the same requestId and body return the first handoff and create nothing.
    again = await http.post("/v1/handoffs", json=body, headers=tech)
    assert again.status_code == 201
    assert again.json()["handoff"]["id"] == handoff["id"]
    # The same requestId with another body is a conflict naming requestId, not the old one.
    reused = await http.post(
        "/v1/handoffs", json={**body, "problemSummary": "something else"}, headers=tech
    )
    error = assert_error(reused, 409, "ALREADY_EXISTS")
    assert "request_id" in violations(error) and handoff["id"] in error["message"]
    listed = await http.get("/v1/handoffs", headers=tech)
    assert [h["id"] for h in listed.json()["handoffs"]] == [handoff["id"]]
    # Without a requestId each call creates.
    body.pop("requestId")
    fresh = [await http.post("/v1/handoffs", json=body, headers=tech) for _ in range(2)]
    assert [r.status_code for r in fresh] == [201, 201]
    assert len({r.json()["handoff"]["id"] for r in fresh} | {handoff["id"]}) == 3


async def test_create_with_bad_fields_is_400_with_field_violations(
    http: httpx.AsyncClient, account: str
) -> None:
    tech = bearer(account, Role.TECHNICIAN)
    response = await http.post(
        "/v1/handoffs",
        json=handoff_body(problemSummary="", sessionId="s" * 129),
        headers=tech,
    )
    body = assert_error(response, 400, "INVALID_ARGUMENT")
    assert body["details"][0]["@type"] == BAD_REQUEST_TYPE
    found = violations(body)
    assert set(found) == {"problem_summary", "session_id"}
    assert "required" in found["problem_summary"]
    # Nothing was created.
    listed = await http.get("/v1/handoffs", headers=tech)
    assert listed.json() == {}


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b"", "body"),
        (b'{"requestId": "r", "colour": "blue"}', "colour"),
        (b'{"priority": "PRIORITY_SOMETIMES"}', "priority"),
        (b'{"stepsTried": [{"description": 5}]}', "stepsTried"),
        (b'{"stepsTried": [{"descr": "x"}]}', "stepsTried[0].descr"),
    ],
)
async def test_malformed_bodies_are_400(
    http: httpx.AsyncClient, account: str, content: bytes, field: str
) -> None:
    response = await http.post(
        "/v1/handoffs",
        content=content,
        headers={**bearer(account, Role.TECHNICIAN), "Content-Type": "application/json"},
    )
    body = assert_error(response, 400, "INVALID_ARGUMENT")
    assert field in violations(body), body


async def test_missing_invalid_or_expired_token_is_401(
    http: httpx.AsyncClient, account: str
) -> None:
    expired = "Bearer " + token(account, "tina", Role.TECHNICIAN, ttl=-60)
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": expired}):
        for method, path in (("GET", "/v1/handoffs"), ("POST", "/v1/escalations/x/pickup")):
            response = await http.request(method, path, headers=headers)
            assert_error(response, 401, "UNAUTHENTICATED")
            assert response.headers["www-authenticate"] == "Bearer"


async def test_wrong_role_is_403(http: httpx.AsyncClient, account: str) -> None:
    handoff = await create(http, account)
    tech = bearer(account, Role.TECHNICIAN)
    for method, path in (
        ("GET", "/v1/escalations"),
        ("POST", f"/v1/escalations/{handoff['id']}/pickup"),
        ("GET", f"/v1/escalations/{handoff['id']}/context"),
        ("GET", "/v1/escalations/metrics"),
    ):
        response = await http.request(method, path, headers=tech)
        body = assert_error(response, 403, "PERMISSION_DENIED")
        assert "requires role" in body["message"]


async def test_get_list_and_cancel(http: httpx.AsyncClient, account: str) -> None:
    tech = bearer(account, Role.TECHNICIAN, "tina", "Tina Tech")
    first = await create(http, account, priority="PRIORITY_LOW")
    second = await create(http, account, intent="HANDOFF_INTENT_REASSIGN")

    got = await http.get(f"/v1/handoffs/{first['id']}", headers=tech)
    assert got.status_code == 200
    assert got.json()["handoff"]["id"] == first["id"]

    page = await http.get("/v1/handoffs", params={"page_size": 1}, headers=tech)
    assert page.status_code == 200
    assert [h["id"] for h in page.json()["handoffs"]] == [second["id"]]  # newest first
    token = page.json()["nextPageToken"]
    rest = await http.get(
        "/v1/handoffs", params={"page_size": 1, "page_token": token}, headers=tech
    )
    assert [h["id"] for h in rest.json()["handoffs"]] == [first["id"]]

    by_intent = await http.get(
        "/v1/handoffs", params={"intent": "HANDOFF_INTENT_REASSIGN"}, headers=tech
    )
    assert [h["id"] for h in by_intent.json()["handoffs"]] == [second["id"]]
    by_priority = await http.get("/v1/handoffs", params={"priority": "LOW"}, headers=tech)
    assert [h["id"] for h in by_priority.json()["handoffs"]] == [first["id"]]

    cancelled = await http.post(f"/v1/handoffs/{first['id']}/cancel", headers=tech)
    assert cancelled.status_code == 200
    assert cancelled.json()["handoff"]["status"] == "HANDOFF_STATUS_CANCELLED"
    open_only = await http.get(
        "/v1/handoffs", params={"status": "HANDOFF_STATUS_OPEN"}, headers=tech
    )
    assert [h["id"] for h in open_only.json()["handoffs"]] == [second["id"]]

    again = await http.post(f"/v1/handoffs/{first['id']}/cancel", headers=tech)
    assert_error(again, 409, "FAILED_PRECONDITION")


async def test_query_errors_are_400_naming_the_parameter(
    http: httpx.AsyncClient, account: str
) -> None:
    tech = bearer(account, Role.TECHNICIAN)
    for params, field in (
        ({"status": "HANDOFF_STATUS_MAYBE"}, "status"),
        ({"intent": "nope"}, "intent"),
        ({"page_size": "lots"}, "page_size"),
        ({"page_size": 2**40}, "page_size"),
        ({"page_size": 500}, "page_size"),  # the server's limit (1-200)
    ):
        response = await http.get("/v1/handoffs", params=params, headers=tech)
        body = assert_error(response, 400, "INVALID_ARGUMENT")
        assert field in violations(body), body


async def test_unknown_and_foreign_handoffs_are_404(http: httpx.AsyncClient, account: str) -> None:
    mine = await create(http, account)
    other_account = f"acct-{uuid.uuid4().hex[:10]}"
    theirs = bearer(other_account, Role.ENGINEER)
    missing = str(uuid.uuid4())
    for method, path in (
        ("GET", f"/v1/handoffs/{missing}"),
        ("GET", f"/v1/handoffs/{mine['id']}"),
        ("POST", f"/v1/handoffs/{mine['id']}/cancel"),
        ("POST", f"/v1/escalations/{mine['id']}/pickup"),
        ("GET", f"/v1/escalations/{mine['id']}/context"),
    ):
        response = await http.request(method, path, headers=theirs)
        body = assert_error(response, 404, "NOT_FOUND")
        assert account not in body["message"]
    not_an_id = await http.get("/v1/handoffs/not-a-uuid", headers=theirs)
    assert "handoff_id" in violations(assert_error(not_an_id, 400, "INVALID_ARGUMENT"))


# ---- escalations ------------------------------------------------------------------------


async def test_escalation_lifecycle(http: httpx.AsyncClient, account: str) -> None:
    handoff = await create(http, account, problemSummary="VPN drops every hour")
    erin = bearer(account, Role.ENGINEER, "erin", "Erin Engineer")
    ed = bearer(account, Role.ENGINEER, "ed", "Ed Engineer")

    queue = await http.get("/v1/escalations", headers=erin)
    assert queue.status_code == 200
    assert [h["id"] for h in queue.json()["escalations"]] == [handoff["id"]]
    assert int(queue.json()["sequence"]) >= 1

    picked = await http.post(f"/v1/escalations/{handoff['id']}/pickup", headers=erin)
    assert picked.status_code == 200, picked.text
    context = picked.json()["context"]
    assert context["handoff"]["status"] == "HANDOFF_STATUS_PICKED_UP"
    assert context["handoff"]["pickedUpBy"] == {"id": "erin", "name": "Erin Engineer"}
    assert context["problemSummary"] == "VPN drops every hour"
    assert context["whatsBeenTried"] == handoff["stepsTried"]
    assert context["startHere"]

    lost = await http.post(f"/v1/escalations/{handoff['id']}/pickup", headers=ed)
    body = assert_error(lost, 409, "FAILED_PRECONDITION")
    assert "Erin Engineer" in body["message"]
    # Picking up what you hold answers with the context again.
    again = await http.post(f"/v1/escalations/{handoff['id']}/pickup", headers=erin)
    assert again.status_code == 200, again.text
    assert again.json()["context"]["handoff"]["pickedUpBy"]["id"] == "erin"
    for action in ("release", "resolve"):
        refused = await http.post(
            f"/v1/escalations/{handoff['id']}/{action}",
            json={"resolutionNote": "x"} if action == "resolve" else None,
            headers=ed,
        )
        message = assert_error(refused, 403, "PERMISSION_DENIED")["message"]
        assert "only its holder, Erin Engineer (erin)" in message

    shown = await http.get(f"/v1/escalations/{handoff['id']}/context", headers=ed)
    assert shown.status_code == 200
    assert shown.json()["context"]["handoff"]["id"] == handoff["id"]

    released = await http.post(f"/v1/escalations/{handoff['id']}/release", headers=erin)
    assert released.status_code == 200
    assert released.json()["handoff"]["status"] == "HANDOFF_STATUS_OPEN"
    assert (await http.post(f"/v1/escalations/{handoff['id']}/pickup", headers=ed)).is_success

    not_holder = await http.post(
        f"/v1/escalations/{handoff['id']}/resolve", json={"resolutionNote": "x"}, headers=erin
    )
    assert_error(not_holder, 403, "PERMISSION_DENIED")
    no_note = await http.post(
        f"/v1/escalations/{handoff['id']}/resolve", json={"resolutionNote": " "}, headers=ed
    )
    assert "resolution_note" in violations(assert_error(no_note, 400, "INVALID_ARGUMENT"))
    bad_note = await http.post(
        f"/v1/escalations/{handoff['id']}/resolve", json={"note": "x"}, headers=ed
    )
    assert "note" in violations(assert_error(bad_note, 400, "INVALID_ARGUMENT"))
    path_in_body = await http.post(
        f"/v1/escalations/{handoff['id']}/resolve",
        json={"handoffId": str(uuid.uuid4()), "resolutionNote": "x"},
        headers=ed,
    )
    assert "handoffId" in violations(assert_error(path_in_body, 400, "INVALID_ARGUMENT"))
    resolved = await http.post(
        f"/v1/escalations/{handoff['id']}/resolve",
        json={"resolutionNote": "Reset the MTU on the router"},
        headers=ed,
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["handoff"]["status"] == "HANDOFF_STATUS_RESOLVED"
    assert resolved.json()["handoff"]["resolutionNote"] == "Reset the MTU on the router"
    assert (await http.get("/v1/escalations", headers=ed)).json().get("escalations", []) == []

    release_resolved = await http.post(f"/v1/escalations/{handoff['id']}/release", headers=ed)
    assert_error(release_resolved, 409, "FAILED_PRECONDITION")


async def test_metrics(http: httpx.AsyncClient, account: str) -> None:
    await create(http, account)
    admin = bearer(account, Role.ADMIN)
    response = await http.get("/v1/escalations/metrics", headers=admin)
    if response.status_code == 501:  # the server side may not be there yet: mapped, not 500
        assert_error(response, 501, "UNIMPLEMENTED")
        return
    assert response.status_code == 200, response.text
    assert response.json()["metrics"]["created"] == 1
    window = await http.get(
        "/v1/escalations/metrics",
        params={"start_time": "2020-01-01T00:00:00Z", "end_time": "2020-01-02T00:00:00+00:00"},
        headers=admin,
    )
    assert window.status_code == 200, window.text
    assert window.json()["metrics"]["startTime"] == "2020-01-01T00:00:00Z"
    assert window.json()["metrics"].get("created", 0) == 0


async def test_metrics_window_must_be_rfc3339(http: httpx.AsyncClient, account: str) -> None:
    response = await http.get(
        "/v1/escalations/metrics",
        params={"start_time": "yesterday"},
        headers=bearer(account, Role.ADMIN),
    )
    assert "start_time" in violations(assert_error(response, 400, "INVALID_ARGUMENT"))


# ---- routing, health, the page, documents -----------------------------------------------


async def test_fixed_paths_are_not_taken_for_ids(http: httpx.AsyncClient, account: str) -> None:
    eng = bearer(account, Role.ENGINEER)
    async with http.stream("GET", "/v1/handoffs/stream", headers=eng) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
    async with http.stream("GET", "/v1/escalations/stream", headers=eng) as response:
        assert response.status_code == 200
    metrics = await http.get("/v1/escalations/metrics", headers=eng)
    assert metrics.status_code in (200, 501)


async def test_unknown_routes_and_methods_use_the_error_body(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/v1/nothing-here"), 404, "NOT_FOUND")
    assert_error(await http.delete("/v1/handoffs"), 405, "UNIMPLEMENTED")


async def test_healthz_and_index(http: httpx.AsyncClient) -> None:
    health = await http.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "SERVING"}
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="queue"' in page.text


async def test_openapi_describes_real_bodies(http: httpx.AsyncClient) -> None:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    schemas = doc["components"]["schemas"]
    create_op = doc["paths"]["/v1/handoffs"]["post"]
    body_ref = create_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref == "#/components/schemas/CreateHandoffRequest"
    request = schemas["CreateHandoffRequest"]
    assert {"requestId", "sessionId", "intent", "priority", "problemSummary", "stepsTried"} <= set(
        request["properties"]
    )
    assert request["properties"]["stepsTried"]["items"] == {"$ref": "#/components/schemas/Step"}
    assert schemas["Priority"]["enum"][-1] == "PRIORITY_URGENT"
    created = create_op["responses"]["201"]["content"]["application/json"]["schema"]
    assert created == {"$ref": "#/components/schemas/CreateHandoffResponse"}
    handoff = schemas["Handoff"]["properties"]
    assert handoff["status"] == {"$ref": "#/components/schemas/HandoffStatus"}
    assert handoff["createdAt"]["format"] == "date-time"
    assert handoff["pickedUpBy"] == {"$ref": "#/components/schemas/UserRef"}
    assert set(schemas["Error"]["required"]) == {"code", "message", "details"}
    for status in ("400", "401", "403", "503"):
        error = create_op["responses"][status]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/Error"}
    assert "422" not in create_op["responses"]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert create_op["security"] == [{"bearerAuth": []}]
    resolve = doc["paths"]["/v1/escalations/{handoff_id}/resolve"]["post"]
    resolve_body = schemas["ResolveEscalationRequestBody"]
    assert resolve["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ResolveEscalationRequestBody"
    )
    assert set(resolve_body["properties"]) == {"resolutionNote"}
    assert resolve_body["required"] == ["resolutionNote"]
    assert resolve_body["properties"]["resolutionNote"]["minLength"] == 1
    # requestId is optional, and what a reuse with another body does is documented.
    assert "requestId" not in request["required"]
    assert "ALREADY_EXISTS" in request["properties"]["requestId"]["description"]
    assert "409" in create_op["responses"]
    for path in (
        "/v1/handoffs/{handoff_id}",
        "/v1/handoffs/{handoff_id}/cancel",
        "/v1/handoffs/stream",
        "/v1/escalations",
        "/v1/escalations/stream",
        "/v1/escalations/metrics",
        "/v1/escalations/{handoff_id}/pickup",
        "/v1/escalations/{handoff_id}/release",
        "/v1/escalations/{handoff_id}/context",
        "/healthz",
    ):
        assert path in doc["paths"], path


async def test_cors_is_off_by_default_and_follows_the_settings(
    http: httpx.AsyncClient, server: ServerRuntime
) -> None:
    origin = "https://desk.example.test"
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization,last-event-id",
    }
    plain = await http.get("/healthz", headers={"Origin": origin})
    assert "access-control-allow-origin" not in plain.headers
    async with (
        running_gateway(f"127.0.0.1:{server.port}", cors_origins=[origin]) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as client,
    ):
        allowed = await client.options("/v1/escalations", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == origin
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        simple = await client.get("/healthz", headers={"Origin": origin})
        assert simple.headers["access-control-allow-origin"] == origin
        other = await client.get("/healthz", headers={"Origin": "https://evil.test"})
        assert "access-control-allow-origin" not in other.headers


async def test_gateway_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.settings import GatewaySettings

    monkeypatch.setenv("RF_CORS_ORIGINS", "https://a.test, https://b.test")
    monkeypatch.setenv("RF_UPSTREAM", "10.0.0.1:5000")
    settings = GatewaySettings()
    assert settings.cors_origins == ["https://a.test", "https://b.test"]
    assert settings.upstream == "10.0.0.1:5000"
    monkeypatch.setenv("RF_CORS_ORIGINS", '["https://c.test"]')
    assert GatewaySettings().cors_origins == ["https://c.test"]
    monkeypatch.delenv("RF_CORS_ORIGINS")
    assert GatewaySettings().cors_origins == []


async def test_query_parameters_bind_by_proto_or_json_name_and_short_enum(
    http: httpx.AsyncClient, account: str
) -> None:
    """The routes come from the google.api.http options: the request's other fields are
    query parameters, by their proto name or their JSON name, enums by full or short name."""
    tech = bearer(account, Role.TECHNICIAN, "tina", "Tina Tech")
    first = await create(http, account, priority="PRIORITY_LOW")
    second = await create(http, account)
    by_json_name = await http.get("/v1/handoffs", params={"pageSize": 1}, headers=tech)
    assert [h["id"] for h in by_json_name.json()["handoffs"]] == [second["id"]]
    rest = await http.get(
        "/v1/handoffs",
        params={"pageSize": 1, "pageToken": by_json_name.json()["nextPageToken"]},
        headers=tech,
    )
    assert [h["id"] for h in rest.json()["handoffs"]] == [first["id"]]
    short = await http.get(
        "/v1/handoffs", params={"status": "open", "priority": "low"}, headers=tech
    )
    assert [h["id"] for h in short.json()["handoffs"]] == [first["id"]]
    bad = await http.get("/v1/handoffs", params={"pageSize": "x"}, headers=tech)
    assert "page_size" in violations(assert_error(bad, 400, "INVALID_ARGUMENT"))
