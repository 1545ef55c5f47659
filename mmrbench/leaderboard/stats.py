"""Bootstrap confidence intervals for Table-4 cells and paired tests between two runs.

The metrics are macro averages over categories of per-category ratios, so the bootstrap resamples
*images within each category* (the categories themselves are fixed by the benchmark), recomputes the
per-category counts, the ratios and the macro average, and takes percentiles. Everything is
vectorised: per-image count vectors are gathered with one index array of shape (B, n_category).

Paired comparison of two runs on the same manifest resamples the same images for both runs (paired
bootstrap of the difference) and, for detection accuracy, also runs McNemar's exact test on the
pooled per-image correctness (a test of micro accuracy; the bootstrap covers the macro metric).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from mmrbench.data.schema import Sample
from mmrbench.predictions import Prediction
from mmrbench.scoring import (LOC_IOU, Decision, decision_from_prediction, detection_counts,
                              localization_counts)
from mmrbench.scoring import METRICS  # one definition of the metric names: the scorer's

DEFAULT_RESAMPLES = 1000
#: cap on B x n elements gathered at once (keeps memory flat on large categories)
_CHUNK_ELEMS = 4_000_000


@dataclass
class PerImage:
    """Per-image counts of one run on one subdataset, grouped by category (fixed order)."""

    categories: list[str]
    ids: list[list[str]]
    det: list[np.ndarray]  # per category: (n, 4) int [tp, fp, fn, tn]
    loc: list[np.ndarray]  # per category: (n, 3) int [tp, fp, fn]


def per_image_counts(samples: Iterable[Sample], predictions: Iterable[Prediction] = (), *,
                     threshold: float | None = None, iou_threshold: float = LOC_IOU,
                     decisions: dict[str, Decision] | None = None) -> dict[str, PerImage]:
    """Per-image detection/localization counts, exactly as :func:`mmrbench.scoring.score_predictions`
    counts them (a sample without prediction is missing and wrong). ``decisions`` (id -> Decision)
    replaces ``predictions`` when the caller already made them (per-category detector thresholds)."""
    samples = list(samples)
    if decisions is None:
        by_id = {s.id: s for s in samples}
        decisions = {}
        for p in predictions:
            s = by_id.get(p.id)
            if s is not None and p.id not in decisions:
                decisions[p.id] = decision_from_prediction(p, s, threshold)
    groups: dict[str, dict[str, list]] = {}
    for s in sorted(samples, key=lambda s: (s.subdataset, s.category)):
        g = groups.setdefault(s.subdataset, {}).setdefault(s.category, [[], [], []])
        d = decisions.get(s.id, Decision(None, (), missing=True))
        dc = detection_counts(s.is_anomalous, d.decision)
        lc = localization_counts(d.boxes if d.decision else (), [b.xyxy for b in s.boxes], iou_threshold)
        g[0].append(s.id)
        g[1].append((dc.tp, dc.fp, dc.fn, dc.tn))
        g[2].append((lc.tp, lc.fp, lc.fn))
    out = {}
    for sub, cats in groups.items():
        names = list(cats)
        out[sub] = PerImage(names, [cats[c][0] for c in names],
                            [np.asarray(cats[c][1], dtype=np.int64).reshape(-1, 4) for c in names],
                            [np.asarray(cats[c][2], dtype=np.int64).reshape(-1, 3) for c in names])
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape, dtype=np.float64), where=den > 0)


def det_metrics(c: np.ndarray) -> dict[str, np.ndarray]:
    """c[..., 4] = tp, fp, fn, tn summed counts -> ratios with the scorer's zero-denominator rule."""
    tp, fp, fn, tn = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    return {"accuracy": _ratio(tp + tn, tp + fp + fn + tn), "recall": _ratio(tp, tp + fn),
            "precision": _ratio(tp, tp + fp)}


def loc_metrics(c: np.ndarray) -> dict[str, np.ndarray]:
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    return {"accuracy": _ratio(tp, tp + fp + fn), "recall": _ratio(tp, tp + fn), "precision": _ratio(tp, tp + fp)}


def _category_indices(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    return rng.integers(0, n, size=(resamples, n))


def _resampled_sums(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Sum of ``arr`` rows picked by each row of ``idx``: (B, n) -> (B, k).

    Turns the picks into multiplicities (one ``bincount`` over offset indices) and multiplies them with
    the count matrix (one BLAS matmul), instead of gathering a (B, n, k) array; chunked over B so the
    multiplicity matrix stays small. Counts are small integers, so float64 products are exact.
    """
    b, n = idx.shape
    step = max(1, _CHUNK_ELEMS // max(1, n))
    out = np.empty((b, arr.shape[1]), dtype=np.int64)
    a = arr.astype(np.float64)
    for s in range(0, b, step):
        chunk = idx[s:s + step]
        rows = chunk.shape[0]
        flat = (chunk + (np.arange(rows)[:, None] * n)).ravel()
        mult = np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)
        out[s:s + rows] = np.rint(mult @ a).astype(np.int64)
    return out


def macro(per: PerImage, indices: list[np.ndarray] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Macro-averaged det/loc metrics; with ``indices`` (one (B, n) array per category) for each resample."""
    det_parts: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    loc_parts: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for k in range(len(per.categories)):
        both = np.hstack([per.det[k], per.loc[k]])  # (n, 7): one resampling pass for det and loc
        sums = both.sum(axis=0) if indices is None else _resampled_sums(both, indices[k])
        dsum, lsum = sums[..., :4], sums[..., 4:]
        for m, v in det_metrics(dsum).items():
            det_parts[m].append(v)
        for m, v in loc_metrics(lsum).items():
            loc_parts[m].append(v)
    return {"det": {m: np.mean(det_parts[m], axis=0) for m in METRICS},
            "loc": {m: np.mean(loc_parts[m], axis=0) for m in METRICS}}


def draw_indices(per: PerImage, resamples: int, seed: int) -> list[np.ndarray]:
    """One (B, n_k) index array per category; seeded per (seed, category position) so that two runs
    scored on the same manifest get identical resamples (pairing)."""
    rng = np.random.default_rng(seed)
    return [_category_indices(rng, len(ids), resamples) for ids in per.ids]


@dataclass
class CellCI:
    value: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def bootstrap_ci(per_sub: dict[str, PerImage], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> dict[str, dict[str, dict[str, CellCI]]]:
    """Percentile CIs of every cell: ``{sub: {"det"|"loc": {metric: CellCI}}}``."""
    alpha = (1 - level) / 2
    out: dict[str, dict[str, dict[str, CellCI]]] = {}
    for sub, per in per_sub.items():
        point = macro(per)
        boot = macro(per, draw_indices(per, resamples, seed))
        out[sub] = {}
        for part in ("det", "loc"):
            out[sub][part] = {}
            for m in METRICS:
                lo, hi = np.quantile(boot[part][m], [alpha, 1 - alpha])
                out[sub][part][m] = CellCI(float(point[part][m]), float(lo), float(hi))
    return out


def ci_to_json(ci: dict[str, dict[str, dict[str, CellCI]]], resamples: int, seed: int) -> dict:
    return {"method": "percentile bootstrap, images resampled within categories", "level": 0.95,
            "resamples": resamples, "seed": seed,
            "subdatasets": {s: {p: {m: c.to_json() for m, c in v.items()} for p, v in parts.items()}
                            for s, parts in ci.items()}}


@dataclass
class PairedRow:
    subdataset: str
    part: str
    metric: str
    a: float
    b: float
    delta: float
    low: float
    high: float
    p_bootstrap: float
    p_mcnemar: float | None = None
    extra: dict = field(default_factory=dict)


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[int, int, float]:
    """Discordant counts (A right/B wrong, A wrong/B right) and the exact two-sided p-value."""
    from scipy.stats import binomtest

    b01 = int(np.sum(a_correct & ~b_correct))
    b10 = int(np.sum(~a_correct & b_correct))
    if b01 + b10 == 0:
        return b01, b10, 1.0
    return b01, b10, float(binomtest(b01, b01 + b10, 0.5).pvalue)


def paired_compare(a: dict[str, PerImage], b: dict[str, PerImage], *, resamples: int = DEFAULT_RESAMPLES,
                   seed: int = 0, level: float = 0.95) -> list[PairedRow]:
    """B - A for every cell, with a paired bootstrap CI and p-value, plus McNemar for det accuracy.

    Both runs must be scored on the same samples (same manifest, split, subdatasets)."""
    alpha = (1 - level) / 2
    rows: list[PairedRow] = []
    for sub in sorted(set(a) & set(b)):
        pa, pb = a[sub], b[sub]
        if pa.categories != pb.categories or pa.ids != pb.ids:
            raise ValueError(f"{sub}: the two runs were not scored on the same samples")
        idx = draw_indices(pa, resamples, seed)
        ma, mb = macro(pa), macro(pb)
        ba, bb = macro(pa, idx), macro(pb, idx)
        det_a = np.concatenate(pa.det)
        det_b = np.concatenate(pb.det)
        a_ok = (det_a[:, 0] + det_a[:, 3]) > 0
        b_ok = (det_b[:, 0] + det_b[:, 3]) > 0
        n01, n10, p_mc = mcnemar_exact(a_ok, b_ok)
        for part in ("det", "loc"):
            for m in METRICS:
                d = bb[part][m] - ba[part][m]
                lo, hi = np.quantile(d, [alpha, 1 - alpha])
                # two-sided bootstrap p-value: how often the resampled difference lands on either side of 0
                p = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
                row = PairedRow(sub, part, m, float(ma[part][m]), float(mb[part][m]),
                                float(mb[part][m] - ma[part][m]), float(lo), float(hi), p)
                if part == "det" and m == "accuracy":
                    row.p_mcnemar = p_mc
                    row.extra = {"a_only_correct": n01, "b_only_correct": n10}
                rows.append(row)
    return rows


def category_ci(per_sub: dict[str, PerImage], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                level: float = 0.95) -> dict[str, dict[str, dict[str, dict[str, CellCI]]]]:
    """Percentile CIs of every category's own metrics: ``{sub: {category: {"det"|"loc": {metric: CellCI}}}}``.

    Each category is bootstrapped alone (its images resampled), the same method as the macro cells
    restricted to one category; for the per-run bar charts."""
    out: dict[str, dict[str, dict[str, dict[str, CellCI]]]] = {}
    for sub, per in per_sub.items():
        singles = {cat: PerImage([cat], [per.ids[k]], [per.det[k]], [per.loc[k]])
                   for k, cat in enumerate(per.categories)}
        out[sub] = bootstrap_ci(singles, resamples=resamples, seed=seed, level=level)
    return out
