"""The package's module-level imports form no circle (docs/METHODS.md §P.2: the algorithm
contract lives with the algorithms, so the trainer imports them and never the other way round).

The graph is read from the sources with ``ast``, so it sees what merely importing in some order
would not: ``if TYPE_CHECKING:`` imports count (a circle that only type checkers follow is still
one layer reaching up into another), and so do the registries' ``import_all`` calls, which import
every module of their package.  Imports inside functions are deferred on purpose and do not
count.  A module's own parent packages are left out: Python runs them before the module.
"""
from __future__ import annotations

import ast
from pathlib import Path

import domainbed_sc

ROOT = Path(domainbed_sc.__file__).parent


def package_sources() -> dict[str, str]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ("domainbed_sc",) + path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path.read_text()
    return out


def is_package(name: str, sources: dict[str, str]) -> bool:
    return any(other.startswith(name + ".") for other in sources)


def module_level(tree: ast.AST):
    """The nodes that run on import: everything outside function bodies."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        yield from module_level(node)


def imported(name: str, node: ast.AST, sources: dict[str, str]) -> list[str]:
    """The package modules one import statement (or ``import_all`` call) imports."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        package = name if is_package(name, sources) else name.rpartition(".")[0]
        base = package.rsplit(".", node.level - 1)[0] if node.level else ""
        base = ".".join(p for p in (base, node.module) if p)
        return [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in sources]
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "import_all":
        skip = {k.value for kw in node.keywords if kw.arg == "skip" for k in kw.value.elts}
        return [m for m in sources if m.rpartition(".")[0] == name
                and m.rpartition(".")[2] not in skip and not m.rpartition(".")[2].startswith("_")]
    return []


def ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the package modules importing it runs (a target's parent packages included)."""
    graph = {}
    for name, source in sources.items():
        targets = {t for node in module_level(ast.parse(source))
                   for m in imported(name, node, sources) for t in {m} | ancestors(m)}
        graph[name] = {t for t in targets if t in sources and t != name} - ancestors(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path that returns to its start, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_package_has_no_import_circle():
    cycle = find_cycle(import_graph(package_sources()))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_a_type_checking_import_back_into_the_trainer_would_be_a_circle():
    """What base.py did before the epoch context moved next to it: the detector must see it."""
    sources = package_sources()
    sources["domainbed_sc.algorithms.base"] += (
        "\nif TYPE_CHECKING:\n    from ..training.trainer import EpochContext\n")
    cycle = find_cycle(import_graph(sources))
    assert cycle is not None and "domainbed_sc.training.trainer" in cycle


def test_registries_and_relative_imports_are_edges():
    graph = import_graph(package_sources())
    algorithms = graph["domainbed_sc.algorithms"]
    assert "domainbed_sc.algorithms.erm" in algorithms  # import_all
    assert "domainbed_sc.algorithms.base" in algorithms  # `from .base import ...`
    assert "domainbed_sc.algorithms._envs" not in algorithms  # import_all skips private modules
    assert "domainbed_sc.algorithms" in graph["domainbed_sc.training.trainer"]
    assert "domainbed_sc.algorithms.context" in graph["domainbed_sc.algorithms.base"]
    erm = graph["domainbed_sc.algorithms.erm"]
    assert "domainbed_sc.algorithms.base" in erm and "domainbed_sc.algorithms" not in erm  # its parent
