"""Score map -> boxes: threshold, contours, bounding rectangles, NMS (paper footnote to Table 4).

Shared by the classical detectors (PaDiM, PatchCore) and the AnomalyGPT bridge, so every model that
produces an anomaly map is turned into boxes the same way.

Pipeline for one threshold ``t``:

1. the map is resized (bilinear) to the original image size ``out_size`` = (W, H), so boxes come out
   in original pixels without a second rounding step;
2. ``map >= t`` gives a binary mask;
3. ``cv2.findContours`` (external contours only: a hole inside a blob is the same defect) and
   ``cv2.boundingRect`` give boxes ``(x, y, x + w, y + h)`` -- x2/y2 exclusive, the manifest convention;
4. boxes whose area (w * h, original pixels) is below ``min_area`` are dropped (speckle);
5. greedy NMS: boxes are ranked by the **maximum map value inside the box** (the peak of the blob is what
   the detector is most sure of; the mean would favour small boxes around a peak over the box of the
   whole defect) and a box whose IoU with an already kept box exceeds ``nms_iou`` is dropped.
   External contours never overlap, but their bounding rectangles can (an L-shaped blob around a
   small one), which is what NMS cleans up.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from mmrbench.geometry import iou

BoxT = tuple[float, float, float, float]

#: defaults used when a recipe does not set them
DEFAULT_MIN_AREA = 0
DEFAULT_NMS_IOU = 0.5


def resize_map(score_map: np.ndarray, out_size: tuple[int, int] | None) -> np.ndarray:
    """Bilinear resize of a (H, W) map to ``out_size`` = (W, H); returns float32."""
    import cv2

    m = np.asarray(score_map, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"score map must be 2-D (H, W), got shape {m.shape}")
    if out_size is None or (int(out_size[0]), int(out_size[1])) == (m.shape[1], m.shape[0]):
        return m
    w, h = int(out_size[0]), int(out_size[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"out_size must be positive (W, H), got {out_size}")
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)


def nms(boxes: Sequence[BoxT], scores: Sequence[float], iou_threshold: float) -> list[int]:
    """Greedy NMS; returns kept indices, highest score first (ties: larger box, then input order)."""
    order = sorted(range(len(boxes)),
                   key=lambda i: (-float(scores[i]), -_area(boxes[i]), i))
    keep: list[int] = []
    for i in order:
        if all(iou(boxes[i], boxes[k]) <= iou_threshold for k in keep):
            keep.append(i)
    return keep


def _area(b: BoxT) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _boxes_on_resized(m: np.ndarray, threshold: float, min_area: float, nms_iou: float) -> list[BoxT]:
    import cv2

    mask = (m >= threshold).astype(np.uint8)
    if not mask.any():
        return []
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes: list[BoxT] = []
    scores: list[float] = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        if w * h < min_area:
            continue
        boxes.append((float(x), float(y), float(x + w), float(y + h)))
        scores.append(float(m[y:y + h, x:x + w].max()))
    keep = nms(boxes, scores, nms_iou)
    return [boxes[i] for i in keep]


def boxes_from_map(score_map: np.ndarray, threshold: float, out_size: tuple[int, int] | None = None,
                   min_area: int = DEFAULT_MIN_AREA, nms_iou: float = DEFAULT_NMS_IOU) -> list[BoxT]:
    """Boxes (x1, y1, x2, y2), original pixels, x2/y2 exclusive, of the regions where map >= threshold.

    ``score_map`` is (H, W), normally normalised to [0, 1]; ``out_size`` is the (W, H) of the original
    image (the map is rescaled to it; None keeps the map's own size). Returned highest-peak first.
    """
    return _boxes_on_resized(resize_map(score_map, out_size), float(threshold), min_area, nms_iou)


def boxes_by_threshold(score_map: np.ndarray, thresholds: Iterable[float],
                       out_size: tuple[int, int] | None = None, min_area: int = DEFAULT_MIN_AREA,
                       nms_iou: float = DEFAULT_NMS_IOU) -> dict[float, list[BoxT]]:
    """:func:`boxes_from_map` for several thresholds, resizing the map once."""
    m = resize_map(score_map, out_size)
    return {float(t): _boxes_on_resized(m, float(t), min_area, nms_iou) for t in thresholds}
