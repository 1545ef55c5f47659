"""The layering rules of docs/architecture.md, checked on the source (``tools/import_graph.py``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _graph(level: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "import_graph.py"), "--level", level],
                          capture_output=True, text=True, timeout=120)


def test_no_import_cycle_among_packages():
    done = _graph("package")
    assert done.returncode == 0, done.stdout


def test_no_import_cycle_among_modules():
    """Lazy imports inside functions count: they hide a cycle from Python, not from a reader."""
    done = _graph("module")
    assert done.returncode == 0, done.stdout


def test_vision_parts_import_no_other_package():
    """data, baselines and adapters use vision; vision uses only errors, geometry and hashing."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import import_graph
    finally:
        sys.path.pop(0)
    g = import_graph.graph("package")
    assert g["mmrbench.vision"] <= {"mmrbench.errors", "mmrbench.geometry", "mmrbench.hashing"}
    assert "mmrbench.baselines" not in g["mmrbench.data"]


def _mmrbench_files():
    return sorted((REPO / "mmrbench").rglob("*.py"))


def test_no_module_imports_another_modules_private_names():
    import ast
    bad = []
    for p in _mmrbench_files():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmrbench"):
                names = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if names:
                    bad.append(f"{p.relative_to(REPO)}:{node.lineno}: {node.module} {names}")
    assert not bad, "\n".join(bad)


def test_modules_over_400_lines_say_why():
    long = []
    for p in _mmrbench_files():
        text = p.read_text(encoding="utf-8")
        if text.count("\n") > 400:
            head = text[:3000]
            if "over 400 lines" not in head:
                long.append(f"{p.relative_to(REPO)} ({text.count(chr(10))} lines)")
    assert not long, "modules over 400 lines without a reason at the top:\n" + "\n".join(long)
