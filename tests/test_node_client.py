"""A second language reads the stream from the .proto files alone (Node.js, @grpc/grpc-js)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil

import pytest

from server.domain.types import Role
from server.runtime import ServerRuntime
from tests.processes import REPO
from tests.support import Client, token

NODE_MODULES = REPO / ".tools" / "node_modules"


async def test_node_reads_the_stream(
    server: ServerRuntime, technician: Client, account: str
) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "@grpc" / "grpc-js").exists():
        pytest.fail("node and @grpc/grpc-js are installed by `make tools`")
    created = await technician.create(problem_summary="seen from Node.js")
    process = await asyncio.create_subprocess_exec(
        node,
        str(REPO / "clients" / "node" / "read-stream.cjs"),
        f"127.0.0.1:{server.port}",
        token(account, "erin", Role.ENGINEER),
        "1",
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    (event,) = [json.loads(line) for line in out.decode().splitlines()]
    assert event["type"] == "EVENT_TYPE_CREATED"
    assert event["sequence"] == "1"
    assert event["handoff"]["id"] == created.id
    assert event["handoff"]["problemSummary"] == "seen from Node.js"
    # Timestamps print as RFC 3339, exactly as the protobuf JSON mapping (and the gateway)
    # prints them, not as {seconds, nanos} objects.
    assert event["handoff"]["createdAt"] == created.created_at.ToJsonString()
    assert event["handoff"]["slaDueAt"] == created.sla_due_at.ToJsonString()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?Z", event["occurredAt"]
    )
    assert event["handoff"]["assessment"]["status"] == "ASSESSMENT_STATUS_PENDING"
