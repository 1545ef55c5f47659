"""Collect leaderboard entries from a ``results/`` folder: validate, verify, sort onto one board per
benchmark, add CIs and viewer samples.

Layout: every entry is a folder holding ``result.json`` (and, for runs, ``predictions.jsonl`` or
``predictions.jsonl.gz``), anywhere under the results folder: submissions in
``results/<canonical-name>/``, the paper's rows in ``results/reported/table{4,5}-*``.

Trust. Manifests come only from the stores the maintainer names (``--manifests``); nothing found in the
results folder (which holds what submitters sent) is used to verify, to name a benchmark, or to read
images. A thumbnail is embedded only when its path resolves, after symbolic links, inside the data
root of that manifest. A ``reported`` row counts only when it equals the shipped paper table. An entry
that cannot be read (a corrupt ``.gz``, say) is shown unverified with the reason; the board still builds.

Benchmarks. An entry belongs to the benchmark its manifest identifies: the paper's rows to
"MMR-AD test (paper)"; a run to its manifest sha256, named from the ``info.json`` beside that manifest
in the store ("bundled synthetic vN" for :mod:`mmrbench.data.synth`; an ``info.json`` with
``"benchmark": "MMR-AD test (paper)"`` puts a run on the paper's board) or else from the result's
dataset name. Numbers from different benchmarks never share a table or a chart.

The output is plain JSON-able dicts (:class:`Board`), shared by every renderer, so all formats show
the same numbers. Untrusted text (model names, responses) is carried as data here and escaped by each
renderer.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from mmrbench.errors import MMRBenchError
from mmrbench.leaderboard.reference import (ABLATION, ABLATION_RECIPES, KIND_TITLES, KINDS, PAPER_BENCHMARK,
                                            SUBDATASETS, table4, table5)
from mmrbench.leaderboard.mmad import PUBLISHED_KEY as MMAD_PUBLISHED_KEY
from mmrbench.leaderboard.mmad import board_columns, check_mmad_result, is_mmad_result, mmad_entry
from mmrbench.leaderboard.schema import check_result, load_result_json, table_of
from mmrbench.leaderboard.verify import (REPORTED, UNVERIFIED, VERIFIED, decisions_for, detector_threshold,
                                         find_manifest, find_predictions, load_predictions, scored_samples,
                                         verify_entry)
from mmrbench.scoring import METRICS  # one definition of the metric names: the scorer's

log = logging.getLogger(__name__)
DEFAULT_SAMPLES_PER_RUN = 24
THUMB_MAX_SIDE = 192
MAX_RESPONSE_CHARS = 4000
GROUP_ORDER = (*KINDS, "submitted", ABLATION, "mmad-published", "baseline")
PAPER_KEY = "mmr-ad-paper"
#: what reading one entry may raise; any of these makes that entry unverified, never the build fail
ENTRY_ERRORS = (MMRBenchError, OSError, ValueError, EOFError, zlib.error, RecursionError, KeyError, TypeError)


@dataclass
class Board:
    entries: list[dict[str, Any]] = field(default_factory=list)
    benchmarks: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: reason" for files that failed validation

    def benchmark_entries(self, key: str, section: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["benchmark"] == key and (section is None or e["section"] == section)]

    def to_json(self) -> dict[str, Any]:
        return {"metrics": list(METRICS), "benchmarks": self.benchmarks,
                "groups": [{"kind": k, "title": KIND_TITLES[k]} for k in GROUP_ORDER], "entries": self.entries}


def entry_dirs(results_dir: str | os.PathLike) -> list[Path]:
    root = Path(results_dir)
    if not root.is_dir():
        raise MMRBenchError(f"results folder not found: {root}")
    return sorted(p.parent for p in root.rglob("result.json"))


def _cells(metrics: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for sub, block in (metrics.get("subdatasets") or {}).items():
        det = block.get("det") or {}
        loc = block.get("loc") or {}
        out[sub] = {m: {"det": det.get(m), "loc": loc.get(m)} for m in METRICS}
    return out


def _kind(result: dict[str, Any], status: str) -> str:
    """Table-4 group: a reported row's paper group; a run's model-card ``kind`` when it names one,
    else "submitted" (a run never joins the paper's groups by claiming "ours")."""
    k = (result.get("model") or {}).get("kind")
    if status == REPORTED:
        return k if isinstance(k, str) else "submitted"
    return k if k in KINDS and k != "ours" else "submitted"


def ablation_recipe(result: dict[str, Any]) -> str | None:
    """The shipped ablation recipe a run names in ``model.recipe`` (a name or a path ending in it)."""
    r = (result.get("model") or {}).get("recipe")
    if not isinstance(r, str):
        return None
    stem = PurePosixPath(r.replace("\\", "/")).name.removesuffix(".toml")
    return stem if stem in ABLATION_RECIPES else None


def _order_key(e: dict[str, Any]) -> tuple:
    if e.get("mmad") is not None:
        from mmrbench.leaderboard.mmad import order_key
        return order_key(e)
    if e["section"] == "ablation":
        rows = list(table5())
        anchor = e.get("ablation_row")
        pos = rows.index(anchor) if anchor in rows else len(rows)
        return (1, pos, e["provenance"] != "reported", e["name"].lower(), e["id"])
    names = list(table4())
    pos = names.index(e["name"]) if e["provenance"] == "reported" and e["name"] in names else len(names)
    return (0, GROUP_ORDER.index(e["kind"]) if e["kind"] in GROUP_ORDER else len(GROUP_ORDER),
            e["provenance"] != "reported", pos, e["name"].lower(), e["id"])


def _data_url(img, max_side: int = THUMB_MAX_SIDE) -> str:
    im = img.copy()
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def confined_image(manifest, rel: str) -> Path | None:
    """The file ``rel`` names when it resolves (after symbolic links) inside the manifest's data root;
    ``None`` for an absolute path, a ``..`` escape or a link pointing out."""
    root = manifest.root.resolve()
    try:
        path = (root / rel).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def viewer_samples(result: dict[str, Any], manifest, preds, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` scored samples with thumbnails, ground-truth and predicted boxes (original
    pixels) and the raw response text, for the page's sample viewer."""
    from mmrbench.vision.images import ImageLoadError, load_rgb
    from mmrbench.scoring import decision_from_prediction

    samples = scored_samples(result, manifest)[:max(0, limit)]
    by_id = {p.id: p for p in preds}
    out = []
    for s in samples:
        p = by_id.get(s.id)
        decision, boxes, response = None, [], None
        if p is not None:
            try:
                d = decision_from_prediction(p, s, detector_threshold(result, s.subdataset, s.category))
                decision, boxes = d.decision, [list(b) for b in d.boxes] if d.decision else []
            except MMRBenchError as exc:
                response = f"[cannot score this line: {exc}]"
            if response is None:
                response = p.response if p.response is not None else (
                    f"[detector score {p.score:.3f}]" if p.score is not None else f"[{p.status}: {p.error or ''}]")
        images = {}
        for key, rel in (("image", s.image), ("reference", s.reference)):
            if rel is None:
                continue
            path = confined_image(manifest, rel)
            if path is None:
                log.warning("viewer: %s: image %r is not a file inside the data root %s; not embedded",
                            s.id, rel, manifest.root)
                continue
            try:
                images[key] = _data_url(load_rgb(path, sample_id=s.id))
            except (ImageLoadError, OSError, ValueError) as exc:
                log.warning("viewer: %s", exc)
        out.append({
            "id": s.id, "subdataset": s.subdataset, "category": s.category, "label": s.label,
            "width": s.width, "height": s.height,
            "gt": [[b.x1, b.y1, b.x2, b.y2, b.label] for b in s.boxes],
            "pred": boxes, "decision": decision, "missing": p is None,
            "response": (response or "")[:MAX_RESPONSE_CHARS],
            "image": images.get("image"), "reference": images.get("reference"),
        })
    return out


def _store_info(man_path: Path) -> dict[str, Any]:
    """``info.json`` beside a manifest in a maintainer's store, when it describes that manifest."""
    try:
        info = json.loads((man_path.parent / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return info if isinstance(info, dict) else {}


def identify_benchmark(result: dict[str, Any], man_path: Path | None) -> tuple[str, str, str | None]:
    """(key, name, manifest sha256) of the benchmark an entry was measured on."""
    if result.get("provenance") == "reported":
        return PAPER_KEY, PAPER_BENCHMARK, None
    ds = result.get("dataset") or {}
    sha = ds.get("manifest_sha256") if isinstance(ds.get("manifest_sha256"), str) else None
    info = _store_info(man_path) if man_path is not None else {}
    if info and info.get("manifest_sha256") not in (None, sha):
        info = {}
    if info.get("benchmark") == PAPER_BENCHMARK:
        return PAPER_KEY, PAPER_BENCHMARK, None
    if info.get("generator") == "mmrbench.data.synth":
        name = f"bundled synthetic v{info.get('generator_version')}"
    elif isinstance(info.get("benchmark"), str):
        name = info["benchmark"][:80]
    else:
        name = str(ds.get("name") or "benchmark")[:80]
    if sha is None:
        return "no-manifest", f"{name} (no manifest named)", None
    where = "" if man_path is not None else ", manifest not found"
    return f"sha-{sha[:16]}", f"{name} (manifest {sha[:8]}{where})", sha


def _base_entry(rel: str, result: dict[str, Any], status: str, reasons: list[str], metrics: dict[str, Any]) -> dict:
    model = table_of(result, "model")
    ds = table_of(result, "dataset")
    return {
        # the card's display name where it has one (as the MMAD boards show it): "PaDiM", not "padim"
        "id": rel, "name": str(model.get("display_name") or model.get("name")), "kind": _kind(result, status),
        "provenance": result.get("provenance"), "status": status, "reasons": reasons,
        "variant": str(result.get("variant") or (result.get("protocol") or {}).get("prompt_variant") or "default"),
        "provider": model.get("provider"), "model_id": model.get("model_id"),
        "date": result.get("date"), "manifest_sha256": ds.get("manifest_sha256"),
        "predictions_sha256": result.get("predictions_sha256"),
        "cells": _cells(metrics), "ci": None, "categories": [], "samples": [],
        "source": None, "notes": result.get("notes"), "section": "main", "ablation_row": None,
        "loc_reported": True,
    }


def _add_statistics(entry: dict, result: dict, pred_path: Path, man_path: Path, *, resamples: int, seed: int,
                    samples_per_run: int) -> None:
    from mmrbench.data.manifest import read_manifest
    from mmrbench.leaderboard.stats import bootstrap_ci, category_ci, ci_to_json, per_image_counts

    manifest = read_manifest(man_path, check_files=False)
    preds, _ = load_predictions(pred_path)
    samples = scored_samples(result, manifest)
    per = per_image_counts(samples, decisions=decisions_for(result, samples, preds))
    if resamples > 0:
        entry["ci"] = ci_to_json(bootstrap_ci(per, resamples=resamples, seed=seed), resamples, seed)
        cats = category_ci(per, resamples=resamples, seed=seed)
        entry["categories"] = [
            {"subdataset": sub, "category": cat, "det_accuracy": parts["det"]["accuracy"].to_json(),
             "loc_accuracy": parts["loc"]["accuracy"].to_json()}
            for sub, by_cat in cats.items()
            for cat, parts in by_cat.items()]
    entry["samples"] = viewer_samples(result, manifest, preds, samples_per_run)


def _entry(d: Path, rel: str, result: dict[str, Any], stores: list, *, resamples: int, seed: int,
           samples_per_run: int) -> dict[str, Any]:
    pred_path = find_predictions(d)
    ver = verify_entry(result, predictions=pred_path, manifest_stores=stores)
    metrics = result["metrics"]
    if ver.status == VERIFIED and ver.recomputed is not None:
        metrics = ver.recomputed
    entry = _base_entry(rel, result, ver.status, ver.reasons, metrics)
    man_path = None
    if result.get("provenance") == "run":
        man_path = find_manifest(entry["manifest_sha256"] or "", stores=stores)
    entry["benchmark"], entry["benchmark_name"], _ = identify_benchmark(result, man_path)
    ref = table_of(result, "reference")
    if ver.status == REPORTED:
        entry["source"] = " - ".join(str(ref[k]) for k in ("table", "paper") if ref.get(k))
        entry["loc_reported"] = any((b or {}).get("loc") for b in (metrics.get("subdatasets") or {}).values())
        if ref.get("table") == "Table 5":
            entry["section"], entry["ablation_row"], entry["kind"] = "ablation", entry["name"], ABLATION
    elif ver.status == UNVERIFIED and result.get("provenance") == "reported":
        entry["kind"] = "submitted"
    recipe = ablation_recipe(result) if result.get("provenance") == "run" else None
    if recipe is not None and ver.status == VERIFIED:  # an unverified claim stays among the submitted runs
        entry["section"], entry["ablation_row"], entry["kind"] = "ablation", ABLATION_RECIPES[recipe], ABLATION
        entry["recipe"] = recipe
    if result.get("provenance") == "run" and pred_path is not None and man_path is not None:
        try:
            _add_statistics(entry, result, pred_path, man_path, resamples=resamples, seed=seed,
                            samples_per_run=samples_per_run)
        except ENTRY_ERRORS as exc:
            log.warning("%s: no statistics or samples: %s", rel, exc)
    return entry


def _place(benchmarks: dict[str, dict[str, Any]], board: Board, entry: dict[str, Any]) -> None:
    """Put an entry on the board of its benchmark (created on first use)."""
    mmad = entry.get("mmad") is not None
    b = benchmarks.setdefault(entry["benchmark"], {
        "key": entry["benchmark"], "name": entry.pop("benchmark_name"), "subdatasets": [],
        "manifest_sha256": entry["manifest_sha256"] if entry["benchmark"] not in (PAPER_KEY, MMAD_PUBLISHED_KEY) else None,
        **({"kind": "mmad", "columns": [], "datasets": []} if mmad else {})})
    entry.pop("benchmark_name", None)
    for sub in entry["cells"]:
        if sub not in b["subdatasets"]:
            b["subdatasets"].append(sub)
    board.entries.append(entry)


def _mmad_entry(d: Path, rel: str, result: dict[str, Any], stores: list, board: Board, strict: bool) -> dict | None:
    """An ``mmad-v1`` entry; one that cannot be read is shown unverified, never stops the build."""
    try:
        return mmad_entry(d, rel, result, stores)
    except ENTRY_ERRORS as exc:
        if strict:
            raise
        log.warning("%s: unreadable: %s", rel, exc)
        ds = result.get("dataset") or {}
        sha = ds.get("sha256") if isinstance(ds.get("sha256"), str) else None
        m = result.get("metrics") or {}
        return {"id": rel, "name": str((result.get("model") or {}).get("name")), "kind": "submitted",
                "provenance": result.get("provenance"), "status": UNVERIFIED,
                "reasons": [f"unreadable entry: {type(exc).__name__}: {exc}"[:500]], "variant": "default",
                "provider": None, "model_id": None, "date": result.get("date"), "manifest_sha256": sha,
                "predictions_sha256": result.get("predictions_sha256"), "cells": {}, "ci": None, "categories": [],
                "samples": [], "source": None, "notes": result.get("notes"), "section": "main", "ablation_row": None,
                "loc_reported": True, "detail": "",
                "mmad": {"shots": (result.get("protocol") or {}).get("shots"), "mode": m.get("mode"),
                         "columns": list(m.get("columns") or []), "rows": m.get("rows") or {}, "questions": None,
                         "file": None},
                "benchmark": f"mmad-sha-{sha[:16]}" if sha else "mmad-no-sha",
                "benchmark_name": f"{ds.get('name') or 'MMAD-format data'} (mmad.json {sha[:8] if sha else 'not named'})"}


def build_board(results_dir: str | os.PathLike, *, manifest_stores: Iterable[str | os.PathLike] = (),
                resamples: int = 1000, seed: int = 0, samples_per_run: int = DEFAULT_SAMPLES_PER_RUN,
                strict: bool = False) -> Board:
    """Every entry under ``results_dir``, verified, on the board of its benchmark, with CIs and viewer
    samples where data allows.

    A ``result.json`` that fails schema validation is skipped with its reason (or raises with
    ``strict``); an entry whose other files cannot be read is shown unverified with the reason.
    """
    stores = [Path(s) for s in manifest_stores]
    for s in stores:
        if not s.exists():
            raise MMRBenchError(f"--manifests {s}: no such file or folder")
    board = Board()
    benchmarks: dict[str, dict[str, Any]] = {}
    for d in entry_dirs(results_dir):
        rel = d.relative_to(Path(results_dir)).as_posix()
        try:
            result = load_result_json(d)
            if is_mmad_result(result):
                check_mmad_result(result, f"{rel}/result.json")
            else:
                check_result(result, f"{rel}/result.json")
        except ENTRY_ERRORS as exc:
            if strict:
                raise
            board.skipped.append(f"{rel}/result.json: {exc}" if not str(exc).startswith(rel) else str(exc))
            log.warning("skipping %s", exc)
            continue
        if is_mmad_result(result):
            entry = _mmad_entry(d, rel, result, stores, board, strict)
            if entry is not None:
                _place(benchmarks, board, entry)
            continue
        try:
            entry = _entry(d, rel, result, stores, resamples=resamples, seed=seed, samples_per_run=samples_per_run)
        except ENTRY_ERRORS as exc:
            if strict:
                raise
            log.warning("%s: unreadable: %s", rel, exc)
            entry = _base_entry(rel, result, UNVERIFIED, [f"unreadable entry: {type(exc).__name__}: {exc}"[:500]],
                                result.get("metrics") or {})
            entry["kind"] = "submitted"
            entry["benchmark"], entry["benchmark_name"], _ = identify_benchmark(
                {**result, "provenance": "run"}, None)
        _place(benchmarks, board, entry)
    for b in benchmarks.values():
        if b.get("kind") == "mmad":
            b["columns"], b["datasets"] = board_columns([e for e in board.entries if e["benchmark"] == b["key"]])
        elif b["key"] == PAPER_KEY:  # the paper's column order
            b["subdatasets"] = [s for s in SUBDATASETS if s in b["subdatasets"]] + [
                s for s in b["subdatasets"] if s not in SUBDATASETS]
        else:
            b["subdatasets"].sort()
    board.benchmarks = sorted(benchmarks.values(), key=lambda b: (b["key"] != PAPER_KEY, b["key"] != MMAD_PUBLISHED_KEY,
                                                                  b["name"].lower(), b["key"]))
    board.entries.sort(key=_order_key)
    return board
