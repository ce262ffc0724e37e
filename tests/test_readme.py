"""The README's examples are run, so they cannot rot."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from pathlib import Path

import grpc
from resolutionflow.v1 import escalation_pb2

from server.domain.types import Role
from server.runtime import ServerRuntime
from tests.gateway_support import running_gateway
from tests.processes import REPO, free_port
from tests.support import Client, create_request, token
from tests.webhook_receiver import Receiver

README = (REPO / "README.md").read_text()
BIN = str(Path(sys.executable).parent)


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def block(title: str, language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", section(title), re.S)
    assert match, f"no {language} block under {title}"
    return match.group(1)


def env(server: ServerRuntime, account: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": BIN + os.pathsep + os.environ["PATH"],
        "RF_UPSTREAM": f"127.0.0.1:{server.port}",
        "TECH": token(account, "tina", Role.TECHNICIAN, name="Tina Tech"),
        "ENG": token(account, "erin", Role.ENGINEER, name="Erin Eng"),
    }


async def test_python_client_example_runs(server: ServerRuntime, account: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        block("Using the Python client", "python"),
        cwd=REPO,
        env=env(server, account),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode()
    assert process.returncode == 0, text
    assert "start here:" in text and "resolved at" in text


async def test_grpcurl_recipes_run(server: ServerRuntime, account: str) -> None:
    commands = [
        line.replace("127.0.0.1:50051", f"127.0.0.1:{server.port}")
        for line in block("Debugging with grpcurl", "sh").splitlines()
        if line.startswith(".venv/bin/grpcurl ")
    ]
    assert len(commands) == 5
    outputs = []
    for command in commands:
        streaming = command.endswith("/StreamEscalations")
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            cwd=REPO,
            env=env(server, account),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        if streaming:
            # Follow the stream until its first events arrive, then stop it as a person would.
            text = ""
            while "EVENT_TYPE_CREATED" not in text:
                chunk = await asyncio.wait_for(process.stdout.read(4096), 20)
                assert chunk, text
                text += chunk.decode()
            process.terminate()
            await process.wait()
        else:
            out, _ = await asyncio.wait_for(process.communicate(), 60)
            text = out.decode()
            assert process.returncode == 0, f"{command}\n{text}"
        outputs.append(text)
    listing, described, created, queue, stream = outputs
    assert "resolutionflow.v1.HandoffService" in listing
    assert "rpc PickUpEscalation" in described
    assert "HANDOFF_STATUS_OPEN" in created
    assert "Cannot print" in queue
    assert "EVENT_TYPE_CREATED" in stream


async def run_checked(*command: str, cwd: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_first_session_runs_pasted_in_a_fresh_clone(tmp_path: Path) -> None:
    """The section's lines, in order, in a fresh clone of this commit: nothing under var/,
    no secret, no token. Only the virtualenv is shared (linked), so nothing is reinstalled,
    and the addresses are free ports instead of the defaults."""
    head = (await run_checked("git", "rev-parse", "HEAD", cwd=REPO)).strip()
    clone = tmp_path / "clone"
    await run_checked("git", "clone", "--quiet", "--no-checkout", str(REPO), str(clone), cwd=REPO)
    await run_checked("git", "checkout", "--quiet", head, cwd=clone)
    venv = Path(sys.prefix)  # the virtualenv running these tests, as `make` made it
    (clone / ".venv").symlink_to(venv)
    # `make install` must find the shared .venv up to date rather than reinstall into it.
    assert (venv / ".installed").exists(), f"{venv} was not made by `make install`"
    stamp = (venv / ".installed").stat().st_mtime
    os.utime(clone / "pyproject.toml", (stamp - 60, stamp - 60))

    grpc_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    script = (
        block("A first session", "sh")
        .replace("127.0.0.1:50051", grpc_addr)
        .replace("127.0.0.1:8080", http_addr)
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
    environment |= {"RF_GRPC_ADDR": grpc_addr, "RF_HTTP_ADDR": http_addr, "RF_UPSTREAM": grpc_addr}
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=clone,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # one process group: the server and watch end with it
    )
    assert process.stdout is not None
    text = ""

    def done() -> bool:
        # The last line's stream has shown the queue, and watch has shown the escalation
        # (as CREATED, or in its opening snapshot if it started after the create).
        watched = r"\[HIGH\] \S+ 'Outlook keeps asking for a password' by Tina Tech"
        return "EVENT_TYPE_SNAPSHOT" in text and re.search(watched, text) is not None

    try:
        async with asyncio.timeout(90):
            while not done():
                chunk = await process.stdout.read(4096)
                assert chunk, f"the session ended early:\n{text}"
                text += chunk.decode(errors="replace")
    except TimeoutError:
        raise AssertionError(f"the first session did not get through:\n{text}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    assert "SERVING" in text  # the readiness wait
    assert "resolutionflow.v1.HandoffService" in text  # grpcurl list
    assert "HANDOFF_STATUS_OPEN" in text  # the create, with the technician's token
    assert "Outlook keeps asking for a password" in text
    assert "minted a local engineer token for account acme" in text  # watch
    for failure in ("Unauthenticated", "command not found", "No such file", "Traceback"):
        assert failure not in text, text
    assert (clone / "var" / "jwt-secret").exists()


async def test_node_client_example_runs(
    server: ServerRuntime, technician: Client, account: str
) -> None:
    """The documented command; its packages come from `make tools` here (NODE_PATH), the
    same two that `npm install --prefix clients/node` installs."""
    (command,) = [
        line.replace("127.0.0.1:50051", f"127.0.0.1:{server.port}")
        for line in block("Using the Node.js client", "sh").splitlines()
        if line.startswith("node ")
    ]
    await technician.create(problem_summary="first")
    await technician.create(problem_summary="second")
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=REPO,
        env={**env(server, account), "NODE_PATH": str(REPO / ".tools" / "node_modules")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert len(events) == 3
    assert events[0]["handoff"]["problemSummary"] == "first"
    assert all(re.fullmatch(r"[\d-]+T[\d:.]+Z", e["occurredAt"]) for e in events)
    package = json.loads((REPO / "clients" / "node" / "package.json").read_text())
    makefile = (REPO / "Makefile").read_text()
    for name, version in package["dependencies"].items():
        assert f"{name}@{version.lstrip('^')}" in makefile  # the same majors as `make tools`


async def test_collaboration_grpcurl_recipes_run(server: ServerRuntime, account: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        variables = env(server, account)
        variables["SAM"] = token(account, "sam", Role.ENGINEER, name="Sam Vpn")
        tech = Client(channel, variables["TECH"], account, "tina")
        eng = Client(channel, variables["ENG"], account, "erin")
        sam = Client(channel, variables["SAM"], account, "sam")
        await sam.call("escalations", "ListAccountUsers", escalation_pb2.ListAccountUsersRequest())
        created = await tech.handoffs.CreateHandoff(
            create_request(), metadata=tech.metadata, timeout=30
        )
        variables["HANDOFF"] = created.handoff.id
        await eng.call(
            "escalations",
            "PickUpEscalation",
            escalation_pb2.PickUpEscalationRequest(handoff_id=created.handoff.id),
        )
    commands = [
        line.replace("127.0.0.1:50051", f"127.0.0.1:{server.port}")
        for line in block("Working an escalation together", "sh").splitlines()
        if line.startswith(".venv/bin/grpcurl ")
    ]
    assert len(commands) == 7
    outputs = []
    for command in commands:
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            cwd=REPO,
            env=variables,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, f"{command}\n{out.decode()}"
        outputs.append(out.decode())
    users, transferred, commented, resolved, reopened, history, presence = outputs
    assert "Sam Vpn" in users and "ROLE_ENGINEER" in users
    assert '"id": "sam"' in transferred
    assert "It drops every 10 minutes" in commented
    assert "HANDOFF_STATUS_RESOLVED" in resolved
    assert "HANDOFF_STATUS_OPEN" in reopened
    for kind in ("CREATED", "PICKED_UP", "TRANSFERRED", "COMMENTED", "RESOLVED", "REOPENED"):
        assert f"EVENT_TYPE_{kind}" in history
    assert presence.strip().startswith("{")  # nobody streams here: an empty answer


async def test_collaboration_curl_recipes_run(server: ServerRuntime, account: str) -> None:
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        running_gateway(f"127.0.0.1:{server.port}") as gateway,
    ):
        variables = env(server, account)
        variables["SAM"] = token(account, "sam", Role.ENGINEER, name="Sam Vpn")
        sam = Client(channel, variables["SAM"], account, "sam")
        eng = Client(channel, variables["ENG"], account, "erin")
        tech = Client(channel, variables["TECH"], account, "tina")
        await sam.call("escalations", "ListAccountUsers", escalation_pb2.ListAccountUsersRequest())
        created = await tech.handoffs.CreateHandoff(
            create_request(), metadata=tech.metadata, timeout=30
        )
        variables["HANDOFF"] = created.handoff.id
        await eng.call(
            "escalations",
            "PickUpEscalation",
            escalation_pb2.PickUpEscalationRequest(handoff_id=created.handoff.id),
        )
        text_of = section("Working an escalation together")
        curl_block = re.findall(r"```sh\n(.*?)```", text_of, re.S)[1]
        outputs = []
        for line in curl_block.splitlines():
            if not line.startswith("curl "):
                continue
            command = line.replace("http://127.0.0.1:8080", gateway.url)
            process = await asyncio.create_subprocess_exec(
                "bash",
                "-c",
                command,
                cwd=REPO,
                env=variables,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            assert process.stdout is not None
            if " -sN " in command:  # the stream: until its snapshot, then stop it
                text = ""
                while "event: snapshot" not in text:
                    chunk = await asyncio.wait_for(process.stdout.read(4096), 20)
                    assert chunk, text
                    text += chunk.decode()
                process.terminate()
                await process.wait()
            else:
                out, _ = await asyncio.wait_for(process.communicate(), 60)
                text = out.decode()
                assert process.returncode == 0, f"{command}\n{text}"
            outputs.append(text)
    assert len(outputs) == 8
    users, transferred, commented, resolved, reopened, history, presence, stream = outputs
    assert '"ROLE_ENGINEER"' in users and "Sam Vpn" in users
    assert '"pickedUpBy":{"id":"sam"' in transferred.replace(" ", "")
    assert "It drops every 10 minutes" in commented
    assert "HANDOFF_STATUS_RESOLVED" in resolved
    assert "HANDOFF_STATUS_OPEN" in reopened
    assert "EVENT_TYPE_TRANSFERRED" in history and "EVENT_TYPE_REOPENED" in history
    assert presence.startswith("{")
    assert "event: snapshot" in stream


async def run_webhook_recipes(
    server: ServerRuntime, account: str, lines: list[str], replace: dict[str, str]
) -> list[str]:
    """The Webhooks section's lines for one tool, in order, against a local receiver:
    the create's answer gives $ENDPOINT, an escalation then makes a delivery, whose id
    from the listing is $DELIVERY; the redelivery arrives again with the same id."""
    receiver = await Receiver().start()
    variables = env(server, account)
    variables["ADMIN"] = token(account, "ada", Role.ADMIN, name="Ada Admin")
    outputs = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            tech = Client(channel, variables["TECH"], account, "tina")
            for line in lines:
                command = line.replace("127.0.0.1:8000", f"127.0.0.1:{receiver.port}")
                for old, new in replace.items():
                    command = command.replace(old, new)
                process = await asyncio.create_subprocess_exec(
                    "bash",
                    "-c",
                    command,
                    cwd=REPO,
                    env=variables,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                out, _ = await asyncio.wait_for(process.communicate(), 60)
                assert process.returncode == 0, f"{command}\n{out.decode()}"
                outputs.append(out.decode())
                answer = json.loads(out)
                if "secret" in answer:  # the create
                    variables["ENDPOINT"] = answer["endpoint"]["id"]
                    receiver.secret = answer["secret"]
                    await tech.create(problem_summary="Printer on fire")
                    await receiver.wait_for(lambda r: len(r.received) == 1)
                elif "deliveries" in answer:
                    variables["DELIVERY"] = answer["deliveries"][0]["id"]
            await receiver.wait_for(lambda r: len(r.received) == 2)
    finally:
        await receiver.stop()
    first, again = receiver.received
    assert first.id == again.id == variables["DELIVERY"]
    assert first.verified["type"] == "escalation.created"
    return outputs


def webhook_lines(prefix: str, index: int) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", section("Webhooks"), re.S)
    return [line for line in blocks[index].splitlines() if line.startswith(prefix)]


async def test_webhook_grpcurl_recipes_run(server: ServerRuntime, account: str) -> None:
    lines = webhook_lines(".venv/bin/grpcurl ", 0)
    assert len(lines) == 4
    outputs = await run_webhook_recipes(
        server, account, lines, {"127.0.0.1:50051": f"127.0.0.1:{server.port}"}
    )
    created, listed, deliveries, redelivered = outputs
    assert "whsec_" in created and "Ops channel" in listed
    assert "WEBHOOK_DELIVERY_STATUS_SUCCEEDED" in deliveries
    assert "WEBHOOK_DELIVERY_STATUS_PENDING" in redelivered


async def test_webhook_curl_recipes_run(server: ServerRuntime, account: str) -> None:
    lines = webhook_lines("curl ", 1)
    assert len(lines) == 4
    async with running_gateway(f"127.0.0.1:{server.port}") as gateway:
        outputs = await run_webhook_recipes(
            server, account, lines, {"http://127.0.0.1:8080": gateway.url}
        )
    created, listed, deliveries, redelivered = outputs
    assert "whsec_" in created and "Ops channel" in listed
    assert "WEBHOOK_DELIVERY_STATUS_SUCCEEDED" in deliveries
    assert "WEBHOOK_DELIVERY_STATUS_PENDING" in redelivered
