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


def test_vision_parts_import_no_other_package():
    """data, baselines and adapters use vision; vision uses only errors and geometry."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import import_graph
    finally:
        sys.path.pop(0)
    g = import_graph.graph("package")
    assert g["mmrbench.vision"] <= {"mmrbench.errors", "mmrbench.geometry"}
    assert "mmrbench.baselines" not in g["mmrbench.data"]
