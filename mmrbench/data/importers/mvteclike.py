"""MVTec-like trees of the newer sources: GoodsAD, MIAD, WFDD, TextureAD, 3CAD (and MANTA's classes).

::

    ROOT/<category>/train/good/<id>.<ext>
    ROOT/<category>/validation/good/<id>.<ext>     (optional; normals, imported as train)
    ROOT/<category>/test/good/<id>.<ext>
    ROOT/<category>/test/<defect>/<id>.<ext>
    ROOT/<category>/ground_truth/<defect>/<mask name>

What differs between sources is only how a mask is named (``<id>_mask.png`` for MIAD,
``<id>.png`` for GoodsAD and 3CAD, unknown for WFDD), the image extension (GoodsAD ships .jpg
images with .png masks), a doubled category folder (``<cat>/<cat>/train``, seen in MIAD copies)
and spellings of category names. :class:`TreeSpec` carries those; the walk is shared.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from mmrbench.data.importers.common import IMAGE_EXTS, ImportFormatError, RawItem, list_images

log = logging.getLogger(__name__)
GOOD = "good"


@dataclass(frozen=True)
class TreeSpec:
    fmt: str
    subdataset: str
    #: mask file stems tried in order; ``{stem}`` is the image's stem (any image extension matches)
    mask_stems: tuple[str, ...] = ("{stem}_mask", "{stem}")
    #: pair images and masks by sorted order when no stem matches and the counts agree (WFDD)
    pair_by_order: bool = False
    #: category spellings -> the canonical name
    rename: dict[str, str] = field(default_factory=dict)
    #: folder names under the root that are not categories
    ignore: tuple[str, ...] = ()


def is_category(d: Path) -> bool:
    return (d / "train").is_dir() or (d / "test").is_dir()


def category_dirs(root: Path, spec: TreeSpec) -> list[tuple[str, Path]]:
    """(canonical name, folder) of every category; accepts the doubled ``<cat>/<cat>/`` variant."""
    from mmrbench.data.importers.layout import layout_error

    if not root.is_dir():
        raise layout_error(spec.fmt, root)
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name in spec.ignore:
            continue
        if is_category(d):
            out.append((spec.rename.get(d.name, d.name), d))
        elif is_category(d / d.name):
            out.append((spec.rename.get(d.name, d.name), d / d.name))
    if not out:
        raise layout_error(spec.fmt, root, "no <category>/train or <category>/test folder")
    return out


def _find_mask(gt: Path, stem: str, spec: TreeSpec) -> Path | None:
    if not gt.is_dir():
        return None
    for pattern in spec.mask_stems:
        name = pattern.format(stem=stem)
        for ext in (".png",) + tuple(e for e in IMAGE_EXTS if e != ".png"):
            for cand in (gt / f"{name}{ext}", gt / f"{name}{ext.upper()}"):
                if cand.is_file():
                    return cand
    return None


def walk_category(name: str, cat_dir: Path, spec: TreeSpec, *, extra: dict | None = None,
                  id_prefix: str | None = None) -> Iterator[RawItem]:
    sub = spec.subdataset
    extra = dict(extra or {})
    train_good = cat_dir / "train" / GOOD
    if not train_good.is_dir():
        raise ImportFormatError(f"{cat_dir}: expected train/good/ with the normal training images; found "
                                f"{', '.join(sorted(p.name for p in cat_dir.iterdir())) or 'nothing'}")
    prefix = id_prefix or f"{sub}/{name}"
    for p in list_images(train_good):
        yield RawItem(sub, name, "train", "normal", p, id=f"{prefix}/train/good/{p.stem}", extra=dict(extra))
    val = cat_dir / "validation" / GOOD
    if val.is_dir():
        for p in list_images(val):
            yield RawItem(sub, name, "train", "normal", p, id=f"{prefix}/validation/good/{p.stem}",
                          extra={**extra, "source_split": "validation"})
    test_dir = cat_dir / "test"
    if not test_dir.is_dir():
        return
    gt_root = cat_dir / "ground_truth"
    for defect_dir in sorted(d for d in test_dir.iterdir() if d.is_dir()):
        defect = defect_dir.name
        images = list_images(defect_dir)
        if defect == GOOD:
            for p in images:
                yield RawItem(sub, name, "test", "normal", p, id=f"{prefix}/test/good/{p.stem}", extra=dict(extra))
            continue
        gt = gt_root / defect
        masks = {p: _find_mask(gt, p.stem, spec) for p in images}
        if spec.pair_by_order and images and not any(masks.values()) and gt.is_dir():
            found = list_images(gt)
            if len(found) == len(images):
                log.info("%s: no mask shares an image's name; pairing %d masks by sorted order", gt, len(found))
                masks = dict(zip(images, found))
        for p in images:
            m = masks[p]
            if m is None:
                tried = ", ".join(f"{s.format(stem=p.stem)}.png" for s in spec.mask_stems)
                raise ImportFormatError(f"{p}: anomalous image without a mask: expected {gt}/{{{tried}}}; found "
                                        f"{'no folder ' + str(gt) if not gt.is_dir() else 'no such file'}")
            yield RawItem(sub, name, "test", "anomalous", p, defect=defect, mask=m,
                          id=f"{prefix}/test/{defect}/{p.stem}", extra=dict(extra))


def walk_tree(root: Path, spec: TreeSpec) -> Iterator[RawItem]:
    seen: dict[str, Path] = {}
    for name, d in category_dirs(Path(root), spec):
        if name in seen:
            raise ImportFormatError(f"{d}: category '{name}' also at {seen[name]} (two spellings of one category)")
        seen[name] = d
        yield from walk_category(name, d, spec)


#: the MVTec-like sources; LAYOUTS.md records where each convention comes from
SPECS = {
    "goodsad": TreeSpec("goodsad", "GoodsAD", mask_stems=("{stem}", "{stem}_mask")),
    "miad": TreeSpec("miad", "MIAD", mask_stems=("{stem}_mask", "{stem}")),
    "wfdd": TreeSpec("wfdd", "WFDD", mask_stems=("{stem}", "{stem}_mask"), pair_by_order=True, ignore=("fg_mask",)),
    "texturead": TreeSpec("texturead", "TextureAD", mask_stems=("{stem}", "{stem}_mask")),
    "3cad": TreeSpec("3cad", "3CAD", mask_stems=("{stem}", "{stem}_mask"),
                     rename={"Aluminum_Middle-Frame": "Aluminum_Middle_Frame"}),
}
