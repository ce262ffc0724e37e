"""The packages point one way: the command line above everything, the server below the
gateway, clients and benchmark (ARCHITECTURE.md, "Packages").

Read from the source (the AST, imports inside functions included), so a lazy import
cannot hide a dependency that only shows when that code path runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What each package must never import. The domain also stays free of storage and transport,
# so its rules can be read and tested without a database or a wire format.
FORBIDDEN: dict[str, frozenset[str]] = {
    "server": frozenset({"gateway", "clients", "bench", "resolutionflow_cli"}),
    "server/domain": frozenset(
        {"gateway", "clients", "bench", "resolutionflow_cli", "sqlalchemy", "grpc", "google"}
        | {"resolutionflow", "server.db", "server.models", "server.api", "server.streaming"}
    ),
    "gateway": frozenset({"server", "bench", "resolutionflow_cli"}),
    "clients": frozenset({"server", "gateway", "bench", "resolutionflow_cli"}),
    "bench": frozenset({"resolutionflow_cli"}),
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _hits(module: str, forbidden: frozenset[str]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("package", list(FORBIDDEN))
def test_package_imports_point_one_way(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, package
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in files
        for module in sorted(imported_modules(path))
        if _hits(module, FORBIDDEN[package])
    ]
    assert not wrong, "\n".join(wrong)


def test_the_guard_sees_lazy_imports(tmp_path: Path) -> None:
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from gateway.serve import run_gateway\n    import bench.cli\n")
    assert imported_modules(source) == {"gateway.serve", "bench.cli"}
