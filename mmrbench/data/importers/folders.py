"""Folder-per-defect layouts: MVTec AD, MPDD (same layout) and MVTec 3D-AD (RGB part).

MVTec AD / MPDD::

    ROOT/<category>/train/good/000.png
    ROOT/<category>/test/good/000.png
    ROOT/<category>/test/<defect>/000.png
    ROOT/<category>/ground_truth/<defect>/000_mask.png

MVTec 3D-AD (only the RGB images and masks are used; the xyz point clouds are ignored)::

    ROOT/<category>/train/good/rgb/000.png
    ROOT/<category>/validation/good/rgb/000.png     (normals, imported as train)
    ROOT/<category>/test/good/rgb/000.png
    ROOT/<category>/test/<defect>/rgb/000.png
    ROOT/<category>/test/<defect>/gt/000.png
"""
from __future__ import annotations

from pathlib import Path

from mmrbench.data.importers.common import ImportFormatError, RawItem, list_images, require_dir

GOOD = "good"


def _categories(root: Path, fmt: str) -> list[Path]:
    require_dir(root, f"{fmt} root")
    cats = sorted(p for p in root.iterdir() if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir()))
    if not cats:
        raise ImportFormatError(f"no category folders (<category>/train, <category>/test) under {root} for format '{fmt}'")
    return cats


def walk_mvtec(root: Path, subdataset: str = "MVTecAD", fmt: str = "mvtec") -> list[RawItem]:
    items: list[RawItem] = []
    for cat_dir in _categories(root, fmt):
        cat = cat_dir.name
        train_good = require_dir(cat_dir / "train" / GOOD, f"normal training images of '{cat}'")
        for p in list_images(train_good):
            items.append(RawItem(subdataset, cat, "train", "normal", p))
        test_dir = require_dir(cat_dir / "test", f"test images of '{cat}'")
        gt_dir = cat_dir / "ground_truth"
        for defect_dir in sorted(d for d in test_dir.iterdir() if d.is_dir()):
            defect = defect_dir.name
            images = list_images(defect_dir)
            if defect == GOOD:
                items += [RawItem(subdataset, cat, "test", "normal", p) for p in images]
                continue
            stems = {p.stem for p in images}
            for p in images:
                mask = gt_dir / defect / f"{p.stem}_mask.png"
                if not mask.is_file():
                    alt = [q for q in (gt_dir / defect).glob(f"{p.stem}_mask.*")] if (gt_dir / defect).is_dir() else []
                    if not alt:
                        raise ImportFormatError(f"mask not found for anomalous image {p}: expected {mask}")
                    mask = alt[0]
                items.append(RawItem(subdataset, cat, "test", "anomalous", p, defect=defect, mask=mask))
            if (gt_dir / defect).is_dir():
                for m in list_images(gt_dir / defect):
                    stem = m.stem[:-5] if m.stem.endswith("_mask") else m.stem
                    if stem not in stems:
                        raise ImportFormatError(f"mask without image: {m} (no {defect_dir}/{stem}.*)")
    return items


def walk_mpdd(root: Path, subdataset: str = "MPDD") -> list[RawItem]:
    return walk_mvtec(root, subdataset, fmt="mpdd")


def walk_mvtec3d(root: Path, subdataset: str = "MVTec3D") -> list[RawItem]:
    items: list[RawItem] = []
    for cat_dir in _categories(root, "mvtec3d"):
        cat = cat_dir.name
        rgb = require_dir(cat_dir / "train" / GOOD / "rgb", f"normal training images of '{cat}'")
        for p in list_images(rgb):
            items.append(RawItem(subdataset, cat, "train", "normal", p))
        val = cat_dir / "validation" / GOOD / "rgb"
        if val.is_dir():
            for p in list_images(val):
                items.append(RawItem(subdataset, cat, "train", "normal", p, extra={"source_split": "validation"}))
        test_dir = require_dir(cat_dir / "test", f"test images of '{cat}'")
        for defect_dir in sorted(d for d in test_dir.iterdir() if d.is_dir()):
            defect = defect_dir.name
            rgb_dir = require_dir(defect_dir / "rgb", f"RGB images of {cat}/test/{defect}")
            images = list_images(rgb_dir)
            if defect == GOOD:
                items += [RawItem(subdataset, cat, "test", "normal", p) for p in images]
                continue
            gt = defect_dir / "gt"
            stems = {p.stem for p in images}
            for p in images:
                mask = gt / f"{p.stem}.png"
                if not mask.is_file():
                    raise ImportFormatError(f"mask not found for anomalous image {p}: expected {mask}")
                items.append(RawItem(subdataset, cat, "test", "anomalous", p, defect=defect, mask=mask))
            if gt.is_dir():
                for m in list_images(gt):
                    if m.stem not in stems:
                        raise ImportFormatError(f"mask without image: {m} (no {rgb_dir}/{m.stem}.*)")
    return items
