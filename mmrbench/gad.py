"""General-AD (cross-dataset) view: the source x model matrix of det/loc accuracy with intervals.

A GAD study trains on some sources and evaluates on sources never seen (``mmrbench data split
--train/--test`` or ``--leave-one-source-out``), then runs ``mmrbench eval`` once per model and
test set. This module gathers those run folders (or bare ``result.json`` files) and lays their
per-subdataset macro det/loc accuracy out as one row per source and one column per model.

Intervals are the leaderboard's percentile bootstrap (images resampled within categories,
:mod:`mmrbench.leaderboard.stats`), recomputed from the run's predictions when the run folder has
them and its manifest can be found; else taken from a ``ci`` block stored in the result; else the
cell shows the point value alone. A source the model was trained on (``dataset.train_sources`` or
``train_subdatasets`` in the result, as :func:`mmrbench.data.splits.write_split` records them) is
marked, because it is not a general-AD cell.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mmrbench.errors import MMRBenchError


@dataclass
class Cell:
    det: float
    loc: float
    det_ci: tuple[float, float] | None = None
    loc_ci: tuple[float, float] | None = None
    n: int | None = None
    seen: bool = False  # the model trained on this source
    run: str = ""


@dataclass
class Matrix:
    sources: list[str]
    models: list[str]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"sources": self.sources, "models": self.models, "notes": self.notes,
                "cells": [{"source": s, "model": m, "det_accuracy": c.det, "loc_accuracy": c.loc,
                           "det_ci": list(c.det_ci) if c.det_ci else None,
                           "loc_ci": list(c.loc_ci) if c.loc_ci else None, "n": c.n, "seen_in_training": c.seen,
                           "run": c.run}
                          for (s, m), c in sorted(self.cells.items())]}


def find_results(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """result.json files: given directly, in a run folder, or anywhere below a folder."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif (p / "result.json").is_file():
            out.append(p / "result.json")
        elif p.is_dir():
            found = sorted(p.rglob("result.json"))
            if not found:
                raise MMRBenchError(f"{p}: no result.json below this folder")
            out += found
        else:
            raise MMRBenchError(f"{p}: not found (expected a run folder, a result.json or a folder of runs)")
    seen: set[Path] = set()
    unique: list[Path] = []
    for f in out:  # first occurrence of each resolved file, in order
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(f)
    return unique


def _intervals(result: dict, path: Path, manifest, stores, resamples: int, seed: int) -> tuple[dict, str | None]:
    """{sub: {"det": (lo, hi), "loc": (lo, hi)}} and a note when none could be computed."""
    from mmrbench.leaderboard.verify import find_manifest, find_predictions, load_predictions

    run_dir = path.parent
    pred = find_predictions(run_dir)
    sha = (result.get("dataset") or {}).get("manifest_sha256") or ""
    if pred is not None:
        mp = find_manifest(sha, manifest=manifest, stores=[*stores, run_dir, run_dir.parent])
        if mp is not None and mp.is_file():
            from mmrbench.data.manifest import read_manifest
            from mmrbench.leaderboard.stats import bootstrap_ci, per_image_counts
            from mmrbench.leaderboard.verify import decisions_for, scored_samples

            man = read_manifest(mp, check_files=False)
            if man.sha256 == sha:
                samples = scored_samples(result, man)
                per = per_image_counts(samples, decisions=decisions_for(result, samples, load_predictions(pred)[0]))
                ci = bootstrap_ci(per, resamples=resamples, seed=seed)
                return {s: {p: (v[p]["accuracy"].low, v[p]["accuracy"].high) for p in ("det", "loc")}
                        for s, v in ci.items()}, None
    stored = (result.get("ci") or {}).get("subdatasets") if isinstance(result.get("ci"), dict) else None
    if isinstance(stored, dict):
        try:
            return {s: {p: (float(v[p]["accuracy"]["low"]), float(v[p]["accuracy"]["high"])) for p in ("det", "loc")}
                    for s, v in stored.items()}, None
        except (KeyError, TypeError, ValueError):
            pass
    why = "no predictions file" if pred is None else "its manifest was not found (pass --manifest or --manifests)"
    return {}, f"{path}: no interval ({why})"


def gad_matrix(paths: Iterable[str | os.PathLike], *, manifest=None, manifest_stores: Iterable = (),
               resamples: int = 1000, seed: int = 0, label: str = "model") -> Matrix:
    from mmrbench.leaderboard.schema import check_result, load_result_json

    files = find_results(paths)
    if not files:
        raise MMRBenchError("no runs given")
    mat = Matrix([], [])
    for f in files:
        result = load_result_json(f)
        check_result(result, str(f))
        model = str((result.get("model") or {}).get("name") or "?") if label == "model" else f.parent.name
        ds = result.get("dataset") or {}
        seen = set(ds.get("train_sources") or ds.get("train_subdatasets") or result.get("train_sources") or [])
        cis, note = _intervals(result, f, manifest, list(manifest_stores), resamples, seed)
        if note:
            mat.notes.append(note)
        for sub, m in ((result.get("metrics") or {}).get("subdatasets") or {}).items():
            try:
                det, loc = float(m["det"]["accuracy"]), float(m["loc"]["accuracy"])
            except (KeyError, TypeError, ValueError):
                raise MMRBenchError(f"{f}: metrics.subdatasets.{sub}: no det/loc accuracy") from None
            key = (sub, model)
            if key in mat.cells:
                raise MMRBenchError(f"{f}: '{model}' on {sub} also in {mat.cells[key].run} (one run per model and "
                                    "source; use --label run to show runs as columns)")
            ci = cis.get(sub, {})
            mat.cells[key] = Cell(det, loc, ci.get("det"), ci.get("loc"), m.get("n"), sub in seen, str(f.parent))
            if sub not in mat.sources:
                mat.sources.append(sub)
            if model not in mat.models:
                mat.models.append(model)
    mat.sources.sort()
    return mat


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def render(mat: Matrix, fmt: str = "table") -> str:
    from mmrbench.report import render_rows

    if fmt == "json":
        return json.dumps(mat.to_json(), indent=2)
    rows = []
    for s in mat.sources:
        row: dict[str, str] = {"source": s}
        for m in mat.models:
            c = mat.cells.get((s, m))
            if c is None:
                row[m] = "-"
                continue
            det = _pct(c.det) + (f" [{_pct(c.det_ci[0])}, {_pct(c.det_ci[1])}]" if c.det_ci else "")
            loc = _pct(c.loc) + (f" [{_pct(c.loc_ci[0])}, {_pct(c.loc_ci[1])}]" if c.loc_ci else "")
            row[m] = f"{det} / {loc}" + (" *" if c.seen else "")
        rows.append(row)
    text = render_rows(rows, fmt)
    foot = ["det / loc accuracy (%), macro over categories; [95% bootstrap interval, images resampled within categories]"]
    if any(c.seen for c in mat.cells.values()):
        foot.append("* the model trained on this source: not a general-AD cell")
    foot += mat.notes
    return text + "\n\n" + "\n".join(foot)
