"""Authentication, roles and account isolation, checked on every RPC over a real channel."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from resolutionflow.v1 import escalation_pb2 as esc
from resolutionflow.v1 import escalation_policy_pb2, webhook_pb2
from resolutionflow.v1 import handoff_pb2 as pb

from server.api.interceptors import REQUIRED_ROLES
from server.auth import TokenCodec, TokenVerifier
from server.domain.types import Role
from server.errors import Unauthenticated
from tests.support import JWT_SECRET, Client, fails, token, wait_until


def claims(acct: str, /, **changes: Any) -> dict[str, Any]:
    """A technician's claims; a change to None leaves that claim out."""
    values: dict[str, Any] = {
        "sub": "tech-1",
        "account": acct,
        "role": "technician",
        "name": "Tina Tech",
        "iat": int(time.time()),
        "exp": int(time.time()) + 3600,
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def signed(payload: dict[str, Any], secret: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=algorithm)


# Each builds the authorization header value (None: no header at all) for an account.
BAD_CREDENTIALS: dict[str, Callable[[str], str | None]] = {
    "missing": lambda account: None,
    "other scheme": lambda account: "Token x",
    "scheme only": lambda account: "Bearer",
    "not a jwt": lambda account: "Bearer not-a-jwt",
    "no scheme": lambda account: token(account, "tech-1", Role.TECHNICIAN),
    "wrong signature": lambda account: (
        "Bearer " + signed(claims(account), secret="another-secret-" + "x" * 40)
    ),
    "alg none": lambda account: "Bearer " + jwt.encode(claims(account), "", algorithm="none"),
    "HS256 with the signature stripped": lambda account: (
        "Bearer " + signed(claims(account)).rpartition(".")[0] + "."
    ),
    "HS512 with the right secret": lambda account: (
        "Bearer " + signed(claims(account), algorithm="HS512")
    ),
    "expired": lambda account: "Bearer " + token(account, "tech-1", Role.TECHNICIAN, ttl=-60),
    "no exp": lambda account: "Bearer " + signed(claims(account, exp=None)),
    "no account": lambda account: "Bearer " + signed(claims(account, account=None)),
    "no sub": lambda account: "Bearer " + signed(claims(account, sub=None)),
    "no role": lambda account: "Bearer " + signed(claims(account, role=None)),
    "empty account": lambda account: "Bearer " + signed(claims(account, account="")),
    "account not a string": lambda account: "Bearer " + signed(claims(account, account=7)),
    "unknown role": lambda account: "Bearer " + signed(claims(account, role="superuser")),
    "not yet valid": lambda account: (
        "Bearer " + signed(claims(account, nbf=int(time.time()) + 3600))
    ),
    "RS256 presented to an HS256 server": lambda account: "Bearer " + rs256(claims(account)),
    "oversized": lambda account: "Bearer " + signed(claims(account, name="x" * 5_000)),
}


def rs256(payload: dict[str, Any]) -> str:
    """A token that claims RS256: the server must not even try another algorithm."""
    header = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = base64.urlsafe_b64encode(json.dumps(payload).encode())
    signature = base64.urlsafe_b64encode(b"\x00" * 256)
    return b".".join(part.rstrip(b"=") for part in (header, body, signature)).decode()


@pytest.mark.parametrize("case", list(BAD_CREDENTIALS))
async def test_bad_credentials_are_unauthenticated(
    technician: Client, account: str, case: str
) -> None:
    header = BAD_CREDENTIALS[case](account)
    metadata = () if header is None else (("authorization", header),)
    await technician.create()  # something the token would reveal if it were accepted
    error = await fails(
        technician.handoffs.ListHandoffs(pb.ListHandoffsRequest(), metadata=metadata, timeout=30),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert account not in (error.details() or "")
    # Writes are refused too, and nothing is created.
    await fails(
        technician.handoffs.CreateHandoff(
            pb.CreateHandoffRequest(
                request_id=str(uuid.uuid4()),
                session_id="s",
                intent=pb.HANDOFF_INTENT_ESCALATE,
                problem_summary="should not exist",
            ),
            metadata=metadata,
            timeout=30,
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    reply = await technician.call("handoffs", "ListHandoffs", pb.ListHandoffsRequest())
    assert len(reply.handoffs) == 1


async def test_the_valid_token_of_the_same_claims_is_accepted(
    technician: Client, account: str
) -> None:
    """The control for the cases above: only the defect makes them fail."""
    metadata = (("authorization", "Bearer " + signed(claims(account))),)
    reply = await technician.handoffs.ListHandoffs(
        pb.ListHandoffsRequest(), metadata=metadata, timeout=30
    )
    assert list(reply.handoffs) == []


STAFF_RPCS: dict[str, Callable[[str], Any]] = {
    "ListEscalations": lambda handoff_id: esc.ListEscalationsRequest(),
    "PickUpEscalation": lambda handoff_id: esc.PickUpEscalationRequest(handoff_id=handoff_id),
    "GetHandoffContext": lambda handoff_id: esc.GetHandoffContextRequest(handoff_id=handoff_id),
    "ReleaseEscalation": lambda handoff_id: esc.ReleaseEscalationRequest(handoff_id=handoff_id),
    "ResolveEscalation": lambda handoff_id: esc.ResolveEscalationRequest(
        handoff_id=handoff_id, resolution_note="done"
    ),
    "GetEscalationMetrics": lambda handoff_id: esc.GetEscalationMetricsRequest(),
    "TransferEscalation": lambda handoff_id: esc.TransferEscalationRequest(
        handoff_id=handoff_id, to_user_id="eng-1"
    ),
    "ListAccountUsers": lambda handoff_id: esc.ListAccountUsersRequest(),
}


async def test_a_remembered_token_still_expires_and_a_refused_one_is_not_kept() -> None:
    """The verifier remembers a verified token (no signature check per call) until its
    expiry, which it still checks on every call; a refused token is not remembered."""
    codec = TokenCodec(JWT_SECRET)
    verifier = TokenVerifier(codec)
    short = codec.issue(account="acct", user="u1", role=Role.ENGINEER, ttl_seconds=1)
    expires = jwt.decode(short, options={"verify_signature": False})["exp"]
    assert (await verifier.verify(short)).user_id == "u1"
    assert (await verifier.verify(short)).user_id == "u1"  # remembered
    assert short in verifier._known
    await wait_until(lambda: time.time() >= expires, timeout=5, what="the token's expiry")
    with pytest.raises(Unauthenticated, match="token expired"):
        await verifier.verify(short)
    forged = signed(claims("acct"), secret="x" * 32)
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="invalid token"):
            await verifier.verify(forged)
    assert forged not in verifier._known


@pytest.mark.parametrize("rpc", list(STAFF_RPCS))
async def test_technician_cannot_call_engineer_rpcs(
    technician: Client, engineer: Client, rpc: str
) -> None:
    created = await technician.create()
    await fails(
        technician.call("escalations", rpc, STAFF_RPCS[rpc](created.id)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    after = await engineer.call(
        "handoffs", "GetHandoff", pb.GetHandoffRequest(handoff_id=created.id)
    )
    assert after.handoff.status == pb.HANDOFF_STATUS_OPEN


@pytest.mark.parametrize("role", [Role.ENGINEER, Role.ADMIN])
async def test_staff_may_read_the_queue(client_for: Callable[..., Client], role: Role) -> None:
    reply = await client_for(role).call(
        "escalations", "ListEscalations", esc.ListEscalationsRequest()
    )
    assert reply.sequence == 0


def test_required_roles_cover_exactly_every_rpc() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (pb, esc, webhook_pb2, escalation_policy_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert {m.split("/")[1] for m in methods} == {
        "resolutionflow.v1.HandoffService",
        "resolutionflow.v1.EscalationService",
        "resolutionflow.v1.WebhookService",
        "resolutionflow.v1.EscalationPolicyService",
    }
    assert set(REQUIRED_ROLES) == methods
    for name, roles in REQUIRED_ROLES.items():
        assert roles, f"{name} is open to no role"
        if name.startswith("/resolutionflow.v1.EscalationService/"):
            assert Role.TECHNICIAN not in roles, name
        if name.startswith(
            ("/resolutionflow.v1.WebhookService/", "/resolutionflow.v1.EscalationPolicyService/")
        ):
            assert roles == {Role.ADMIN}, name


async def test_health_needs_no_token(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "resolutionflow.v1.HandoffService", "resolutionflow.v1.EscalationService"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


# --- account isolation ----------------------------------------------------------------


SECRET_SUMMARY = "Account A's confidential problem: payroll server down"


@pytest.fixture
def other_account() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


async def test_another_accounts_handoff_is_not_found_and_reveals_nothing(
    technician: Client,
    client_for: Callable[..., Client],
    account: str,
    other_account: str,
) -> None:
    a = await technician.create(problem_summary=SECRET_SUMMARY)
    # Same user ids in the other account: only the account tells them apart.
    for role, user in ((Role.TECHNICIAN, "tech-1"), (Role.ENGINEER, "eng-1"), (Role.ADMIN, "adm")):
        b = client_for(role, user, acct=other_account)
        for call in (
            b.call("handoffs", "GetHandoff", pb.GetHandoffRequest(handoff_id=a.id)),
            b.call("handoffs", "CancelHandoff", pb.CancelHandoffRequest(handoff_id=a.id)),
        ):
            error = await fails(call, grpc.StatusCode.NOT_FOUND)
            assert account not in (error.details() or "")
            assert SECRET_SUMMARY not in (error.details() or "")
            assert "payroll" not in (error.details() or "")
    after = await technician.call("handoffs", "GetHandoff", pb.GetHandoffRequest(handoff_id=a.id))
    assert after.handoff.status == pb.HANDOFF_STATUS_OPEN


async def test_another_accounts_escalation_cannot_be_touched(
    technician: Client,
    engineer: Client,
    client_for: Callable[..., Client],
    account: str,
    other_account: str,
) -> None:
    open_one = await technician.create(problem_summary=SECRET_SUMMARY)
    held = await technician.create(problem_summary=SECRET_SUMMARY)
    await engineer.call(
        "escalations", "PickUpEscalation", esc.PickUpEscalationRequest(handoff_id=held.id)
    )
    for b in (
        client_for(Role.ENGINEER, "eng-1", acct=other_account),
        client_for(Role.ADMIN, acct=other_account),
    ):
        for rpc in (
            "PickUpEscalation",
            "GetHandoffContext",
            "ReleaseEscalation",
            "ResolveEscalation",
        ):
            for handoff_id in (open_one.id, held.id):
                error = await fails(
                    b.call("escalations", rpc, STAFF_RPCS[rpc](handoff_id)),
                    grpc.StatusCode.NOT_FOUND,
                )
                details = error.details() or ""
                assert account not in details and "eng-1" not in details
                assert SECRET_SUMMARY not in details
    queue = await engineer.call("escalations", "ListEscalations", esc.ListEscalationsRequest())
    assert [h.id for h in queue.escalations] == [open_one.id]
    still_held = await engineer.call(
        "handoffs", "GetHandoff", pb.GetHandoffRequest(handoff_id=held.id)
    )
    assert still_held.handoff.status == pb.HANDOFF_STATUS_PICKED_UP
    assert still_held.handoff.picked_up_by.id == "eng-1"


async def test_another_accounts_lists_hold_nothing_of_this_account(
    technician: Client, engineer: Client, client_for: Callable[..., Client], other_account: str
) -> None:
    await technician.create(problem_summary=SECRET_SUMMARY)
    await technician.create(intent=pb.HANDOFF_INTENT_REASSIGN, problem_summary=SECRET_SUMMARY)
    own = await engineer.call("handoffs", "ListHandoffs", pb.ListHandoffsRequest())
    assert len(own.handoffs) == 2
    for role in (Role.TECHNICIAN, Role.ENGINEER, Role.ADMIN):
        b = client_for(role, "tech-1" if role is Role.TECHNICIAN else None, acct=other_account)
        listed = await b.call("handoffs", "ListHandoffs", pb.ListHandoffsRequest())
        assert list(listed.handoffs) == []
        assert listed.next_page_token == ""
    b_engineer = client_for(Role.ENGINEER, acct=other_account)
    queue = await b_engineer.call("escalations", "ListEscalations", esc.ListEscalationsRequest())
    assert list(queue.escalations) == []
    # Not even A's activity shows through the cursor.
    assert queue.sequence == 0
