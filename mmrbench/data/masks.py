"""Ground-truth masks -> boxes: one box per connected component.

MMR-AD's boxes are the bounding rectangles of the connected components of the pixel masks that
the source datasets ship. We use 8-connectivity (a diagonal stroke such as a thin scratch stays one
defect) and drop components smaller than ``MIN_COMPONENT_AREA`` pixels: real masks carry stray
anti-aliasing specks from resizing/annotation tools, and a 1-3 pixel box is not a defect anyone can
localise (IoU with any prediction is meaningless at that size).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mmrbench.data.schema import Box

#: components with fewer pixels than this are ignored (annotation specks)
MIN_COMPONENT_AREA = 4


def _binary(mask) -> np.ndarray:
    a = np.asarray(mask)
    if a.ndim == 3:
        a = a.max(axis=2)
    return (a > 0).astype(np.uint8)


def mask_components(mask, *, min_area: int = MIN_COMPONENT_AREA) -> tuple[np.ndarray, list[tuple[int, int, int, int, int]]]:
    """Label image plus ``(label_id, x1, y1, x2, y2)`` for every kept component (x2/y2 exclusive).

    Components are returned in the order OpenCV labels them (raster order of their first pixel),
    which is deterministic for a given mask.
    """
    import cv2

    binary = _binary(mask)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    comps = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area:
            continue
        comps.append((i, x, y, x + w, y + h))
    return labels, comps


def boxes_from_mask(mask, label: str = "", *, min_area: int = MIN_COMPONENT_AREA) -> list[Box]:
    """Bounding boxes of the mask's connected components (8-connectivity), all with ``label``."""
    _, comps = mask_components(mask, min_area=min_area)
    return [Box(x1, y1, x2, y2, label) for _, x1, y1, x2, y2 in comps]


def boxes_from_labelled_masks(masks: Sequence[tuple[np.ndarray, str]], *,
                              min_area: int = MIN_COMPONENT_AREA) -> list[Box]:
    """Boxes of the union of several defect masks, each labelled by the defect covering most of it.

    The union is what a dataset ships as its ground-truth mask, so its components define the boxes;
    the per-defect masks only decide the label of each component.
    """
    if not masks:
        return []
    union = np.zeros(_binary(masks[0][0]).shape, np.uint8)
    for m, _ in masks:
        union |= _binary(m)
    labels, comps = mask_components(union, min_area=min_area)
    out = []
    for lid, x1, y1, x2, y2 in comps:
        comp = labels[y1:y2, x1:x2] == lid
        best, best_n = "", -1
        for m, lab in masks:
            n = int((_binary(m)[y1:y2, x1:x2].astype(bool) & comp).sum())
            if n > best_n:
                best, best_n = lab, n
        out.append(Box(x1, y1, x2, y2, best))
    return out
