"""``resolutionflow watch`` tails the queue and resumes by itself across a server restart."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import grpc

from server.domain.types import Role
from tests.processes import REPO, ServerProcess
from tests.support import JWT_SECRET, Client, token


async def test_watch_prints_every_event_once_across_a_restart(
    database_url: str, tmp_path: Path, account: str
) -> None:
    server = ServerProcess(database_url, tmp_path)
    await server.start()
    watch = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resolutionflow_cli",
        "watch",
        "--account",
        account,
        "--upstream",
        server.address,
        cwd=REPO,
        env={**os.environ, "RF_JWT_SECRET": JWT_SECRET},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert watch.stdout is not None
    lines: list[str] = []

    async def read_until(pattern: str) -> None:
        async def loop() -> None:
            while not any(re.search(pattern, line) for line in lines):
                assert watch.stdout is not None
                line = (await watch.stdout.readline()).decode()
                assert line, f"watch exited: {lines}"
                lines.append(line.rstrip("\n"))

        await asyncio.wait_for(loop(), 20)

    try:
        await read_until(r"^#0 SNAPSHOT")
        assert lines[0] == (
            f"-- minted a local engineer token for account {account} (user cli-watch), "
            f"signed with RF_JWT_SECRET and renewed when it expires; pass --token or set "
            "RF_TOKEN to watch as someone else"
        )
        async with grpc.aio.insecure_channel(server.address) as ch:
            tech = Client(ch, token(account, "tech", Role.TECHNICIAN, name="Tina"), account, "tech")
            await tech.create(problem_summary="first problem")
            await read_until(r"^#\d+ CREATED .*first problem")
        await server.kill()
        await read_until(r"disconnected")
        seen_before = [int(line.split()[0][1:]) for line in lines if line.startswith("#")]
        await server.start()
        async with grpc.aio.insecure_channel(server.address) as ch:
            tech = Client(ch, token(account, "tech", Role.TECHNICIAN, name="Tina"), account, "tech")
            second = await tech.create(problem_summary="second problem")
            await read_until(rf"^#\d+ ASSESSMENT_READY \[\w+\] {second.id}")
        # It says that it reconnected, and from where it resumed: the last event it printed.
        resumed = [line for line in lines if line.startswith("-- reconnected")]
        assert resumed == [
            f"-- reconnected to {server.address}; resuming after #{seen_before[-1]}"
        ], lines
        assert lines.index(resumed[0]) < next(
            i for i, line in enumerate(lines) if "second problem" in line
        )
    finally:
        watch.kill()
        await watch.wait()
        await server.stop()
    numbers = [int(line.split()[0][1:]) for line in lines if line.startswith("#")]
    # Snapshot at 0, then every event of both handoffs (created + assessed) exactly once.
    assert numbers == [0, 1, 2, 3, 4]


async def test_watch_says_which_token_it_uses(
    database_url: str, tmp_path: Path, account: str
) -> None:
    server = ServerProcess(database_url, tmp_path)
    await server.start()
    erin = token(account, "erin", Role.ENGINEER, name="Erin")
    env = {k: v for k, v in os.environ.items() if k not in ("RF_JWT_SECRET", "RF_TOKEN")}
    try:
        for extra, args, expected in (
            (
                {"RF_TOKEN": erin},
                [],
                f"-- using the token from RF_TOKEN (user erin, role engineer, account {account}); "
                "not renewed when it expires",
            ),
            (
                {},
                ["--token", erin],
                f"-- using the token from --token (user erin, role engineer, account {account}); "
                "not renewed when it expires",
            ),
        ):
            watch = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "resolutionflow_cli",
                "watch",
                "--account",
                account,
                "--upstream",
                server.address,
                *args,
                cwd=REPO,
                env={**env, **extra, "RF_VAR_DIR": str(tmp_path / "no-secret-here")},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            assert watch.stdout is not None
            try:
                first = await asyncio.wait_for(watch.stdout.readline(), 20)
                second = await asyncio.wait_for(watch.stdout.readline(), 20)
            finally:
                watch.kill()
                await watch.wait()
            assert first.decode().rstrip("\n") == expected
            # The token works: the queue follows (nothing else was needed, no local secret).
            assert second.decode().startswith("#0 SNAPSHOT"), second
            assert not (tmp_path / "no-secret-here").exists()
    finally:
        await server.stop()
