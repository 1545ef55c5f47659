"""Threshold grid, min-max normalisation, the oracle and fair threshold rules, and AUROC.

The paper (footnote to Table 4) normalises each detector's scores min-max per category to [0, 1],
sweeps t = 0.0, 0.1, ..., 1.0 and reports the best t on the test set -- an *oracle*, since it reads test
labels. We report that, and a *fair* threshold that reads no test label (see :func:`fair_threshold`).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


def minmax(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(v - lo) / (hi - lo); a constant category (hi == lo) maps to 0 rather than dividing by zero.

    Values outside [lo, hi] (held-out train images normalised with the test range) are left
    unclipped so the fair rule can see that a normal image scores above every test image.
    """
    v = np.asarray(values, dtype=np.float64)
    span = float(hi) - float(lo)
    if not math.isfinite(span) or span <= 0:
        return np.zeros_like(v)
    return (v - float(lo)) / span


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float | None:
    """Area under the ROC curve by the rank-sum (Mann-Whitney U) statistic, ties counted half.

    AUROC = (sum of positive ranks - P (P + 1) / 2) / (P N) with average ranks for ties. Returns None
    when one class is absent (the area is undefined, not 0.5).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length ({s.size} vs {y.size})")
    p = int(y.sum())
    n = y.size - p
    if p == 0 or n == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(s, method="average")  # ties share their average rank
    u = ranks[y].sum() - p * (p + 1) / 2.0
    return float(u / (p * n))


def oracle_threshold(per_t: Mapping[float, Mapping[str, tuple[float, float]]]) -> float:
    """The paper's oracle: the grid t maximising the mean over subdatasets of (det acc + loc acc).

    ``per_t[t][subdataset] = (det_accuracy, loc_accuracy)``. Ties go to the lower t (it keeps more
    recall, and makes the choice deterministic).
    """
    best_t, best = None, -1.0
    for t in sorted(per_t):
        subs = per_t[t]
        v = sum(d + l for d, l in subs.values()) / max(1, len(subs))
        if v > best + 1e-12:
            best_t, best = t, v
    if best_t is None:
        raise ValueError("no thresholds to choose from")
    return float(best_t)


def fair_threshold(heldout: Mapping[str, Iterable[float]] | Iterable[float], quantile: float = 1.0,
                   grid: Sequence[float] = GRID) -> float:
    """A threshold that reads no test label.

    ``heldout`` holds normalised image scores of normal *training* images that were held out of the
    fit (normalised with the same per-category test range, no labels involved), either one list or a
    mapping category -> list. Per category, anything above the ``quantile`` (max by default) of its
    held-out normals looks unlike the normals we know; the scorer takes one threshold for the whole run,
    so the per-category values are combined by their **median** (one category whose held-out images
    happen to score above all its test images must not push the run to t = 1.0, which calls
    everything normal). The threshold is the smallest grid value strictly above that median, clipped
    to the grid. With no held-out scores it falls back to 0.5.
    """
    groups = list(heldout.values()) if isinstance(heldout, Mapping) else [heldout]
    per_cat = []
    for g in groups:
        v = np.asarray(list(g), dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            per_cat.append(float(np.quantile(v, quantile)))
    if not per_cat:
        return 0.5
    q = float(np.median(per_cat))
    for t in sorted(grid):
        if t > q + 1e-9:
            return float(t)
    return float(max(grid))
