"""The collaboration RPCs over REST through the real gateway (routes from the protos'
google.api.http options), as curl would call them: JSON per the protobuf mapping, errors
in the gateway's one error shape, nothing of another account visible."""

from __future__ import annotations

import httpx

from server.domain.types import Role
from tests import gateway_support
from tests.gateway_support import assert_error, bearer, create

gateway = gateway_support.gateway
http = gateway_support.http


async def test_transfer_comment_history_reopen_and_users_over_rest(
    http: httpx.AsyncClient, account: str
) -> None:
    erin = bearer(account, Role.ENGINEER, "erin", "Erin Eng")
    sam = bearer(account, Role.ENGINEER, "sam", "Sam Vpn")
    tina = bearer(account, Role.TECHNICIAN, "tina", "Tina Tech")
    users = await http.get("/v1/users", headers=sam)
    assert users.status_code == 200, users.text
    assert [(u["id"], u["role"]) for u in users.json()["users"]] == [("sam", "ROLE_ENGINEER")]
    h = await create(http, account)
    picked = await http.post(f"/v1/escalations/{h['id']}/pickup", headers=erin)
    assert picked.status_code == 200, picked.text

    moved = await http.post(
        f"/v1/escalations/{h['id']}/transfer",
        json={"toUserId": "sam", "note": "Sam knows the VPN"},
        headers=erin,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["handoff"]["pickedUpBy"] == {"id": "sam", "name": "Sam Vpn"}
    unknown = await http.post(
        f"/v1/escalations/{h['id']}/transfer", json={"toUserId": "nobody"}, headers=sam
    )
    assert_error(unknown, 404, "NOT_FOUND")
    not_holder = await http.post(
        f"/v1/escalations/{h['id']}/transfer", json={"toUserId": "erin"}, headers=erin
    )
    assert_error(not_holder, 403, "PERMISSION_DENIED")

    said = await http.post(
        f"/v1/handoffs/{h['id']}/comments",
        json={"body": "It drops every 10 minutes", "requestId": "c-1"},
        headers=tina,
    )
    assert said.status_code == 200, said.text
    assert said.json()["comment"]["author"]["id"] == "tina"
    blank = await http.post(f"/v1/handoffs/{h['id']}/comments", json={"body": " "}, headers=tina)
    assert_error(blank, 400, "INVALID_ARGUMENT")

    resolved = await http.post(
        f"/v1/escalations/{h['id']}/resolve", json={"resolutionNote": "New client"}, headers=sam
    )
    assert resolved.status_code == 200, resolved.text
    reopened = await http.post(
        f"/v1/handoffs/{h['id']}/reopen", json={"reason": "It came back"}, headers=tina
    )
    assert reopened.status_code == 200, reopened.text
    assert reopened.json()["handoff"]["status"] == "HANDOFF_STATUS_OPEN"
    refused = await http.post(
        f"/v1/handoffs/{h['id']}/reopen", json={"reason": "again"}, headers=tina
    )
    assert_error(refused, 409, "FAILED_PRECONDITION")

    history = await http.get(f"/v1/handoffs/{h['id']}/history", headers=tina)
    assert history.status_code == 200, history.text
    types = [e["type"] for e in history.json()["events"]]
    assert types[0] == "EVENT_TYPE_CREATED" and types[-1] == "EVENT_TYPE_REOPENED"
    for kind in ("PICKED_UP", "TRANSFERRED", "COMMENTED", "RESOLVED"):
        assert f"EVENT_TYPE_{kind}" in types
    transferred = next(e for e in history.json()["events"] if e["type"].endswith("TRANSFERRED"))
    assert transferred["note"] == "Sam knows the VPN"
    assert transferred["previousHolder"]["id"] == "erin"


async def test_collaboration_routes_are_isolated_per_account(
    http: httpx.AsyncClient, account: str
) -> None:
    h = await create(http, account)
    await http.get("/v1/users", headers=bearer(account, Role.ENGINEER, "sam"))
    other = f"{account}-other"
    for role in Role:
        outsider = bearer(other, role, "tina")
        for method, path, body in (
            ("POST", f"/v1/handoffs/{h['id']}/comments", {"body": "hi"}),
            ("GET", f"/v1/handoffs/{h['id']}/history", None),
            ("POST", f"/v1/handoffs/{h['id']}/reopen", {"reason": "x"}),
        ):
            response = await http.request(method, path, json=body, headers=outsider)
            assert_error(response, 404, "NOT_FOUND")
            assert account not in response.text
    admin = bearer(other, Role.ADMIN, "adm")
    transfer = await http.post(
        f"/v1/escalations/{h['id']}/transfer", json={"toUserId": "sam"}, headers=admin
    )
    assert_error(transfer, 404, "NOT_FOUND")
    users = await http.get("/v1/users", headers=admin)
    # Only the other account's own staff (its "tina" called as an admin last), never "sam".
    assert [u["id"] for u in users.json()["users"]] == ["adm", "tina"]
    tech_users = await http.get("/v1/users", headers=bearer(account, Role.TECHNICIAN, "tina"))
    assert_error(tech_users, 403, "PERMISSION_DENIED")
