"""The import graph of ``evaluation/`` has no cycle, function-level imports included.

Every ``import`` and ``from ... import`` statement anywhere in a module (top level, inside
functions, under ``TYPE_CHECKING``) is an edge; a package's ``__init__`` counts as the
package. A cycle is a strongly connected component of more than one module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "evaluation"


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base]) if base else ".".join(up)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                # importing a.b.c imports the packages a and a.b too, but only edges to the
                # named module count: a package __init__ that imports its children is not a cycle
                if target in mods and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of size > 1 (Tarjan 1972), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
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
                    out.append(sorted(component))
    return out


def test_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "evaluation"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from evaluation.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from evaluation import a\n    return a\n")
    (pkg / "c.py").write_text("import evaluation.a\n")
    assert cycles(module_graph(pkg)) == [["evaluation.a", "evaluation.b"]]


def test_no_import_cycle_in_evaluation():
    found = cycles(module_graph())
    assert not found, "import cycles in evaluation/: " + "; ".join(" <-> ".join(c) for c in found)
