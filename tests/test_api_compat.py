"""The API only grows: ``buf breaking`` catches a removed or renumbered field."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

BUF = Path(__file__).resolve().parent.parent / ".tools" / "node_modules" / ".bin" / "buf"


def buf_breaking(workdir: Path, against: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", "--against", str(against)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def copies(repo_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    if not BUF.exists():
        pytest.skip("buf is installed by `make tools`")
    copies = []
    for name in ("before", "after"):
        target = tmp_path / name
        shutil.copytree(
            repo_root / "protos", target / "protos", ignore=shutil.ignore_patterns("*.py*")
        )
        shutil.copy(repo_root / "buf.yaml", target / "buf.yaml")
        copies.append(target)
    return copies[0], copies[1]


def test_additive_change_passes(copies: tuple[Path, Path]) -> None:
    before, after = copies
    proto = after / "protos/resolutionflow/v1/handoff.proto"
    proto.write_text(
        proto.read_text().replace(
            "  uint64 sequence = 20;\n", "  uint64 sequence = 20;\n  string extra = 21;\n"
        )
    )
    result = buf_breaking(after, before)
    assert result.returncode == 0, result.stdout + result.stderr


def test_removed_field_fails(copies: tuple[Path, Path]) -> None:
    before, after = copies
    proto = after / "protos/resolutionflow/v1/handoff.proto"
    text = proto.read_text()
    assert "  string notes = 9;\n" in text
    proto.write_text(text.replace("  string notes = 9;\n", ""))
    result = buf_breaking(after, before)
    assert result.returncode != 0
    assert "notes" in result.stdout + result.stderr


def test_gate_holds_todays_protos_against_the_committed_baseline(
    copies: tuple[Path, Path], repo_root: Path
) -> None:
    """The gate `make lint` runs: today's protos pass against the released baseline, and
    the same baseline refuses a removed field (so the gate can fail on main itself)."""
    baseline = repo_root / "protos" / "api-baseline.binpb"
    assert "api-baseline.binpb" in (repo_root / "Makefile").read_text()
    _, after = copies
    assert buf_breaking(after, baseline).returncode == 0
    proto = after / "protos/resolutionflow/v1/handoff.proto"
    proto.write_text(proto.read_text().replace("  string notes = 9;\n", ""))
    result = buf_breaking(after, baseline)
    assert result.returncode != 0, result.stdout
