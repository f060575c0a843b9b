"""nfvha/compute has no import cycle, no module of it imports agent.py (the
wiring), and it imports only the layers below it (protocol, bus). Read from
the source with ast, every import counted — also those under
TYPE_CHECKING, function-level ones and a package's implicit import by its
submodules — so a cycle that only works by import order is caught too.
`graph(package)` and `find_cycle` also check nfvha/verify
(tests/test_verify_has_no_import_cycle.py)."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

PACKAGE = "nfvha.compute"
ALLOWED_OUTSIDE = ("nfvha.protocol", "nfvha.bus", "nfvha.gctune", "nfvha.subreaper")


def root_of(package: str) -> Path:
    return Path(importlib.import_module(package).__file__ or "").parent


def module_name(path: Path, package: str = PACKAGE) -> str:
    rel = path.relative_to(root_of(package)).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([package, *parts])


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports_of(path: Path, modules: set[str], package: str = PACKAGE) -> set[str]:
    """The nfvha modules `path` imports (a name imported from a package that is
    one of its submodules counts as that submodule)."""
    me = module_name(path, package)
    base = me if is_package(path) else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                parent = ".".join(parts[:len(parts) - node.level + 1])
                target = f"{parent}.{node.module}" if node.module else parent
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    found.add(f"{target}.{alias.name}")
    # importing a.b.c runs a/__init__ and a/b/__init__ first
    for name in list(found):
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(2, len(parts)))
    return {n for n in found if n.startswith("nfvha.")} - {me}


def graph(package: str = PACKAGE) -> dict[str, set[str]]:
    files = sorted(root_of(package).rglob("*.py"))
    modules = {module_name(f, package) for f in files}
    return {module_name(f, package): imports_of(f, modules, package) for f in files}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_checker_sees_a_cycle_when_there_is_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    # the real graph has the edges the checker must follow
    g = graph()
    assert "nfvha.compute.session" in g["nfvha.compute.pool"]
    assert "nfvha.compute.pool" in g["nfvha.compute.sources.directory"]
    assert "nfvha.compute.sources" in g["nfvha.compute.sources.directory"]  # its package


def test_nfvha_compute_has_no_import_cycle() -> None:
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()) or [])


def test_nothing_in_nfvha_compute_imports_the_agent() -> None:
    importers = sorted(m for m, deps in graph().items() if "nfvha.compute.agent" in deps)
    assert importers == []


def test_nfvha_compute_imports_only_the_layers_below_it() -> None:
    outside = {(m, d) for m, deps in graph().items() for d in deps
               if not d.startswith(PACKAGE) and d != "nfvha"
               and not d.startswith(ALLOWED_OUTSIDE)}
    assert outside == set()
