"""The package's import graph has no cycle: no module imports, at its top or inside a function,
a module that imports it back, directly or through a chain. A cycle hidden by a function-level
import still ties the two modules together: neither can change or load without the other."""

from __future__ import annotations

import ast
from pathlib import Path

import clothing_assets

PACKAGE = "clothing_assets"
ROOT = Path(clothing_assets.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The package module `name` refers to: itself, or the package it is a member of."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _under_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """Every module name `tree` imports, anywhere but under `if TYPE_CHECKING:` (annotations
    only: never run)."""
    skipped = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _under_type_checking(node)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    base = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            origin = node.module or ""
            if node.level:
                parent = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                origin = f"{parent}.{origin}" if origin else parent
            names.add(origin)
            names.update(f"{origin}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (a package's own `__init__` excluded: importing
    `a.b` runs `a/__init__.py`, which is not a dependency between sibling modules)."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = set()
        for name in _imported_names(tree, module, path.name == "__init__.py"):
            if not name.startswith(PACKAGE):
                continue
            target = _resolve(name, modules)
            if target is not None and target != module and not module.startswith(f"{target}."):
                targets.add(target)
        graph[module] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each
    sorted: every cycle of the graph lies inside one of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_cycle_finder_sees_a_cycle_through_a_chain():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_imports_are_edges_and_type_checking_ones_are_not():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from clothing_assets.ml.b import X\n"
        "def f():\n    from clothing_assets.ml import c\n"
        "from . import d\n"
    )
    names = _imported_names(tree, "clothing_assets.ml.a", is_package=False)
    assert "clothing_assets.ml.c" in names and "clothing_assets.ml.d" in names
    assert not any(n.startswith("clothing_assets.ml.b") for n in names)


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    graph = import_graph()
    assert "clothing_assets.ml.train" in graph  # the walk found the package's modules
    cycles = find_cycles(graph)
    described = [" <-> ".join(c) for c in cycles]
    assert cycles == [], "import cycles: " + "; ".join(described)
