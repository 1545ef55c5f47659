"""Evaluate PaDiM / PatchCore on a manifest the way the paper's Table 4 does, plus what MLLMs cannot give.

Per category: fit on that category's normal *train* images (minus a few held out for the fair
threshold), score its test images, normalise image scores and maps min-max per category to [0, 1]
(over the category's test images: that reads no label), and write one ``predictions.jsonl`` line per
test image with the normalised ``score`` and ``boxes_by_threshold`` for t = 0.0, 0.1, ..., 1.0 (boxes
from the normalised map at t, :mod:`mmrbench.vision.boxes`). The scorer then reads a line as
"anomalous" when score >= t and takes the boxes at t.

Thresholds (``result.json`` ``detector`` block):

With ``normalisation = "joint"`` (the default) the image scores are normalised with the *maps'* range
instead of their own (both still per category, over test images). For PaDiM, whose image score is the
map's max, "score >= t" then means "some pixel of the map reaches t", so the decision and the boxes at
one t agree (an image called anomalous has a region above t); with ``"separate"`` the image score's
own range puts the decision threshold much higher on the map scale than the box threshold, and the one
threshold the scorer takes must trade detection against localization (on the synthetic benchmark the
oracle t fell ~5 points of detection short of joint for PaDiM and ~8 for PatchCore).

* ``threshold_oracle``: the grid t maximising the mean over subdatasets of (det accuracy + loc accuracy)
  on the test set -- the paper's choice, which reads test labels; ``metrics`` are reported at it.
* ``threshold_fair``: reads no test label. The held-out normal train images are scored by the fitted
  model and normalised with the same per-category test range; per category the ``fair_quantile`` (max)
  of those scores is taken, and the threshold is the smallest grid value above the median of these over
  categories (one threshold for the whole run, as the scorer takes one; the median keeps one odd
  category from forcing t = 1.0). ``metrics_fair`` are reported at it.

Fitted models are cached as ``.npz`` (never pickle) under ``out_dir/cache`` (or ``cache_dir``), keyed by
the manifest's sha256, subdataset, category, the fitted image ids, the recipe and the backbone weights'
sha256, so re-running a sweep or a second recipe section does not refit.

Image AUROC and pixel AUROC (maps and ground-truth masks -- the mask file when the manifest has one,
else the filled boxes -- downsampled to ``pixel_auroc_size`` to bound memory) are computed per category
and macro-averaged per subdataset, like the Table-4 metrics.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmrbench.vision.boxes import boxes_by_threshold
from mmrbench.baselines.recipes import canonical_method, resolve_recipe
from mmrbench.vision.thresholds import GRID, auroc, fair_threshold, minmax, oracle_threshold
from mmrbench.data.schema import Sample
from mmrbench.errors import ConfigError, MMRBenchError

CACHE_VERSION = 1


def _stable_seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:4], "little")


def split_holdout(train: Sequence[Sample], fraction: float, minimum: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(fit, held-out) split of one category's normal train images, deterministic per category.

    At least two images always stay in the fit set; with fewer than ``minimum + 2`` images nothing is
    held out (the fair threshold then falls back, see :func:`fair_threshold`).
    """
    items = sorted(train, key=lambda s: s.id)
    n = len(items)
    k = max(int(minimum), int(round(fraction * n))) if fraction > 0 else 0
    if n - k < 2:
        k = 0
    if k == 0:
        return items, []
    s0 = items[0]
    order = np.random.default_rng(_stable_seed(seed, s0.subdataset, s0.category)).permutation(n)
    held = set(order[:k].tolist())
    return [s for i, s in enumerate(items) if i not in held], [s for i, s in enumerate(items) if i in held]


def _gt_mask(manifest, s: Sample, size: int) -> np.ndarray:
    """Ground-truth mask at ``size`` x ``size`` (bool): the mask file if any, else the filled boxes."""
    import cv2

    if s.mask:
        from mmrbench.vision.images import load_mask
        m = np.asarray(load_mask(manifest.resolve(s.mask), sample_id=s.id), dtype=np.float32) / 255.0
        m = (m > 0).astype(np.float32)
    else:
        m = np.zeros((s.height, s.width), np.float32)
        for b in s.boxes:
            m[int(b.y1):int(np.ceil(b.y2)), int(b.x1):int(np.ceil(b.x2))] = 1.0
    return cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA) >= 0.5


def build_detector(method: str, backbone, recipe: dict):
    """A PaDiM or PatchCore instance configured from a resolved recipe."""
    if method == "padim":
        from mmrbench.baselines.padim import Padim, PadimConfig
        return Padim(backbone, PadimConfig(**{**recipe["model"], "layers": tuple(recipe["model"]["layers"])}))
    from mmrbench.baselines.patchcore import PatchCore, PatchCoreConfig
    return PatchCore(backbone, PatchCoreConfig(**{**recipe["model"], "layers": tuple(recipe["model"]["layers"])}))


def _model_kwargs_check(method: str, recipe: dict) -> None:
    from dataclasses import fields
    if method == "padim":
        from mmrbench.baselines.padim import PadimConfig
        names = {f.name for f in fields(PadimConfig)}
    else:
        from mmrbench.baselines.patchcore import PatchCoreConfig
        names = {f.name for f in fields(PatchCoreConfig)}
    bad = sorted(set(recipe["model"]) - names)
    if bad:
        raise ConfigError(f"recipe: unknown {method} model option(s): {', '.join(bad)}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]


def _cache_file(cache_dir: Path, method: str, sub: str, cat: str, key: str) -> Path:
    return cache_dir / f"{method}-{_safe(sub)}-{_safe(cat)}-{key[:16]}.npz"


def _save_cache(path: Path, state: dict[str, np.ndarray], key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    meta = np.frombuffer(json.dumps({"key": key, "version": CACHE_VERSION}).encode(), dtype=np.uint8)
    # numpy's stub gives savez a keyword-only ``allow_pickle: bool``, so mypy rejects any
    # ``**dict[str, ndarray]``; the state keys are fixed array names (never "allow_pickle")
    np.savez(tmp, __meta__=meta, **state)  # type: ignore[arg-type]
    os.replace(tmp, path)


def _load_cache(path: Path, key: str) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["__meta__"]).decode())
            if meta.get("key") != key or meta.get("version") != CACHE_VERSION:
                return None
            return {k: z[k] for k in z.files if k != "__meta__"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None  # a torn or foreign file: refit and overwrite


def evaluate_detector(method: str, manifest, samples: list[Sample], out_dir: Path, *,
                      recipe: dict | str | os.PathLike | None = None, weights: str | None = None,
                      device: str = "cpu", progress: bool = True, cache_dir: str | os.PathLike | None = None):
    """Fit/score ``method`` per category, write ``predictions.jsonl`` and ``result.json``; return the Result."""

    from mmrbench import PROTOCOL
    from mmrbench.vision.backbones import load_backbone
    from mmrbench.vision.features import iter_batches
    from mmrbench.data.manifest import read_manifest
    from mmrbench.predictions import Prediction, PredictionWriter, read_predictions
    from mmrbench.provenance import harness_info, now_iso
    from mmrbench.results import Result, write_result
    from mmrbench.scoring import LOC_IOU, score_predictions, threshold_key
    from mmrbench.data.manifest import file_sha256

    m = canonical_method(method)
    rec = resolve_recipe(m, recipe)
    _model_kwargs_check(m, rec)
    if not hasattr(manifest, "samples"):  # a path
        manifest = read_manifest(manifest, check_files=False)
    if device != "cpu":
        raise ConfigError(f"device '{device}': the classical detectors run on cpu in this build")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    test = [s for s in samples if s.split == "test"]
    if not test:
        raise MMRBenchError(f"no test samples to evaluate {m} on in {manifest.path}")
    weights = weights or rec["backbone"].get("weights") or None
    backbone = load_backbone(rec["backbone"]["name"], weights, seed=int(rec["backbone"].get("seed", 0)))
    size = int(rec["model"]["image_size"])
    bs = int(rec["batch_size"])
    auroc_size = int(rec["pixel_auroc_size"])
    box_min_area, box_nms_iou = int(rec["boxes"]["min_area"]), float(rec["boxes"]["nms_iou"])
    th = rec["thresholds"]

    groups: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for s in test:
        groups[(s.subdataset, s.category)].append(s)
    train_by_cat: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for s in manifest.samples:
        if s.split == "train" and s.label == "normal":
            train_by_cat[(s.subdataset, s.category)].append(s)
    for group in sorted(groups):  # fail before any work on a category that cannot be fitted
        if not train_by_cat.get(group):
            raise MMRBenchError(f"subdataset '{group[0]}' category '{group[1]}': no normal train images in "
                                f"{manifest.path} to fit {m} on")

    # Written aside and moved over predictions.jsonl only when every category is done: a crash or a
    # kill during a re-run leaves the previous run's predictions (and result.json) as they were.
    final_path = out / "predictions.jsonl"
    if final_path.is_symlink():
        raise MMRBenchError(f"{final_path} is a symbolic link: predictions are never written through links")
    pred_path = out / ".predictions.jsonl.partial"
    if pred_path.exists() or pred_path.is_symlink():
        pred_path.unlink()
    heldout_by_cat: dict[str, list[float]] = {}
    ranges: dict[str, dict[str, list[float]]] = {}
    norm_mode = rec["normalisation"]  # validated by resolve_recipe
    joint = norm_mode == "joint"
    auroc_cat: dict[str, dict[str, dict[str, float | None]]] = defaultdict(dict)
    timing = {"fit_s": 0.0, "fit_images": 0, "score_s": 0.0, "score_images": 0, "cached_categories": 0}
    iterator = sorted(groups)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc=m, unit="category")
    model_json = {"backbone": backbone.info, "model": rec["model"]}
    with PredictionWriter(pred_path) as writer:
        for sub, cat in iterator:
            fit_set, held = split_holdout(train_by_cat[(sub, cat)], float(th["holdout_fraction"]),
                                          int(th["holdout_min"]), int(rec["backbone"].get("seed", 0)))
            key = hashlib.sha256(json.dumps({
                "v": CACHE_VERSION, "manifest": manifest.sha256, "sub": sub, "cat": cat, "method": m,
                "fit_ids": [s.id for s in fit_set], **model_json}, sort_keys=True).encode()).hexdigest()
            det = build_detector(m, backbone, rec)
            cpath = _cache_file(cache, m, sub, cat, key)
            state = _load_cache(cpath, key)
            if state is not None:
                det.load_state(state)
                timing["cached_categories"] += 1
            else:
                t0 = time.perf_counter()
                det.fit(iter_batches([(manifest.resolve(s.image), s.id) for s in fit_set], size, bs))
                timing["fit_s"] += time.perf_counter() - t0
                timing["fit_images"] += len(fit_set)
                _save_cache(cpath, det.state(), key)

            items = groups[(sub, cat)]
            t0 = time.perf_counter()
            maps_l, raw_l = [], []
            for x in iter_batches([(manifest.resolve(s.image), s.id) for s in items], size, bs):
                mp, sc = det.score(x)
                maps_l.append(mp.astype(np.float32))
                raw_l.append(np.asarray(sc, np.float64))
            per_img = (time.perf_counter() - t0) / len(items)
            timing["score_s"] += time.perf_counter() - t0
            timing["score_images"] += len(items)
            maps = np.concatenate(maps_l)
            raw = np.concatenate(raw_l)
            m_lo, m_hi = float(maps.min()), float(maps.max())
            if joint:  # image scores on the maps' scale: score >= t <=> the map reaches t somewhere
                s_lo, s_hi = m_lo, m_hi
            else:
                s_lo, s_hi = float(raw.min()), float(raw.max())
            ranges[f"{sub}/{cat}"] = {"score": [s_lo, s_hi], "map": [m_lo, m_hi]}
            norm = minmax(raw, s_lo, s_hi)
            nmaps = minmax(maps, m_lo, m_hi).astype(np.float32)
            if held:
                hs: list[float] = []
                for x in iter_batches([(manifest.resolve(s.image), s.id) for s in held], size, bs):
                    _, sc = det.score(x)
                    hs.extend(round(v, 6) for v in minmax(np.asarray(sc), s_lo, s_hi).tolist())
                heldout_by_cat[f"{sub}/{cat}"] = hs
            for s, sc, r, nm in zip(items, norm, raw, nmaps):
                bbt = boxes_by_threshold(nm, GRID, out_size=(s.width, s.height),
                                         min_area=box_min_area, nms_iou=box_nms_iou)
                writer.write(Prediction(
                    id=s.id, response=None, status="ok", image_sizes=[[s.width, s.height]], convention="pixel",
                    latency_s=round(per_img, 6), score=float(sc),
                    boxes_by_threshold={threshold_key(t): [[float(v) for v in b] for b in bx] for t, bx in bbt.items()},
                    extra={"raw_score": float(r)}))
            # AUROC (raw scores: min-max is monotone, so the area is the same)
            labels = np.array([s.is_anomalous for s in items])
            small = np.stack([_resize_area(nm, auroc_size) for nm in nmaps])
            gts = np.stack([_gt_mask(manifest, s, auroc_size) for s in items])
            auroc_cat[sub][cat] = {"image": auroc(raw, labels), "pixel": auroc(small.ravel(), gts.ravel())}

    preds = read_predictions(pred_path)
    per_t: dict[float, dict[str, tuple[float, float]]] = {}
    reports = {}
    for t in GRID:
        rep = score_predictions(test, preds, threshold=t)
        reports[t] = rep
        per_t[t] = {name: (sd.det["accuracy"], sd.loc["accuracy"]) for name, sd in rep.subdatasets.items()}
    t_oracle = oracle_threshold(per_t)
    t_fair = fair_threshold(heldout_by_cat, float(th["fair_quantile"]))
    rep_fair = reports[min(GRID, key=lambda g: abs(g - t_fair))]
    auroc_sub = {}
    for sub, cats in sorted(auroc_cat.items()):
        entry: dict[str, Any] = {}
        for kind in ("image", "pixel"):
            vals = [x for x in (v[kind] for v in cats.values()) if x is not None]
            entry[kind] = float(np.mean(vals)) if vals else None
        entry["categories"] = cats
        auroc_sub[sub] = entry
    detector = {
        "method": m,
        "threshold_oracle": t_oracle,
        "threshold_fair": t_fair,
        "threshold_rules": {
            "oracle": "grid t maximising mean over subdatasets of (det accuracy + loc accuracy) on the test set; "
                      "ties -> lower t",
            "fair": f"smallest grid t above the median over categories of the {th['fair_quantile']} quantile of "
                    f"normalised scores of held-out normal train images "
                    f"({sum(map(len, heldout_by_cat.values()))} images)",
        },
        "metrics_fair": rep_fair.to_json(),
        "heldout_scores": heldout_by_cat,
        "sweep": {threshold_key(t): {n: {"det": v[0], "loc": v[1]} for n, v in per_t[t].items()} for t in GRID},
        "auroc": auroc_sub,
        "backbone": backbone.info,
        "recipe": rec,
        "timing": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in timing.items()},
        "normalisation": {"mode": norm_mode, "ranges": ranges,
                          "rule": "min-max per category over its test images; 'separate': image scores by their own "
                                  "range, 'joint': image scores by the maps' range"},
    }
    result = Result(
        model={"name": m, "provider": "detector", "model_id": m, "convention": "pixel", "kind": "detector",
               "backbone": backbone.info["name"], "pretrained": backbone.info["pretrained"]},
        dataset={"name": manifest.root.name or manifest.path.stem, "manifest": manifest.path.name,
                 "manifest_sha256": manifest.sha256, "split": "test",
                 "subdatasets": sorted({s.subdataset for s in test}), "n_samples": len(test)},
        metrics=reports[t_oracle].to_json(),
        protocol={"name": PROTOCOL, "prompt_variant": None, "iou_threshold": LOC_IOU,
                  "threshold": t_oracle, "threshold_rule": "oracle"},
        predictions_sha256=file_sha256(pred_path), harness=harness_info(), date=now_iso(), provenance="run",
        notes=None if backbone.info["pretrained"] else
        f"random-weight {backbone.info['name']} backbone (seed {backbone.info['seed']}), not ImageNet-pretrained",
        extra={"detector": detector},
    )
    os.replace(pred_path, final_path)
    write_result(out / "result.json", result)
    return result


def _resize_area(m: np.ndarray, size: int) -> np.ndarray:
    import cv2
    return cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA)
