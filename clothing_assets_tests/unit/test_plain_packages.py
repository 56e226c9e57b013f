"""ml/ and serve/ are plain code: no module in them imports Dagster, at the top or inside a
function, so they can be used and tested without it; ml/ reads no deployment setting either
(the edges read them and pass the values in)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from clothing_assets_tests.support import REPO_ROOT

PACKAGE = REPO_ROOT / "clothing_assets"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules_of(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def test_imported_modules_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from dagster import asset\n")
    assert {"os", "dagster", "dagster.asset"} <= imported_modules(source)


@pytest.mark.parametrize("package", ["ml", "serve"])
def test_no_module_imports_dagster(package):
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            m for m in imported_modules(path) if m.split(".")[0].startswith("dagster")
        )
        for path in modules_of(package)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_ml_reads_no_deployment_setting():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in modules_of("ml")
        if "clothing_assets.settings" in imported_modules(path)
    ]
    assert offenders == []
