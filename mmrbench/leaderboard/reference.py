"""The paper's reported numbers (MMR-AD, arXiv 2604.10971, Table 4) as ``reported`` leaderboard entries.

Each row keeps the exact ``det/loc`` cell strings it was transcribed from (percent, one decimal) and
the metrics as fractions; a cell that could not be read reliably is ``None`` and listed under
``reference.missing`` rather than guessed. Where the numbers come from (``SOURCE``) is stored with
every entry, so a reader can check them.

Source of the transcription. The paper's own Table 4 (an image in the arXiv HTML) was not reachable
from the development machines; the cells below are transcribed from the Table 1 of a later paper
(VD-DeepStack, Zhao et al.) that reprints the MMR-AD Table-4 rows under the same protocol, cross-checked
three ways: (a) the figures quoted in DESIGN.md (Anomaly-R1 VisA loc 36.4/41.2/77.3, Gemma3-27B MVTecAD
loc accuracy 4.0, PatchCore MVTecAD loc accuracy 73.2) match; (b) every complete row satisfies the
protocol identity loc_acc ~ 1/(1/recall + 1/precision - 1) up to the per-category averaging gap
(tests/test_reference_table.py); (c) that paper's own text states its gains over Anomaly-R1-7B (VisA
+7.2/+11.5, MPDD +7.8/+18.9, mean +4.7/+8.5), which reproduce the Anomaly-R1 cells used here.

Not transcribed (absent from that reprint, or unreadable there): o4-mini, Qwen-QVQ-Max, InternVL3-8B,
InternVL3-38B, Anomaly-R1-7B with domain knowledge (the paper's dagger row), four AnomalyGPT cells
(MVTec3D precision, all of MPDD), Anomaly-R1-7B MPDD recall and precision, and all of Table 5.

``python -m mmrbench.leaderboard.reference RESULTS_DIR`` (re)writes ``RESULTS_DIR/reported/``.
"""
from __future__ import annotations

import json
import os
import re
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from mmrbench import PROTOCOL
from mmrbench.results import SCHEMA_VERSION

SUBDATASETS = ("MVTecAD", "VisA", "MVTec3D", "MPDD")
METRICS = ("accuracy", "recall", "precision")
KINDS = ("commercial", "open-source", "task-specific", "full-shot")
KIND_TITLES = {
    "commercial": "Commercial MLLMs",
    "open-source": "Open-source MLLMs",
    "task-specific": "Task-specific anomaly models",
    "full-shot": "Full-shot anomaly detectors (test-set oracle threshold; not part of the MLLM comparison)",
    "submitted": "Submitted runs",
}

SOURCE = {
    "paper": "Yao et al., MMR-AD: A Large-Scale Multimodal Dataset for Benchmarking General Anomaly Detection "
             "with Multimodal Large Language Models, CVPR 2026, arXiv:2604.10971",
    "table": "Table 4",
    "transcribed_from": "VD-DeepStack (Zhao et al.), Table 1: rows reprinting MMR-AD Table 4 "
                        "(same protocol: IoU >= 0.1, per-category macro average)",
    "cell_format": "det/loc in percent; '-' = not applicable (no boxes); null = not transcribed",
}

# Row name -> (kind, 12 cells in the order MVTecAD, VisA, MVTec3D, MPDD x accuracy, recall, precision).
# None marks a cell that is not transcribed (see the module docstring); the strings are exact copies.
TABLE4: dict[str, tuple[str, tuple[str | None, ...]]] = {
    "Gemini-2.5-pro": ("commercial", (
        "79.4/34.4", "98.4/46.0", "79.0/48.8", "65.7/10.5", "97.2/17.1", "62.7/21.3",
        "75.7/10.9", "90.1/18.3", "83.2/19.9", "62.1/16.3", "92.2/23.2", "60.8/26.7")),
    "GPT-4o": ("commercial", (
        "68.9/8.1", "74.1/12.9", "82.4/16.9", "57.6/3.7", "69.4/5.8", "61.1/9.2",
        "67.8/7.0", "74.0/11.5", "83.4/14.8", "63.1/13.6", "84.3/20.4", "64.3/22.3")),
    "GPT-5": ("commercial", (
        "78.7/41.8", "95.9/64.2", "79.4/53.0", "65.8/18.5", "94.5/31.0", "63.3/30.7",
        "75.0/27.2", "85.3/41.1", "84.1/43.2", "68.4/21.2", "91.9/34.5", "67.0/29.2")),
    "Llama4-Maverick": ("open-source", (
        "76.1/19.9", "83.2/28.4", "83.5/36.2", "63.8/6.7", "71.6/10.3", "66.2/15.4",
        "67.1/6.1", "69.1/9.6", "86.7/13.9", "64.1/10.0", "70.7/12.7", "68.8/18.0")),
    "Gemma3-27B": ("open-source", (
        "74.4/4.0", "99.6/8.5", "74.2/7.0", "58.5/0.5", "98.6/1.4", "57.3/0.9",
        "75.1/0.7", "98.4/1.6", "75.7/1.3", "59.0/3.5", "99.1/7.5", "58.7/5.2")),
    "Qwen2.5-VL-7B": ("open-source", (
        "75.0/8.9", "70.8/12.5", "92.4/20.8", "65.9/2.2", "50.4/3.0", "77.1/8.7",
        "59.9/1.2", "55.1/1.8", "90.9/3.6", "63.6/7.2", "61.2/9.1", "71.7/15.1")),
    "Qwen2.5-VL-72B": ("open-source", (
        "83.9/36.4", "94.4/47.8", "85.6/53.0", "70.0/11.1", "79.1/15.9", "71.0/25.5",
        "71.6/13.3", "75.8/19.2", "86.4/27.0", "67.0/24.7", "77.0/32.4", "71.3/37.9")),
    "InternVL3.5-8B": ("open-source", (
        "76.5/5.4", "81.3/9.7", "85.4/10.6", "67.8/2.2", "66.1/3.3", "72.4/5.5",
        "65.8/1.1", "66.7/1.9", "86.9/2.4", "64.3/4.1", "64.5/5.8", "69.8/8.7")),
    "InternVL3.5-38B": ("open-source", (
        "84.9/7.1", "95.6/13.2", "85.8/12.4", "74.1/1.8", "87.5/3.2", "72.4/3.8",
        "74.4/1.4", "83.8/2.6", "85.6/2.9", "70.2/5.1", "87.5/10.1", "71.0/8.3")),
    "AnomalyGPT-7B": ("task-specific", (
        "85.7/-", "86.5/-", "90.6/-", "72.8/-", "67.6/-", "79.8/-",
        "64.7/-", "68.6/-", None, None, None, None)),
    "Anomaly-R1-7B": ("task-specific", (
        "88.8/66.3", "91.9/74.2", "92.8/84.2", "74.9/36.4", "72.3/41.2", "82.7/77.3",
        "74.6/48.5", "73.8/56.0", "92.8/78.8", "70.8/35.9", None, None)),
    "PaDiM": ("full-shot", (
        "93.4/65.0", "96.2/84.7", "94.8/74.0", "81.5/34.1", "80.6/48.6", "85.2/51.9",
        "82.2/32.4", "97.0/44.8", "84.1/52.8", "74.7/28.1", "96.4/48.2", "72.6/37.4")),
    "PatchCore": ("full-shot", (
        "93.8/73.2", "97.5/82.7", "94.6/86.8", "83.0/44.9", "80.3/51.2", "90.7/78.0",
        "81.4/39.7", "96.6/46.2", "83.5/69.8", "86.3/57.3", "84.1/62.9", "92.3/76.5")),
    "HGAD": ("full-shot", (
        "96.2/73.2", "96.1/86.3", "98.3/82.4", "90.6/52.7", "91.5/64.0", "92.1/75.5",
        "84.5/45.5", "95.4/56.6", "87.6/64.8", "86.5/34.2", "81.8/51.6", "90.2/44.2")),
    "Dinomaly": ("full-shot", (
        "94.1/58.5", "93.2/84.3", "97.8/66.0", "79.8/34.3", "69.8/47.5", "96.0/54.2",
        "82.0/44.3", "93.1/62.8", "86.7/57.1", "87.5/56.0", "88.3/64.7", "91.0/69.0")),
    "INP-Former": ("full-shot", (
        "95.7/59.2", "97.5/84.6", "96.9/66.2", "83.2/36.2", "78.1/51.2", "93.4/53.7",
        "84.8/48.2", "93.2/58.0", "89.3/69.0", "87.9/49.4", "85.1/65.9", "94.2/58.4")),
}

#: rows of the paper's Table 4 / Table 5 that this transcription does not contain
NOT_TRANSCRIBED = ("o4-mini", "Qwen-QVQ-Max", "InternVL3-8B", "InternVL3-38B",
                   "Anomaly-R1-7B (domain knowledge)", "Table 5 (all ablation rows)")

_CELL_RE = re.compile(r"^(\d{1,3}\.\d)/(\d{1,3}\.\d|-)$")


def parse_cell(cell: str) -> tuple[float, float | None]:
    """``"88.8/66.3"`` -> (0.888, 0.663); ``"85.7/-"`` -> (0.857, None). Exact decimal conversion."""
    m = _CELL_RE.match(cell)
    if not m:
        raise ValueError(f"not a det/loc cell: {cell!r}")
    det = float(Decimal(m.group(1)) / 100)
    loc = None if m.group(2) == "-" else float(Decimal(m.group(2)) / 100)
    return det, loc


def slugify(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s or "model"


def reference_entry(name: str) -> dict[str, Any]:
    """The ``result.json`` of one Table-4 row (provenance ``reported``)."""
    kind, cells = TABLE4[name]
    metrics: dict[str, Any] = {}
    cell_strings: dict[str, dict[str, str | None]] = {}
    missing: list[str] = []
    row_has_loc = any(c is not None and not c.endswith("/-") for c in cells)
    for i, sub in enumerate(SUBDATASETS):
        det: dict[str, float | None] = {}
        loc: dict[str, float | None] = {}
        cell_strings[sub] = {}
        for j, m in enumerate(METRICS):
            cell = cells[3 * i + j]
            cell_strings[sub][m] = cell
            if cell is None:
                det[m] = loc[m] = None
                missing.append(f"{sub}.{m}")
                continue
            det[m], loc[m] = parse_cell(cell)
        # a model that never outputs boxes (AnomalyGPT: "-" cells) has no localization at all
        metrics[sub] = {"det": det, "loc": loc if row_has_loc else None}
    return {
        "schema_version": SCHEMA_VERSION,
        "protocol": {"name": PROTOCOL, "prompt_variant": "default", "iou_threshold": 0.1},
        "model": {"name": name, "kind": kind},
        "dataset": {"name": "MMR-AD", "manifest_sha256": None, "split": "test", "subdatasets": list(SUBDATASETS)},
        "metrics": {"iou_threshold": 0.1, "subdatasets": metrics},
        "predictions_sha256": None,
        "harness": {},
        "date": None,
        "provenance": "reported",
        "notes": "Reported in the MMR-AD paper (Table 4); not re-scorable.",
        "reference": {**SOURCE, "row": name, "cells": cell_strings, "missing": missing},
    }


def write_reference_entries(results_dir: str | os.PathLike) -> list[Path]:
    """Write one ``reported/table4-<slug>/result.json`` per row; returns the paths written."""
    root = Path(results_dir) / "reported"
    out = []
    for name in TABLE4:
        p = root / f"table4-{slugify(name)}" / "result.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(reference_entry(name), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        out.append(p)
    return out


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    for path in write_reference_entries(sys.argv[1] if len(sys.argv) > 1 else "results"):
        print(path)
