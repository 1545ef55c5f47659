"""Collect leaderboard entries from a ``results/`` folder: validate, verify, add CIs and viewer samples.

Layout: every entry is a folder holding ``result.json`` (and, for runs, ``predictions.jsonl`` or
``predictions.jsonl.gz``), anywhere under the results folder: submissions in
``results/<canonical-name>/``, the paper's rows in ``results/reported/table4-*``. Manifests are found
by sha256 in the manifest stores (``--manifests`` folders and the results folder itself).

The output is plain JSON-able dicts (:class:`Board`), shared by the Markdown and HTML renderers, so
both show the same numbers. Untrusted text (model names, responses) is carried as data here and
escaped by each renderer.
"""
from __future__ import annotations

import base64
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mmrbench.errors import MMRBenchError
from mmrbench.leaderboard.reference import KIND_TITLES, KINDS, SUBDATASETS, TABLE4
from mmrbench.leaderboard.schema import check_result, load_result_json
from mmrbench.leaderboard.verify import (REPORTED, VERIFIED, detector_threshold, find_manifest,
                                         decisions_for, find_predictions, load_predictions, scored_samples,
                                         verify_entry)

log = logging.getLogger(__name__)
METRICS = ("accuracy", "recall", "precision")
DEFAULT_SAMPLES_PER_RUN = 24
THUMB_MAX_SIDE = 192
MAX_RESPONSE_CHARS = 4000
GROUP_ORDER = (*KINDS, "submitted")


@dataclass
class Board:
    entries: list[dict[str, Any]] = field(default_factory=list)
    subdatasets: list[str] = field(default_factory=lambda: list(SUBDATASETS))
    skipped: list[str] = field(default_factory=list)  # "path: reason" for files that failed validation

    def to_json(self) -> dict[str, Any]:
        return {"subdatasets": self.subdatasets, "metrics": list(METRICS), "groups": [
            {"kind": k, "title": KIND_TITLES[k]} for k in GROUP_ORDER], "entries": self.entries}


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


def _kind(result: dict[str, Any]) -> str:
    """Table-4 group: the model card's ``kind`` when it names one, else "submitted"."""
    k = (result.get("model") or {}).get("kind")
    return k if k in KINDS else "submitted"


def _order_key(e: dict[str, Any]) -> tuple:
    names = list(TABLE4)
    pos = names.index(e["name"]) if e["provenance"] == "reported" and e["name"] in names else len(names)
    return (GROUP_ORDER.index(e["kind"]), e["provenance"] != "reported", pos, e["name"].lower(), e["id"])


def _data_url(img, max_side: int = THUMB_MAX_SIDE) -> str:
    im = img.copy()
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def viewer_samples(result: dict[str, Any], manifest, preds, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` scored samples with thumbnails, ground-truth and predicted boxes (original
    pixels) and the raw response text, for the page's sample viewer."""
    from mmrbench.data.images import ImageLoadError, load_rgb
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
            try:
                images[key] = _data_url(load_rgb(manifest.resolve(rel), sample_id=s.id))
            except ImageLoadError as exc:
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


def build_board(results_dir: str | os.PathLike, *, manifest_stores: Iterable[str | os.PathLike] = (),
                resamples: int = 1000, seed: int = 0, samples_per_run: int = DEFAULT_SAMPLES_PER_RUN,
                strict: bool = False) -> Board:
    """Every entry under ``results_dir``, verified, with CIs and viewer samples where data allows.

    A file that fails schema validation is skipped with its reason (or raises with ``strict``).
    """
    from mmrbench.data.manifest import read_manifest
    from mmrbench.leaderboard.stats import bootstrap_ci, ci_to_json, per_image_counts

    stores = [*manifest_stores, results_dir]
    board = Board()
    seen_subs: list[str] = list(SUBDATASETS)
    for d in entry_dirs(results_dir):
        rel = d.relative_to(Path(results_dir)).as_posix()
        try:
            result = load_result_json(d)
            check_result(result, f"{rel}/result.json")
        except MMRBenchError as exc:
            if strict:
                raise
            board.skipped.append(str(exc))
            log.warning("skipping %s", exc)
            continue
        pred_path = find_predictions(d)
        ver = verify_entry(result, predictions=pred_path, manifest_stores=stores)
        metrics = result["metrics"]
        if ver.status == VERIFIED and ver.recomputed is not None:
            metrics = ver.recomputed
        model = result.get("model") or {}
        entry: dict[str, Any] = {
            "id": rel, "name": str(model.get("name")), "kind": _kind(result),
            "provenance": result.get("provenance"), "status": ver.status, "reasons": ver.reasons,
            "variant": str(result.get("variant") or (result.get("protocol") or {}).get("prompt_variant") or "default"),
            "provider": model.get("provider"), "model_id": model.get("model_id"),
            "date": result.get("date"), "manifest_sha256": (result.get("dataset") or {}).get("manifest_sha256"),
            "predictions_sha256": result.get("predictions_sha256"),
            "cells": _cells(metrics), "ci": None, "samples": [],
            "source": None, "notes": result.get("notes"),
        }
        if ver.status == REPORTED:
            ref = result.get("reference") or {}
            entry["source"] = " - ".join(str(ref[k]) for k in ("table", "paper") if ref.get(k))
        for sub in entry["cells"]:
            if sub not in seen_subs:
                seen_subs.append(sub)
        if result.get("provenance") == "run" and pred_path is not None:
            man_path = find_manifest(entry["manifest_sha256"] or "", stores=stores)
            if man_path is not None:
                try:
                    manifest = read_manifest(man_path, check_files=False)
                    preds, _ = load_predictions(pred_path)
                    samples = scored_samples(result, manifest)
                    per = per_image_counts(samples, decisions=decisions_for(result, samples, preds))
                    if resamples > 0:
                        entry["ci"] = ci_to_json(bootstrap_ci(per, resamples=resamples, seed=seed), resamples, seed)
                    entry["samples"] = viewer_samples(result, manifest, preds, samples_per_run)
                except MMRBenchError as exc:
                    log.warning("%s: no statistics or samples: %s", rel, exc)
        board.entries.append(entry)
    board.entries.sort(key=_order_key)
    board.subdatasets = seen_subs
    return board


def write_leaderboard(results_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                      manifest_stores: Iterable[str | os.PathLike] = (), resamples: int = 1000, seed: int = 0,
                      samples_per_run: int = DEFAULT_SAMPLES_PER_RUN, generated: str | None = None) -> Board:
    """Build the board and write ``LEADERBOARD.md`` and ``index.html`` (atomically) into ``out_dir``."""
    from mmrbench.leaderboard.render_html import render_html
    from mmrbench.leaderboard.render_md import render_markdown

    board = build_board(results_dir, manifest_stores=manifest_stores, resamples=resamples, seed=seed,
                        samples_per_run=samples_per_run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("LEADERBOARD.md", render_markdown(board)), ("index.html", render_html(board, generated=generated))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        os.replace(tmp, out / name)
    return board
