"""Layers that do not know each other: the import graph between edgekit's top-level parts
(subpackages and root modules), counting every `import` / `from ... import` anywhere in a file,
lazy ones inside functions included, has no cycle. The CLI and __main__ sit above everything
and are left out. (The logic of the repository tool import_cycles.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import edgekit

ROOT = Path(edgekit.__file__).resolve().parent
TOP = ("cli", "__main__")


def _part(module: str) -> str | None:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 and bits[0] == "edgekit" else None


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        dotted = ".".join(rel.parts).removesuffix(".__init__")
        me = _part(dotted)
        if me in (None, *TOP):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            mods: list[str] = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(rel.parts[:-node.level] + ((node.module,) if node.module else ()))
                else:
                    base = node.module or ""
                mods = [base] + [f"{base}.{a.name}" for a in node.names]
            for module in mods:
                part = _part(module)
                if part and part != me and part not in TOP:
                    edges.setdefault(me, set()).add(part)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_and_a_lazy_import(tmp_path: Path) -> None:
    pkg = tmp_path / "edgekit"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("def f():\n    from edgekit.high import g\n")
    (pkg / "high.py").write_text("from edgekit.low.a import f\n")
    (pkg / "cli.py").write_text("import edgekit.high\nimport edgekit.low\n")
    edges = import_graph(pkg)
    assert edges == {"low": {"high"}, "high": {"low"}}
    assert cycles(edges) == [["high", "low"]]


def test_edgekit_has_no_import_cycle_between_its_parts() -> None:
    edges = import_graph()
    assert {"validate", "runtimes", "executors", "remote", "io"} <= set(edges)
    found = cycles(edges)
    assert found == [], "import cycles between edgekit's parts: " + "; ".join(
        " <-> ".join(c) for c in found)


def test_layers_point_downward() -> None:
    """The edges the house issue cut stay cut: runtimes never import validate; the remote
    package and the executors never import the validator; io imports no upper layer."""
    edges = import_graph()
    assert "validate" not in edges.get("runtimes", set())
    assert "validate" not in edges.get("remote", set())
    assert "validate" not in edges.get("executors", set())
    assert not edges.get("io", set()) & {"passes", "runtimes", "targets", "validate"}
    assert edges.get("kinds", set()) == set()
    # top-1 and fidelity are ground-floor helpers (edgekit/metrics.py) that the passes, the int8
    # budget loop, the exporters, the trainer and the validator all use: none of the users below
    # the validator reaches up into it for them
    for part in ("passes", "quant", "targets", "zoo", "pipeline"):
        assert "validate" not in edges.get(part, set()), part
    assert edges.get("metrics", set()) <= {"errors"}
