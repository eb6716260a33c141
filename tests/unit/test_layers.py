"""The package layers, checked from the source: no import cycles, no forbidden arrows.

Walks every ``import`` / ``from … import`` statement (module level, function level and
``TYPE_CHECKING`` blocks alike: a lazy import is still a dependency) of the top-level packages
with :mod:`ast`, without importing anything. The layers (``docs/architecture.md``)::

    core  ←  retrieval, ranking  ←  serving  ←  deployments, training  ←  cluster
    datagen (data generators and importers) sits beside core and imports only core.

A forbidden arrow names both modules and the line, so the fix is obvious.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.source_ast import parse_file

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "datagen", "retrieval", "ranking", "serving", "deployments", "training",
            "cluster")  # fmt: skip

FORBIDDEN: dict[str, set[str]] = {
    "core": {"datagen", "retrieval", "ranking", "serving", "deployments", "training", "cluster",
             "ray.serve"},  # fmt: skip
    "datagen": {"retrieval", "ranking", "serving", "deployments", "training", "cluster"},
    "ranking": {"retrieval", "serving", "deployments", "training", "cluster"},
    "retrieval": {"ranking", "serving", "deployments", "training", "cluster"},
    "serving": {"deployments", "training", "cluster", "ray"},
    "deployments": {"training", "cluster"},
    "training": {"deployments", "cluster"},
}
"""Package → modules (and everything under them) it must not import. Ray Serve is forbidden in
the kernel (the event log may hand its files to Ray Data, lazily), all of Ray in ``serving``
(the request path runs without Ray in tests, offline evaluation and batch jobs)."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import statement in ``path``."""
    tree = parse_file(path)
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((name, node.lineno))
            # `from pkg import submodule` imports the submodule too
            out += [(f"{name}.{a.name}", node.lineno) for a in node.names]
    return out


def _graph() -> dict[str, list[tuple[str, int]]]:
    modules = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            modules[_module_name(path)] = path
    graph: dict[str, list[tuple[str, int]]] = {}
    for name, path in modules.items():
        graph[name] = [(m, line) for m, line in _imports(path) if m in modules or
                       m.split(".")[0] in {"ray"}]  # fmt: skip
    return graph


def test_no_forbidden_arrows() -> None:
    bad = []
    for module, deps in _graph().items():
        top = module.split(".")[0]
        for dep, line in deps:
            if any(dep == f or dep.startswith(f + ".") for f in FORBIDDEN.get(top, ())):
                bad.append(f"{module}:{line} imports {dep}")
    assert not bad, "forbidden imports:\n" + "\n".join(sorted(set(bad)))


def test_no_import_cycles() -> None:
    full = _graph()
    graph = {m: sorted({d for d, _ in deps if d in full}) for m, deps in full.items()}
    # Tarjan's strongly connected components: any component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_exists(package: str) -> None:
    assert (ROOT / package / "__init__.py").exists()
