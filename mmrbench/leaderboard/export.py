"""``leaderboard.csv`` and ``leaderboard.json``: the board's numbers for plotting elsewhere.

The CSV is long format, one line per (entry, subdataset, metric, part) with the value in percent as
shown on the board and, for runs, its 95 % bootstrap interval; a localization the paper does not
report is an empty value with ``reported = false``, never 0. The JSON is the board itself (benchmarks,
entries, cells as fractions, intervals, per-category intervals) without the viewer's thumbnails and
responses. An MMAD entry's cells (percent already) are lines with ``subdataset`` = its dataset row,
``metric`` = the MMAD column and ``part`` = ``mmad``. Cells are written as data: a spreadsheet formula in a model name is neutralised (a leading
``= + - @`` gets a quote), since people open these files in spreadsheets.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any

from mmrbench.leaderboard.board import METRICS, Board

CSV_COLUMNS = ("benchmark", "benchmark_manifest_sha256", "section", "group", "model", "variant", "status",
               "provenance", "entry", "subdataset", "metric", "part", "value_pct", "ci_low_pct", "ci_high_pct",
               "reported", "reasons")


def _safe(text: Any) -> str:
    s = "" if text is None else str(text)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}"


def render_csv(board: Board) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    names = {b["key"]: b for b in board.benchmarks}
    for e in board.entries:
        b = names[e["benchmark"]]
        if e.get("mmad") is not None:  # MMAD: subdataset = source dataset row, metric = column, percent
            for row in b.get("datasets") or []:
                for col in b.get("columns") or []:
                    v = ((e["mmad"]["rows"].get(row) or {}).get(col)) if row in e["mmad"]["rows"] else None
                    if row not in e["mmad"]["rows"]:
                        continue
                    w.writerow([_safe(b["name"]), b.get("manifest_sha256") or "", e["section"], e["kind"],
                                _safe(e["name"]), _safe(e["variant"]), e["status"], e["provenance"], _safe(e["id"]),
                                _safe(row), _safe(col), "mmad", "" if v is None else f"{v:.1f}", "", "",
                                "false" if v is None else "true", _safe("; ".join(e["reasons"]))])
            continue
        ci = (e.get("ci") or {}).get("subdatasets") or {}
        for sub in b["subdatasets"]:
            if sub not in e["cells"]:
                continue
            for m in METRICS:
                for part in ("det", "loc"):
                    v = e["cells"][sub][m][part]
                    c = (ci.get(sub) or {}).get(part, {}).get(m) or {}
                    w.writerow([_safe(b["name"]), b.get("manifest_sha256") or "", e["section"], e["kind"],
                                _safe(e["name"]), _safe(e["variant"]), e["status"], e["provenance"], _safe(e["id"]),
                                _safe(sub), m, part, _pct(v), _pct(c.get("low")), _pct(c.get("high")),
                                "false" if v is None else "true", _safe("; ".join(e["reasons"]))])
    return buf.getvalue()


def render_json(board: Board) -> str:
    data = board.to_json()
    data["entries"] = [{k: v for k, v in e.items() if k != "samples"} for e in data["entries"]]
    data["skipped"] = list(board.skipped)
    return json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False)
