"""The package's size rule: no module of `clothing_assets` is longer than 450 lines and no
function (or method) longer than 60, from its `def` line to its last line, so that each can be
read whole. A module or function that grows past its limit is split at a natural seam."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from clothing_assets_tests.support import REPO_ROOT

PACKAGE = REPO_ROOT / "clothing_assets"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
MODULES = sorted(PACKAGE.rglob("*.py"))


def long_functions(source: str, limit: int) -> list[tuple[str, int, int]]:
    """(qualified name, first line, lines) of every function in `source` longer than `limit`
    lines, nested ones and methods included."""
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lines = child.end_lineno - child.lineno + 1
                    if lines > limit:
                        found.append((name, child.lineno, lines))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def test_the_package_has_modules_to_check():
    assert len(MODULES) > 50
    assert PACKAGE / "resources" / "warehouse.py" in MODULES


def test_long_functions_names_each_function_over_the_limit_with_its_line():
    source = (
        "def short():\n    pass\n\n"
        "class C:\n    def long(self):\n"
        + "".join(f"        x{i} = {i}\n" for i in range(4))
        + "\ndef outer():\n    def inner():\n"
        + "".join(f"        y{i} = {i}\n" for i in range(4))
    )
    assert long_functions(source, limit=4) == [
        ("C.long", 5, 5),
        ("outer", 11, 6),
        ("outer.inner", 12, 5),
    ]
    assert long_functions(source, limit=5) == [("outer", 11, 6)]


@pytest.mark.parametrize("path", MODULES, ids=_relative)
def test_module_is_within_the_line_limit(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, (
        f"{_relative(path)} has {lines} lines, over the limit of {MAX_MODULE_LINES}: split it "
        "at a natural seam (a cohesive group of functions or methods into a module of its own)"
    )


@pytest.mark.parametrize("path", MODULES, ids=_relative)
def test_every_function_is_within_the_line_limit(path: Path):
    offenders = long_functions(path.read_text(), MAX_FUNCTION_LINES)
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines in {_relative(path)}: " + (
        ", ".join(f"{name} (line {line}: {lines} lines)" for name, line, lines in offenders)
    )
