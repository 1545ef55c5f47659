"""VisA: images listed in ``split_csv/1cls.csv``.

::

    ROOT/split_csv/1cls.csv           columns: object, split, label, image, mask
    ROOT/<object>/Data/Images/Normal/0000.JPG
    ROOT/<object>/Data/Images/Anomaly/000.JPG
    ROOT/<object>/Data/Masks/Anomaly/000.png
    ROOT/<object>/image_anno.csv      optional: image, label, mask (defect names, e.g. "chunk of wax missing")

``label`` is ``normal`` or ``anomaly``; ``image``/``mask`` are paths relative to ROOT. VisA's split
CSV carries no defect names, so box labels come from ``image_anno.csv`` when present (several
comma-separated names are joined with ``", "``), else ``anomaly``.
"""
from __future__ import annotations

import csv
from pathlib import Path

from mmrbench.data.importers.common import ImportFormatError, RawItem, require_dir

REQUIRED = ("object", "split", "label", "image", "mask")


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            fields = [c.strip() for c in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ImportFormatError(f"cannot read {path}: {exc}") from None
    missing = [c for c in REQUIRED if c not in fields]
    if missing:
        raise ImportFormatError(f"{path}: missing column(s) {', '.join(missing)} (have: {', '.join(fields)})")
    return [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in rows]


def _defect_names(root: Path, obj: str) -> dict[str, str]:
    anno = root / obj / "image_anno.csv"
    if not anno.is_file():
        return {}
    with open(anno, newline="", encoding="utf-8-sig") as f:
        out = {}
        for r in csv.DictReader(f):
            img, lab = (r.get("image") or "").strip(), (r.get("label") or "").strip()
            if img and lab:
                out[Path(img).as_posix()] = ", ".join(p.strip() for p in lab.split(",") if p.strip())
        return out


def walk_visa(root: Path, subdataset: str = "VisA", split_csv: str = "split_csv/1cls.csv") -> list[RawItem]:
    require_dir(root, "VisA root")
    csv_path = root / split_csv
    if not csv_path.is_file():
        raise ImportFormatError(f"VisA split file not found: {csv_path}")
    rows = _read_csv(csv_path)
    items: list[RawItem] = []
    names: dict[str, dict[str, str]] = {}
    for n, r in enumerate(rows, start=2):
        obj, split, label = r["object"], r["split"].lower(), r["label"].lower()
        if split not in ("train", "test"):
            raise ImportFormatError(f"{csv_path}:{n}: unknown split '{r['split']}'")
        if label not in ("normal", "anomaly", "anomalous"):
            raise ImportFormatError(f"{csv_path}:{n}: unknown label '{r['label']}'")
        img = root / r["image"]
        if not img.is_file():
            raise ImportFormatError(f"{csv_path}:{n}: image not found: {img}")
        if label == "normal":
            items.append(RawItem(subdataset, obj, split, "normal", img))
            continue
        if not r["mask"]:
            raise ImportFormatError(f"{csv_path}:{n}: anomalous image {img} has no mask")
        mask = root / r["mask"]
        if not mask.is_file():
            raise ImportFormatError(f"{csv_path}:{n}: mask not found: {mask}")
        if obj not in names:
            names[obj] = _defect_names(root, obj)
        defect = names[obj].get(Path(r["image"]).as_posix(), "anomaly")
        # VisA's 1cls split puts anomalies only in test; an anomalous "train" row stays train
        items.append(RawItem(subdataset, obj, split, "anomalous", img, defect=defect, mask=mask))
    return items
