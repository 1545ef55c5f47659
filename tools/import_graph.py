"""Print the import cycles among mmrbench's packages and modules (exit 1 if there is one).

Every ``import`` / ``from ... import`` in the package is counted, module-level or inside a function:
a lazy import hides a cycle from Python's import machinery but not from a reader, and the layering
rule (docs/architecture.md) is about who may depend on whom. Usage: ``python tools/import_graph.py
[--level package|module]``; ``tests/test_architecture.py`` runs it.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "mmrbench"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("mmrbench"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("mmrbench"):
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def graph(level: str) -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    known = set(files)

    def node(mod: str) -> str | None:
        while mod and mod not in known:
            mod = mod.rpartition(".")[0]
        if not mod:
            return None
        if level == "package":  # a subpackage is one node; a top-level module is its own node
            parts = mod.split(".")
            return ".".join(parts[:2])
        return mod

    g: dict[str, set[str]] = {}
    for mod, path in files.items():
        src = node(mod)
        for imp in imports_of(path):
            dst = node(imp)
            if dst and dst != src and src:
                g.setdefault(src, set()).add(dst)
        g.setdefault(src or "mmrbench", set())
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", choices=("package", "module"), default="module")
    args = ap.parse_args(argv)
    found = cycles(graph(args.level))
    for c in found:
        print("cycle: " + " <-> ".join(c))
    if not found:
        print(f"no import cycle among mmrbench {args.level}s")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
