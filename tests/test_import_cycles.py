"""aicc's own modules import each other without circles.

The graph is read statically (``ast``) from every source file under ``framework/`` (``aicc``),
``passes/`` (``aicc.passes``) and ``backends/`` (``aicc.backends``). Every ``import`` statement
counts wherever it stands: at module level, inside a function (a "lazy" import hides a circle from
the interpreter, not from the reader), and under ``if TYPE_CHECKING:``. An edge goes to the most
specific aicc module a statement names: ``from aicc.quant import modes`` is an edge to
``aicc.quant.modes``, ``from aicc.quant import Encoding`` one to ``aicc.quant`` (its
``__init__``). The parent packages Python imports on the way are not edges: they would make every
package ``__init__`` that re-exports its modules part of a circle.

A circle is reported as its path, each hop with the file and line of the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = {"framework": "aicc", "passes": "aicc.passes", "backends": "aicc.backends"}

#: Circles left on purpose, as the set of modules each one runs through. Empty: keep it so.
ALLOWED_CYCLES: set[frozenset[str]] = set()


def module_files() -> dict[str, Path]:
    """Every aicc module name -> its source file."""
    out = {}
    for folder, package in TREES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is an aicc module."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported aicc module: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [_known(a.name, modules) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node)
                targets = [_known(f"{base}.{a.name}", modules) for a in node.names]
            for target in targets:
                if target is not None and target != module:
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def cycle_path(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest circle through the component's first module (breadth-first), as a path."""
    start, members = component[0], set(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child in members and child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no circle through {start}")  # pragma: no cover


def describe(graph: dict[str, dict[str, int]], modules: dict[str, Path], path: list[str]) -> str:
    hops = [f"{a} -> {b} ({modules[a].relative_to(ROOT)}:{graph[a][b]})"
            for a, b in zip(path, path[1:])]
    return "; ".join(hops)


def find_cycles() -> list[str]:
    """One line per group of modules that import each other: a shortest circle through the
    group, and the whole group when it is larger than that circle."""
    modules = module_files()
    graph = import_graph(modules)
    found = []
    for component in strongly_connected(graph):
        if frozenset(component) in ALLOWED_CYCLES:
            continue
        path = cycle_path(graph, component)
        line = describe(graph, modules, path)
        if len(component) > len(path) - 1:
            line += f" [the circles run through {len(component)} modules: {', '.join(component)}]"
        found.append(line)
    return found


def test_no_import_cycles_among_aicc_modules():
    cycles = find_cycles()
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_the_finder_reports_a_circle_with_its_path():
    """The detector itself: a three-module circle, found through a lazy and a type-only import."""
    graph = {"a": {"b": 3}, "b": {"c": 7}, "c": {"a": 9}, "d": {"a": 1}}
    components = strongly_connected(graph)
    assert components == [["a", "b", "c"]]
    assert cycle_path(graph, components[0]) == ["a", "b", "c", "a"]
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
              "def f():\n    from . import c\n")
    tree = ast.parse(source)
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    modules = {"aicc.x.a": Path(), "aicc.x.b": Path(), "aicc.x.c": Path(), "aicc.x": Path()}
    resolved = {_known(f"{_resolve('aicc.x.a', False, n)}.{a.name}", modules)
                for n in nodes for a in n.names}
    assert resolved == {"aicc.x.b", "aicc.x.c"}
