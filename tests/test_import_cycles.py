"""No import cycle in ``robench/``: the modules' import graph, counting the imports made inside
functions (lazy imports) as well as those at the top, has no loop.

The files are parsed, not imported. An import under ``if TYPE_CHECKING:`` is left out: it never runs
(only a type checker reads it). An import of the ``robench`` package itself is left out too: a
package is always initialised before its modules, so it cannot be half-imported by one of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a folder under ``root``)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skip.update(id(n) for n in ast.walk(inner))
    return skip


def import_graph(root: Path, package: str) -> dict[str, dict[str, int]]:
    """Module -> {imported module of the same package: line of the first such import}."""
    mods = modules(root, package)
    graph: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _type_checking_nodes(tree)
        is_package = path.name == "__init__.py"
        edges: dict[str, int] = {}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # ``from robench import norms`` imports the module robench.norms
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name and target != package:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (each holds a cycle), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def describe(graph: dict[str, dict[str, int]], comp: list[str]) -> str:
    return "\n".join(f"  {a} -> {b} (line {line})" for a in comp for b, line in sorted(graph[a].items()) if b in comp)


def test_robench_has_no_import_cycle_counting_lazy_imports():
    graph = import_graph(REPO, "robench")
    assert len(graph) > 50 and graph["robench.cli"], "the graph was not built"
    found = cycles(graph)
    assert not found, "import cycles in robench/ (lazy imports count):\n" + "\n\n".join(describe(graph, c) for c in found)


@pytest.mark.parametrize("files, expected", [
    # a lazy import inside a function closes the loop
    ({"a.py": "from .b import x\n", "b.py": "def f():\n    from .a import y\n"}, [["pkg.a", "pkg.b"]]),
    # through three modules, absolute and relative, and ``from pkg import module``
    ({"a.py": "import pkg.b\n", "b.py": "from pkg import c\n", "c.py": "def f():\n    from . import a\n"}, [["pkg.a", "pkg.b", "pkg.c"]]),
    # into a subpackage and back up
    ({"a.py": "from .sub.d import x\n", "sub/__init__.py": "", "sub/d.py": "def f():\n    from ..a import y\n"}, [["pkg.a", "pkg.sub.d"]]),
    # not a cycle: an import only a type checker reads, and the package itself
    ({"a.py": "from typing import TYPE_CHECKING\nfrom .b import x\nif TYPE_CHECKING:\n    from .c import z\n",
      "b.py": "import pkg\n", "c.py": "from .a import y\n"}, []),
])
def test_the_check_finds_each_kind_of_cycle(tmp_path, files, expected):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    for rel, text in files.items():
        (tmp_path / "pkg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / rel).write_text(text)
    assert cycles(import_graph(tmp_path, "pkg")) == expected
