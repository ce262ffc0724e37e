"""The README's examples are run, so they cannot rot."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from server.domain.types import Role
from server.runtime import ServerRuntime
from tests.processes import REPO
from tests.support import token

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
        if line.startswith("grpcurl ")
    ]
    assert len(commands) == 5
    outputs = []
    for command in commands:
        streaming = command.endswith("/StreamEscalations")
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
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
