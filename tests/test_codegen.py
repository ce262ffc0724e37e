"""The committed generated code is exactly what the pinned grpcio-tools makes of the protos."""

from __future__ import annotations

from pathlib import Path

from server.codegen import API_DIR, generate

SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def test_generated_code_is_up_to_date(repo_root: Path, tmp_path: Path) -> None:
    proto_root = repo_root / "protos"
    committed_dir = proto_root / API_DIR
    fresh = generate(proto_root, tmp_path)

    protos = sorted(p.stem for p in committed_dir.glob("*.proto"))
    assert protos, "no .proto files"
    # Every .proto yields its three modules, all written into the temporary directory.
    assert sorted(p.name for p in fresh) == sorted(
        f"{stem}{s}" for stem in protos for s in SUFFIXES
    )
    assert all(p.parent == tmp_path / API_DIR for p in fresh)

    stale = [
        p.name
        for p in fresh
        if not (committed_dir / p.name).is_file()
        or (committed_dir / p.name).read_bytes() != p.read_bytes()
    ]
    assert not stale, f"regenerate with `make proto`: {stale} differ from a fresh generation"

    fresh_names = {p.name for p in fresh}
    orphans = sorted(
        p.name
        for p in committed_dir.iterdir()
        if p.name.endswith(SUFFIXES) and p.name not in fresh_names
    )
    assert not orphans, f"committed generated files without a .proto: {orphans}"


def test_generation_leaves_the_committed_tree_alone(repo_root: Path, tmp_path: Path) -> None:
    committed_dir = repo_root / "protos" / API_DIR
    before = {p.name: p.stat().st_mtime_ns for p in committed_dir.iterdir()}
    generate(repo_root / "protos", tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in committed_dir.iterdir()} == before
