"""MANTA (the MANTA-Tiny release): five-view montages, one sample per view.

::

    ROOT/<domain>/<class>/train/good/<id>.png
    ROOT/<domain>/<class>/test/{good,<defect>}/<id>.png
    ROOT/<domain>/<class>/ground_truth/<defect>/<id>.png      (or <id>_mask.png)

Every image is a montage of five square views of one object, side by side (1280x256) or, in older
copies, stacked (256x1280); masks are montages cut the same way. Each view becomes one sample
(``view`` 1..5) cropped from the montage; the five share a group id so that they always land in
the same split. A view of an anomalous montage whose part of the mask is empty shows no defect
and is imported as normal (``montage_label: anomalous`` records where it came from), as Real-IAD
labels its cameras. ``ROOT`` may also be a single domain (``ROOT/<class>/train/...``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mmrbench.data.importers.common import ImportFormatError, RawItem, image_size, read_mask
from mmrbench.data.importers.mvteclike import TreeSpec, is_category, walk_category

VIEWS = 5


def panels(path: Path) -> list[tuple[int, int, int, int]]:
    """The five view rectangles of a montage, left to right or top to bottom."""
    w, h = image_size(path)
    if w == VIEWS * h:
        return [(k * h, 0, (k + 1) * h, h) for k in range(VIEWS)]
    if h == VIEWS * w:
        return [(0, k * w, w, (k + 1) * w) for k in range(VIEWS)]
    raise ImportFormatError(f"{path}: expected a montage of {VIEWS} square views ({VIEWS * 256}x256 or "
                            f"256x{VIEWS * 256}); found a {w}x{h} image")


def class_dirs(root: Path) -> list[tuple[str | None, Path]]:
    from mmrbench.data.importers.layout import layout_error

    if not root.is_dir():
        raise layout_error("manta", root)
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    out: list[tuple[str | None, Path]] = []
    for d in subs:
        if is_category(d):
            out.append((None, d))  # ROOT is one domain
            continue
        out += [(d.name, c) for c in sorted(x for x in d.iterdir() if x.is_dir()) if is_category(c)]
    if not out:
        raise layout_error("manta", root, "no <domain>/<class>/train folder")
    return out


def walk_manta(root: Path, subdataset: str = "MANTA") -> Iterator[RawItem]:
    spec = TreeSpec("manta", subdataset, mask_stems=("{stem}", "{stem}_mask"))
    seen: dict[str, Path] = {}
    for domain, d in class_dirs(Path(root)):
        cls = d.name
        if cls in seen:
            raise ImportFormatError(f"{d}: class '{cls}' also at {seen[cls]}")
        seen[cls] = d
        extra = {"domain": domain} if domain else {}
        pre = f"{subdataset}/{domain}/{cls}" if domain else f"{subdataset}/{cls}"
        for it in walk_category(cls, d, spec, extra=extra, id_prefix=pre):
            rects = panels(it.image)
            mask = read_mask(it.mask) if it.mask is not None else None
            iw, ih = image_size(it.image)
            for k, r in enumerate(rects, start=1):
                label, extra_v = it.label, {**it.extra, "view": k}
                if mask is not None:
                    sx, sy = mask.shape[1] / iw, mask.shape[0] / ih
                    part = mask[round(r[1] * sy):round(r[3] * sy), round(r[0] * sx):round(r[2] * sx)]
                    if not part.any():
                        label, extra_v = "normal", {**extra_v, "montage_label": "anomalous"}
                yield RawItem(it.subdataset, it.category, it.split, label, it.image,
                              defect=it.defect if label == "anomalous" else None,
                              mask=it.mask if label == "anomalous" else None,
                              id=f"{it.id}/v{k}", group=it.id, crop=r, extra=extra_v)
