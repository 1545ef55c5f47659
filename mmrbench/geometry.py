"""Box geometry shared by the scorer, the GRPO reward and text verification.

Boxes are ``(x1, y1, x2, y2)`` in pixels with x2/y2 exclusive, so area is ``(x2-x1)*(y2-y1)``.
One implementation of IoU and of one-to-one matching keeps the scorer, the reward and the
verifier in exact agreement.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

BoxLike = Sequence[float]


def box_area(box: BoxLike) -> float:
    return max(0.0, float(box[2]) - float(box[0])) * max(0.0, float(box[3]) - float(box[1]))


def iou(a: BoxLike, b: BoxLike) -> float:
    """Intersection over union; 0 when the union is empty (degenerate boxes never match)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = float(iw) * float(ih)
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def giou(a: BoxLike, b: BoxLike) -> float:
    """Generalized IoU (Rezatofighi et al., 2019): IoU minus the share of the smallest enclosing box
    that neither box covers, in [-1, 1]. Unlike IoU it still orders boxes that do not overlap (a box
    next to the defect scores higher than one across the image), which is why the graded GRPO reward
    uses it. An empty enclosing box (both boxes degenerate at one point) gives -1."""
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    if hull <= 0:
        return -1.0
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = box_area(a) + box_area(b) - float(inter)
    return (inter / union if union > 0 else 0.0) - (float(hull) - union) / float(hull)


def iou_matrix(preds: Sequence[BoxLike], gts: Sequence[BoxLike]) -> np.ndarray:
    """Pairwise IoU, shape (len(preds), len(gts)), vectorised for many boxes."""
    if len(preds) == 0 or len(gts) == 0:
        return np.zeros((len(preds), len(gts)), dtype=np.float64)
    p = np.asarray(preds, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gts, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(p[:, None, 0], g[None, :, 0])
    iy1 = np.maximum(p[:, None, 1], g[None, :, 1])
    ix2 = np.minimum(p[:, None, 2], g[None, :, 2])
    iy2 = np.minimum(p[:, None, 3], g[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    pa = np.clip(p[:, 2] - p[:, 0], 0, None) * np.clip(p[:, 3] - p[:, 1], 0, None)
    ga = np.clip(g[:, 2] - g[:, 0], 0, None) * np.clip(g[:, 3] - g[:, 1], 0, None)
    union = pa[:, None] + ga[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


def take_one_to_one(ranked: Iterable[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """Keep each ``(pred_index, gt_index, value)`` pair of ``ranked`` (best first) whose prediction and
    ground-truth box are both still free: greedy one-to-one pairing, shared by the matching below and
    the graded GRPO reward, which ranks by GIoU instead of IoU."""
    used_p: set[int] = set()
    used_g: set[int] = set()
    out = []
    for p, g, v in ranked:
        if p in used_p or g in used_g:
            continue
        used_p.add(p)
        used_g.add(g)
        out.append((p, g, v))
    return out


def match_boxes(
    preds: Sequence[BoxLike], gts: Sequence[BoxLike], threshold: float, *, strict: bool = False
) -> list[tuple[int, int, float]]:
    """One-to-one greedy matching by IoU.

    Candidate pairs with IoU >= ``threshold`` (> when ``strict``) are taken in order of decreasing
    IoU, ties broken by prediction then ground-truth index so results are deterministic; each box
    is used at most once. Returns ``(pred_index, gt_index, iou)`` triples.
    """
    if not preds or not gts:
        return []
    if len(preds) * len(gts) <= 64:  # the common case: a few boxes; numpy overhead would dominate
        cands = []
        for p, pb in enumerate(preds):
            for g, gb in enumerate(gts):
                v = iou(pb, gb)
                if v > 0 and (v > threshold if strict else v >= threshold):
                    cands.append((-v, p, g))
        return take_one_to_one((p, g, -nv) for nv, p, g in sorted(cands))
    m = iou_matrix(preds, gts)
    ok = m > threshold if strict else m >= threshold
    ok &= m > 0  # a zero-overlap pair never matches, even at threshold 0
    pi, gi = np.nonzero(ok)
    if len(pi) == 0:
        return []
    vals = m[pi, gi]
    order = np.lexsort((gi, pi, -vals))
    return take_one_to_one((int(pi[k]), int(gi[k]), float(vals[k])) for k in order)
