"""CableInspect-AD: COCO-style box annotations, one JSON per cable.

::

    ROOT/cable_1.json, cable_2.json, cable_3.json     COCO: images, annotations (bbox + attributes), categories
    ROOT/cable_{1,2,3}_seg.json                        polygons of pass 01 only (not used)
    ROOT/Cable_1/images/01/<name>.png                  file_name in the JSON is relative to ROOT

Boxes come from the annotations (``bbox`` = x, y, width, height; ``attributes.rotation`` in degrees
turns the box about its centre, and the axis-aligned box around it is kept), labelled with the
annotation's category name (Bent strand, Broken strands, ...). An image without annotations is
normal. The release has no train/test folders (the authors use k-fold CSVs), so the import
decides: anomalous images are test queries; the normal frames of each pass alternate train
(the reference pool) and test, in file-name order. The category is the cable (Cable_1..3).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

from mmrbench.data.importers.common import ImportFormatError, RawItem
from mmrbench.data.schema import Box


def _rotated_aabb(x: float, y: float, w: float, h: float, deg: float) -> tuple[float, float, float, float]:
    if not deg:
        return x, y, x + w, y + h
    cx, cy = x + w / 2, y + h / 2
    c, s = abs(math.cos(math.radians(deg))), abs(math.sin(math.radians(deg)))
    hw, hh = (w * c + h * s) / 2, (w * s + h * c) / 2
    return cx - hw, cy - hh, cx + hw, cy + hh


def coco_boxes(anns: list[dict], cats: dict[int, str], width: int, height: int, where: str) -> list[Box]:
    out = []
    for a in anns:
        b = a.get("bbox")
        if not (isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)):
            raise ImportFormatError(f"{where}: annotation {a.get('id')}: expected bbox [x, y, w, h], got {b!r}")
        if a.get("category_id") not in cats:
            raise ImportFormatError(f"{where}: annotation {a.get('id')}: unknown category_id {a.get('category_id')!r}")
        rot = float((a.get("attributes") or {}).get("rotation") or 0.0)
        bx, by, bw, bh = (float(v) for v in b)  # length checked above
        x1, y1, x2, y2 = _rotated_aabb(bx, by, bw, bh, rot)
        x1, y1 = max(0, math.floor(x1)), max(0, math.floor(y1))
        x2, y2 = min(width, math.ceil(x2)), min(height, math.ceil(y2))
        if x2 > x1 and y2 > y1:
            out.append(Box(x1, y1, x2, y2, cats[a["category_id"]]))
    return out


def _find_jsons(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("cable_*.json") if not p.stem.endswith("_seg"))


def walk_cableinspect(root: Path, subdataset: str = "CableInspect") -> Iterator[RawItem]:
    from mmrbench.data.importers.common import image_size
    from mmrbench.data.importers.layout import layout_error

    root = Path(root)
    if not root.is_dir():
        raise layout_error("cableinspect", root)
    jsons = _find_jsons(root)
    if not jsons:
        raise layout_error("cableinspect", root, "no cable_<n>.json")
    for jf in jsons:
        try:
            d = json.loads(jf.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ImportFormatError(f"{jf}: not valid JSON ({exc})") from None
        if not isinstance(d, dict) or not all(isinstance(d.get(k), list) for k in ("images", "annotations", "categories")):
            raise ImportFormatError(f"{jf}: expected COCO keys images, annotations, categories; found "
                                    f"{', '.join(d) if isinstance(d, dict) else type(d).__name__}")
        cats = {c["id"]: str(c["name"]) for c in d["categories"] if isinstance(c, dict) and "id" in c and "name" in c}
        by_image: dict[object, list[dict]] = {}  # keyed by the JSON image_id as given
        for a in d["annotations"]:
            if isinstance(a, dict):
                by_image.setdefault(a.get("image_id"), []).append(a)
        cable = "Cable_" + jf.stem.split("_", 1)[1]
        normals: dict[str, list[RawItem]] = {}
        anomalous: list[RawItem] = []
        for im in sorted(d["images"], key=lambda x: str(x.get("file_name", ""))):
            fn = im.get("file_name")
            if not isinstance(fn, str):
                raise ImportFormatError(f"{jf}: image {im.get('id')}: missing file_name")
            path = root / fn
            if not path.is_file():
                alt = list((root / cable / "images").glob(f"*/{Path(fn).name}"))
                if not alt:
                    raise ImportFormatError(f"{jf}: image {im.get('id')}: expected {path} (or {cable}/images/<pass>/"
                                            f"{Path(fn).name}); found no such file")
                path = alt[0]
            rel = path.relative_to(root)
            pass_id = rel.parent.name
            sid = f"{subdataset}/{rel.with_suffix('').as_posix()}"
            anns = by_image.get(im.get("id"), [])
            if anns:
                w, h = image_size(path)
                boxes = coco_boxes(anns, cats, w, h, str(jf))
                types = sorted({b.label for b in boxes})
                anomalous.append(RawItem(subdataset, cable, "test", "anomalous", path, defect=", ".join(types),
                                         boxes=boxes, id=sid,
                                         extra={"pass": pass_id, "anomaly_ids": sorted({str((a.get("attributes") or {}).get("anomaly_id")) for a in anns})}))
            else:
                normals.setdefault(pass_id, []).append(RawItem(subdataset, cable, "train", "normal", path, id=sid,
                                                               extra={"pass": pass_id}))
        for pass_id, its in sorted(normals.items()):
            for k, it in enumerate(its):
                if k % 2:
                    it.split = "test"
                yield it
        yield from anomalous
