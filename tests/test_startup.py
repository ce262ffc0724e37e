"""Start-up conflicts: a busy gRPC port, and several processes migrating one SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.processes import ServerProcess, start_cli


async def test_second_server_on_a_busy_port_exits_with_one_clear_line(tmp_path: Path) -> None:
    first = ServerProcess(f"sqlite+aiosqlite:///{tmp_path / 'first.db'}", tmp_path)
    await first.start()
    try:
        second_dir = tmp_path / "second"
        second_dir.mkdir()
        second = await start_cli(
            second_dir,
            "server",
            *("--grpc-addr", first.address),
            *("--database-url", f"sqlite+aiosqlite:///{second_dir / 'second.db'}"),
        )
        try:
            code = await asyncio.wait_for(second.wait(), 60)
        finally:
            if second.returncode is None:
                second.kill()
                await second.wait()
        output = (second_dir / "cli.log").read_text()
        assert code != 0, output
        lines = [line for line in output.splitlines() if line.startswith("resolutionflow:")]
        assert lines == [
            f"resolutionflow: cannot listen on {first.address}: the address is in use or "
            "not available (is another server running on this port?)"
        ], output
        assert "Traceback" not in output
        # The first server still owns the port and answers.
        await first.wait_serving(10)
    finally:
        await first.stop()


async def test_processes_migrating_one_fresh_sqlite_file_at_once_all_succeed(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    dirs = [tmp_path / f"p{i}" for i in range(4)]
    for d in dirs:
        d.mkdir()
    # Two servers (which migrate on start) and four `db upgrade`s, all at once.
    servers = [ServerProcess(url, tmp_path) for _ in range(2)]
    procs = [await start_cli(d, "db", "upgrade", "--database-url", url) for d in dirs]
    try:
        started = asyncio.gather(*(s.start(timeout=90) for s in servers))
        codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 90)
        await started
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        for server in servers:
            await server.stop()
    logs = "\n".join((d / "cli.log").read_text() for d in dirs)
    assert codes == [0] * len(procs), logs
