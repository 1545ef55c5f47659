"""The paper's reported numbers (MMR-AD, arXiv 2604.10971, Tables 4 and 5) as ``reported`` entries.

The tables ship as package data (``paper/table4.csv``, ``paper/table5.csv``: one line per model,
subdataset and metric, the ``detection`` and ``localization`` cells as printed, in percent with one
decimal). They are the machine-readable transcription of the paper's text kept beside the project
(``shared/paper/``); ``tests/test_reference_table.py`` checks every shipped cell against that copy.

A localization cell the paper does not report (AnomalyGPT outputs masks, not boxes) is empty in the
CSV and ``None`` here: it is shown as "not reported", never as 0.

The leaderboard trusts a ``reported`` row only when it equals the row this module builds
(:func:`check_reported`): a hand-edited or invented reported row is shown as unverified.

``python -m mmrbench.leaderboard.reference RESULTS_DIR`` (re)writes ``RESULTS_DIR/reported/``.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, cast

from mmrbench import PROTOCOL
from mmrbench.results import SCHEMA_VERSION
from mmrbench.scoring import METRICS  # one definition of the metric names: the scorer's

SUBDATASETS = ("MVTecAD", "VisA", "MVTec3D", "MPDD")
#: groups as the paper's Table 4 orders them, then model-card kinds the paper has no group for
KINDS = ("commercial", "open-source", "full-shot", "ours", "task-specific")
ABLATION = "ablation"
KIND_TITLES = {
    "commercial": "Commercial MLLMs",
    "open-source": "Open-source MLLMs",
    "full-shot": "Full-shot anomaly detectors (test-set oracle threshold; not part of the MLLM comparison)",
    "ours": "Anomaly-R1 (the paper's model)",
    "task-specific": "Task-specific anomaly models",
    "submitted": "Submitted runs",
    "mmad-published": "MMAD's published results (github.com/jam-cc/MMAD all_result/, mmad-compatible scoring)",
    "baseline": "Chance level (a seeded uniform option letter; not a model)",
    ABLATION: "Anomaly-R1 ablations",
}
#: the benchmark the paper's rows were measured on (their board)
PAPER_BENCHMARK = "MMR-AD test (paper)"
NOT_REPORTED = "not reported"

SOURCE = {
    "paper": "Yao et al., MMR-AD: A Large-Scale Multimodal Dataset for Benchmarking General Anomaly Detection "
             "with Multimodal Large Language Models, CVPR 2026, arXiv:2604.10971",
    "cell_format": "detection and localization in percent as printed; null localization = not reported",
}

#: shipped ablation recipes (baselines/anomaly-r1/ablations/<name>.toml, and the full recipe) -> Table-5 row
ABLATION_RECIPES = {
    "answer-only-sft": "w/o Reasoning Data", "answer-only-grpo": "w/o Reasoning Data",
    "no-reference-sft": "w/o Normal Reference Image", "no-reference-grpo": "w/o Normal Reference Image",
    "no-cold-start-grpo": "w/o CoT Cold-Start",
    "no-rl-sft": "w/o Reinforcement learning", "sft": "w/o Reinforcement learning",
    "no-contrastive-grpo": "w/o Contrastive Sampling",
    "grpo": "Anomaly-R1-7B",
    "domain-knowledge-sft": "+ Domain Knowledge", "domain-knowledge-grpo": "+ Domain Knowledge",
}

_NUM_RE = re.compile(r"^\d{1,3}\.\d$")


@dataclass(frozen=True)
class ReferenceRow:
    """One model row of Table 4 or 5: ``cells[(subdataset, metric)] = (detection, localization)``
    as the printed strings (localization ``None`` when the paper reports none)."""

    table: int
    group: str
    name: str
    subdatasets: tuple[str, ...]
    cells: dict[tuple[str, str], tuple[str, str | None]]
    note: str

    @property
    def slug(self) -> str:
        return f"table{self.table}-{slugify(self.name)}"

    @property
    def has_localization(self) -> bool:
        return any(loc is not None for _, loc in self.cells.values())


def pct(cell: str) -> float:
    """``"88.8"`` -> 0.888, by exact decimal division (the same float every time)."""
    if not _NUM_RE.match(cell):
        raise ValueError(f"not a percent cell: {cell!r}")
    return float(Decimal(cell) / 100)


def slugify(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.replace("\u2020", " domain knowledge").lower()).strip("-")
    return s or "model"


def parse_table(text: str, table: int) -> dict[str, ReferenceRow]:
    """Rows of one paper CSV in printed order. Every cell must be a one-decimal percent, a model must
    have every (subdataset, metric) once, and a missing localization is allowed only as a whole row."""
    raw: dict[str, dict[str, Any]] = {}
    for line, rec in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        if int(rec["table"]) != table:
            raise ValueError(f"table{table}.csv:{line}: table {rec['table']!r}")
        row = raw.setdefault(rec["model"], {"group": rec["group"], "cells": {}, "subs": [], "note": set()})
        key = (rec["subdataset"], rec["metric"])
        if rec["metric"] not in METRICS or key in row["cells"]:
            raise ValueError(f"table{table}.csv:{line}: unexpected or repeated cell {key}")
        pct(rec["detection"])
        loc = rec["localization"] or None
        if loc is not None:
            pct(loc)
        row["cells"][key] = (rec["detection"], loc)
        if rec["subdataset"] not in row["subs"]:
            row["subs"].append(rec["subdataset"])
        if rec.get("note"):
            row["note"].add(rec["note"])
    out = {}
    for name, r in raw.items():
        subs = tuple(r["subs"])
        if set(r["cells"]) != {(s, m) for s in subs for m in METRICS}:
            raise ValueError(f"table{table}.csv: row {name!r} lacks cells")
        if len({loc is None for _, loc in r["cells"].values()}) > 1:
            raise ValueError(f"table{table}.csv: row {name!r} reports localization for some cells only")
        out[name] = ReferenceRow(table, r["group"], name, subs, r["cells"], "; ".join(sorted(r["note"])))
    return out


@functools.lru_cache(maxsize=None)
def _load(table: int) -> dict[str, ReferenceRow]:
    text = resources.files("mmrbench.leaderboard").joinpath("paper", f"table{table}.csv").read_text(encoding="utf-8")
    return parse_table(text, table)


def table4() -> dict[str, ReferenceRow]:
    return _load(4)


def table5() -> dict[str, ReferenceRow]:
    return _load(5)


def all_rows() -> list[ReferenceRow]:
    return [*table4().values(), *table5().values()]


def reference_entry(row: ReferenceRow) -> dict[str, Any]:
    """The ``result.json`` of one paper row (provenance ``reported``)."""
    metrics: dict[str, Any] = {}
    cells: dict[str, dict[str, dict[str, str | None]]] = {}
    for sub in row.subdatasets:
        det = {m: pct(row.cells[(sub, m)][0]) for m in METRICS}
        # has_localization: every localization cell of the row is a number string
        loc = {m: pct(cast(str, row.cells[(sub, m)][1])) for m in METRICS} if row.has_localization else None
        metrics[sub] = {"det": det, "loc": loc}
        cells[sub] = {m: {"detection": row.cells[(sub, m)][0], "localization": row.cells[(sub, m)][1]}
                      for m in METRICS}
    return {
        "schema_version": SCHEMA_VERSION,
        "protocol": {"name": PROTOCOL, "prompt_variant": "default", "iou_threshold": 0.1},
        "model": {"name": row.name, "kind": row.group},
        "dataset": {"name": "MMR-AD", "manifest_sha256": None, "split": "test", "subdatasets": list(row.subdatasets)},
        "metrics": {"iou_threshold": 0.1, "subdatasets": metrics},
        "predictions_sha256": None,
        "harness": {},
        "date": None,
        "provenance": "reported",
        "notes": f"Reported in the MMR-AD paper (Table {row.table}); not re-scorable."
                 + (f" {row.note}." if row.note else ""),
        "reference": {**SOURCE, "table": f"Table {row.table}", "group": row.group, "row": row.name,
                      "note": row.note or None, "cells": cells},
    }


def find_row(result: dict[str, Any]) -> ReferenceRow | None:
    """The shipped row a reported result claims to be (by its ``reference.table`` and model name)."""
    raw = result.get("reference")
    ref: dict[str, Any] = raw if isinstance(raw, dict) else {}
    name = (result.get("model") or {}).get("name")
    tables = {"Table 4": table4(), "Table 5": table5()}
    wanted = [tables[ref["table"]]] if ref.get("table") in tables else list(tables.values())
    for t in wanted:
        if name in t:
            return t[name]
    return None


def check_reported(result: dict[str, Any]) -> tuple[ReferenceRow | None, list[str]]:
    """(row, reasons): reasons is empty exactly when ``result`` equals the shipped row's entry in
    model, dataset, metrics and the transcribed cells."""
    row = find_row(result)
    name = (result.get("model") or {}).get("name")
    if row is None:
        return None, [f"not a row of the paper's tables: {str(name)[:80]!r} is not in the shipped Table 4 or 5"]
    want = reference_entry(row)
    reasons = []
    for key in ("model", "dataset", "provenance"):
        if result.get(key) != want[key]:
            reasons.append(f"{key} differs from the shipped Table {row.table} row")
    got_m = (result.get("metrics") or {}).get("subdatasets") or {}
    want_m = want["metrics"]["subdatasets"]
    if set(got_m) != set(want_m):
        reasons.append(f"subdatasets {sorted(map(str, got_m))} differ from the paper's {sorted(want_m)}")
    for sub in want_m:
        for part in ("det", "loc"):
            w, g = want_m[sub][part], ((got_m.get(sub) or {}) if isinstance(got_m.get(sub), dict) else {}).get(part)
            if w is None or g is None:
                if (w is None) != (g is None):
                    reasons.append(f"{sub} {part}: the paper reports {'none' if w is None else 'values'}")
                continue
            for m in METRICS:
                if g.get(m) != w[m]:
                    reasons.append(f"{sub} {part}.{m} is {g.get(m)!r}, the paper's Table {row.table} says {w[m]!r}")
    if (result.get("reference") or {}).get("cells") != want["reference"]["cells"]:
        reasons.append(f"reference.cells differ from the shipped Table {row.table}")
    if len(reasons) > 4:
        reasons = reasons[:4] + [f"(+{len(reasons) - 4} more differences)"]
    return row, ["reported row differs from the shipped table: " + r for r in reasons]


def write_reference_entries(results_dir: str | os.PathLike) -> list[Path]:
    """Write one ``reported/table{4,5}-<slug>/result.json`` per paper row; returns the paths written."""
    root = Path(results_dir) / "reported"
    out = []
    for row in all_rows():
        p = root / row.slug / "result.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(reference_entry(row), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        out.append(p)
    return out


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    for path in write_reference_entries(sys.argv[1] if len(sys.argv) > 1 else "results"):
        print(path)
