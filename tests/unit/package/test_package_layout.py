"""The shape of the Python package: no import cycle between its modules, no class in the live
worker too long to read in one sitting (issue 28).

The import graph is built from the source with `ast`, not by importing: every `import` and
`from ... import` of a firebreak module, at module level or inside a function (a lazy import
is still a dependency), except under ``if TYPE_CHECKING:``. Importing ``firebreak.a.b`` is an
edge to ``firebreak.a.b`` only, not to its parent packages (which Python runs first, but which
every module of a package "imports" that way).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE_ROOT = Path(__file__).resolve().parents[3] / "engine"
MAX_LIVE_CLASS_LINES = 300


def modules(root: Path = SOURCE_ROOT) -> dict[str, tuple[Path, bool]]:
    """Module name → (file, is a package's __init__)."""
    found = {}
    for path in sorted((root / "firebreak").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, is_package: bool, known: set[str]) -> set[str]:
    """The firebreak modules that module ``name`` imports, anywhere in it."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit_one(other)
            else:
                visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in known:  # from firebreak.adapters import drive
                    found.add(f"{target}.{alias.name}")
                elif target in known:
                    found.add(target)
        else:
            visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    found.discard(name)
    return found


def import_graph(root: Path = SOURCE_ROOT) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports_of(name, path, is_package, set(known)) for name, (path, is_package) in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                strong(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strong(node)
    return sorted(found)


def describe(cycle: list[str], graph: dict[str, set[str]]) -> str:
    members = set(cycle)
    return "; ".join(f"{name} -> {', '.join(sorted(graph[name] & members))}" for name in cycle)


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50, f"found only {len(graph)} modules under {SOURCE_ROOT}: the walk is broken"
    found = cycles(graph)
    assert not found, "import cycles in engine/firebreak:\n" + "\n".join(describe(c, graph) for c in found)


def test_the_cycle_finder_finds_a_lazy_import_cycle_and_ignores_type_checking(tmp_path: Path) -> None:
    # The check can fail: a cycle made only by an import inside a function is one; an import
    # under `if TYPE_CHECKING:` is not (it never runs).
    package = tmp_path / "firebreak"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from firebreak.sub.b import thing\n")
    (package / "a.py").write_text("def f():\n    from firebreak.sub import b\n")
    (package / "sub" / "b.py").write_text("from ..a import f\nthing = 1\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from firebreak import d\n")
    (package / "d.py").write_text("import firebreak.c\n")
    graph = import_graph(tmp_path)
    assert graph["firebreak.a"] == {"firebreak.sub.b"}
    assert graph["firebreak.sub.b"] == {"firebreak.a"}
    assert graph["firebreak.c"] == set()
    assert cycles(graph) == [["firebreak.a", "firebreak.sub.b"]]


def class_sizes(folder: Path) -> dict[str, int]:
    sizes = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                sizes[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    return sizes


def test_no_class_of_the_live_worker_is_over_300_lines() -> None:
    sizes = class_sizes(SOURCE_ROOT / "firebreak" / "adapters" / "live")
    assert "app.py:LiveWorker" in sizes
    too_long = {name: lines for name, lines in sizes.items() if lines > MAX_LIVE_CLASS_LINES}
    assert not too_long, f"classes over {MAX_LIVE_CLASS_LINES} lines in adapters/live: {too_long}"


@pytest.mark.parametrize("module", ["firebreak.adapters.drive", "firebreak.native", "firebreak.cli"])
def test_the_modules_of_the_old_cycles_import_alone(module: str) -> None:
    # Each side of a cycle broken here imports on its own, in a fresh interpreter.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
