"""MVTec LOCO AD: fine-grained defect names from ``defects_config.json`` pixel values.

::

    ROOT/<cat>/train/good/000.png       ROOT/<cat>/validation/good/000.png  (normals, imported as train)
    ROOT/<cat>/test/{good,logical_anomalies,structural_anomalies}/000.png
    ROOT/<cat>/ground_truth/<kind>/000/000.png, 001.png, ...   one PNG per annotated region
    ROOT/<cat>/defects_config.json      [{defect_name, pixel_value, saturation_threshold, relative_saturation}]

The test folder only says logical or structural; every region PNG is filled with the pixel value
that names its defect in ``defects_config.json``. Each region gives one box per connected
component, labelled with that name (underscores as spaces, as for every source); the kind
(logical/structural) goes to the sample's ``anomaly_kind``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from mmrbench.data.importers.common import ImportFormatError, RawItem, box_label, list_images, read_mask
from mmrbench.data.importers.mvteclike import GOOD, TreeSpec, category_dirs
from mmrbench.data.masks import boxes_from_mask
from mmrbench.data.schema import Box

KINDS = ("logical_anomalies", "structural_anomalies")
SPEC = TreeSpec("loco", "MVTecLOCO")


def read_defects_config(path: Path) -> dict[int, str]:
    """pixel value -> defect name."""
    if not path.is_file():
        raise ImportFormatError(f"{path}: missing (MVTec LOCO names each defect by a pixel value listed there)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise ImportFormatError(f"{path}: expected a list of {{defect_name, pixel_value}} objects, got {type(data).__name__}")
    out: dict[int, str] = {}
    for i, d in enumerate(data):
        if not isinstance(d, dict) or "defect_name" not in d or not isinstance(d.get("pixel_value"), int):
            raise ImportFormatError(f"{path}: entry {i}: expected {{defect_name, pixel_value (int)}}, got {d!r}")
        out[int(d["pixel_value"])] = str(d["defect_name"])
    return out


def region_boxes(region: Path, names: dict[int, str], config: Path) -> list[Box]:
    """Boxes of one region PNG, labelled by its pixel value's defect name."""
    m = read_mask(region)
    vals, counts = np.unique(m[m > 0], return_counts=True)
    if len(vals) == 0:
        return []
    value = int(vals[np.argmax(counts)])
    if value not in names:
        known = ", ".join(f"{v}={n}" for v, n in sorted(names.items()))
        raise ImportFormatError(f"{region}: pixel value {value} is not in {config} (known: {known})")
    return boxes_from_mask(m, box_label(names[value]))




def walk_loco(root: Path, subdataset: str = "MVTecLOCO") -> Iterator[RawItem]:
    spec = TreeSpec("loco", subdataset)
    cats = category_dirs(Path(root), spec)
    for name, d in cats:
        cfg = d / "defects_config.json"
        names = read_defects_config(cfg)
        train = d / "train" / GOOD
        if not train.is_dir():
            raise ImportFormatError(f"{d}: expected train/good/ (MVTec LOCO AD); found "
                                    f"{', '.join(sorted(p.name for p in d.iterdir()))}")
        pre = f"{subdataset}/{name}"
        for p in list_images(train):
            yield RawItem(subdataset, name, "train", "normal", p, id=f"{pre}/train/good/{p.stem}")
        val = d / "validation" / GOOD
        if val.is_dir():
            for p in list_images(val):
                yield RawItem(subdataset, name, "train", "normal", p, id=f"{pre}/validation/good/{p.stem}",
                              extra={"source_split": "validation"})
        test = d / "test"
        for p in list_images(test / GOOD) if (test / GOOD).is_dir() else []:
            yield RawItem(subdataset, name, "test", "normal", p, id=f"{pre}/test/good/{p.stem}")
        others = sorted(x.name for x in test.iterdir() if x.is_dir() and x.name not in KINDS + (GOOD,)) if test.is_dir() else []
        if others:
            raise ImportFormatError(f"{test}: expected good/, logical_anomalies/, structural_anomalies/; found also "
                                    f"{', '.join(others)}/")
        for kind in KINDS:
            kdir = test / kind
            if not kdir.is_dir():
                continue
            for p in list_images(kdir):
                rdir = d / "ground_truth" / kind / p.stem
                if not rdir.is_dir():
                    raise ImportFormatError(f"{p}: expected its region masks in folder {rdir}/ (000.png, 001.png, ...); "
                                            "found no such folder")
                regions = list_images(rdir)
                boxes = [b for r in regions for b in region_boxes(r, names, cfg)]
                types = sorted({b.label for b in boxes})
                yield RawItem(subdataset, name, "test", "anomalous", p, defect=", ".join(types) or kind,
                              boxes=boxes, id=f"{pre}/test/{kind}/{p.stem}",
                              extra={"anomaly_kind": kind.split("_")[0], "mask_regions": len(regions)})
