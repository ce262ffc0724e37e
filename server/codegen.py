"""Generates the Python code of the API beside its ``.proto`` files.

The generated modules are committed so that users of the package need no protoc; a test
regenerates into a temporary directory and compares, so stale code fails CI. Only the
API package is generated: ``google/api/*.proto`` (vendored beside it for the
``google.api.http`` option) are imports for protoc, and their Python modules come from
the ``googleapis-common-protos`` package.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

API_DIR = Path("resolutionflow") / "v1"


def generate(proto_root: Path, out_root: Path) -> list[Path]:
    """Compile every API .proto under ``proto_root`` into ``out_root``; return the outputs."""
    from grpc_tools import protoc

    protos = sorted((proto_root / API_DIR).glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {proto_root / API_DIR}")
    (out_root / API_DIR).mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}",
            *(str(p) for p in protos),
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    return sorted(
        p
        for p in (out_root / API_DIR).iterdir()
        if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))
    )


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "protos")
    for path in generate(root, root):
        print(path)
