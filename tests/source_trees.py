"""Miniature trees of the 14 MMR-AD sources, each in its documented on-disk layout with the quirks
LAYOUTS.md records. Each builder returns the root; images are tiny noise with a dark stripe so that
reference retrieval has something to align on. Category names are distinct across sources (as in
the real datasets) except where a test wants a clash."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

S = 48  # image side


def img(path: Path, seed: int, size=(S, S), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    a = (rng.random((size[1], size[0], 3)) * 60 + 100).astype(np.uint8)
    a[5:10, seed % 20:(seed % 20) + 15] = 30
    Image.fromarray(a).save(path, format=fmt, quality=95) if str(path).lower().endswith((".jpg", ".jpeg")) \
        else Image.fromarray(a).save(path, format=fmt)
    return path


def mask(path: Path, rects, size=(S, S), value=255) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((size[1], size[0]), np.uint8)
    for x1, y1, x2, y2 in rects:
        m[y1:y2, x1:x2] = value
    Image.fromarray(m).save(path)
    return path


A = [(4, 4, 12, 10)]
B = [(4, 4, 12, 10), (30, 30, 40, 44)]


def mvtec(root: Path, cats=("bottle",), mask_suffix="_mask", ext=".png", defect="broken_large") -> Path:
    for ci, cat in enumerate(cats):
        for i in range(3):
            img(root / cat / "train" / "good" / f"{i:03d}{ext}", 100 * ci + i)
        img(root / cat / "test" / "good" / f"000{ext}", 100 * ci + 10)
        img(root / cat / "test" / defect / f"000{ext}", 100 * ci + 11)
        mask(root / cat / "ground_truth" / defect / f"000{mask_suffix}.png", B)
    return root


def visa(root: Path, obj="candle") -> Path:
    rows = ["object,split,label,image,mask"]
    for i in range(3):
        rel = f"{obj}/Data/Images/Normal/{i:04d}.JPG"
        img(root / rel, i, fmt="JPEG")
        rows.append(f"{obj},train,normal,{rel},")
    rel = f"{obj}/Data/Images/Normal/0009.JPG"
    img(root / rel, 9, fmt="JPEG")
    rows.append(f"{obj},test,normal,{rel},")
    rel, mrel = f"{obj}/Data/Images/Anomaly/000.JPG", f"{obj}/Data/Masks/Anomaly/000.png"
    img(root / rel, 11, fmt="JPEG")
    mask(root / mrel, A)
    rows.append(f"{obj},test,anomaly,{rel},{mrel}")
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root


def mvtec3d(root: Path, cat="bagel") -> Path:
    for i in range(2):
        img(root / cat / "train" / "good" / "rgb" / f"{i:03d}.png", i)
    img(root / cat / "test" / "good" / "rgb" / "000.png", 6)
    img(root / cat / "test" / "crack" / "rgb" / "000.png", 7)
    mask(root / cat / "test" / "crack" / "gt" / "000.png", A)
    return root


LOCO_CONFIG = [
    {"defect_name": "missing_banana", "pixel_value": 255, "saturation_threshold": 1000, "relative_saturation": False},
    {"defect_name": "wrong_ratio", "pixel_value": 245, "saturation_threshold": 1.0, "relative_saturation": True},
    {"defect_name": "box_damaged", "pixel_value": 234, "saturation_threshold": 500, "relative_saturation": False},
]


def loco(root: Path, cat="breakfast_box") -> Path:
    c = root / cat
    for i in range(2):
        img(c / "train" / "good" / f"{i:03d}.png", i)
    img(c / "validation" / "good" / "000.png", 3)
    img(c / "test" / "good" / "000.png", 4)
    img(c / "test" / "logical_anomalies" / "000.png", 5)
    # two region PNGs: one region (value 255, one component), one region (value 245, two components)
    mask(c / "ground_truth" / "logical_anomalies" / "000" / "000.png", [(2, 2, 10, 8)], value=255)
    mask(c / "ground_truth" / "logical_anomalies" / "000" / "001.png", [(20, 20, 26, 30), (35, 5, 45, 15)], value=245)
    img(c / "test" / "structural_anomalies" / "000.png", 6)
    mask(c / "ground_truth" / "structural_anomalies" / "000" / "000.png", [(10, 30, 20, 40)], value=234)
    (c / "defects_config.json").write_text(json.dumps(LOCO_CONFIG))
    return root


def goodsad(root: Path, cat="drink_can") -> Path:
    c = root / cat
    for i in range(2):
        img(c / "train" / "good" / f"003_{i:03d}.jpg", i)
    img(c / "test" / "good" / "005_000.jpg", 4)
    img(c / "test" / "surface_damage" / "005_001.jpg", 5)
    mask(c / "ground_truth" / "surface_damage" / "005_001.png", B)  # .jpg image, same-stem .png mask
    return root


REALIAD_CAT = "audiojack"


def realiad(root: Path, cat=REALIAD_CAT, nested_json=False) -> Path:
    """Two OK objects (train), NG objects: BX seen on C1 only (C2's JSON says OK), a doubled-underscore
    HS object, a PS object whose mask is empty, and an object the JSON puts half in train."""
    res = root / "realiad_1024" / cat
    train, test = [], []

    def entry(rel_img, cls, rel_mask=None):
        return {"category": cat, "anomaly_class": cls, "image_path": rel_img, "mask_path": rel_mask}

    for obj in (1, 2):
        for v in (1, 2):
            rel = f"OK/S{obj:04d}/{cat}_{obj:04d}_OK_C{v}_2023092{obj}{v}.jpg"
            img(res / rel, 10 * obj + v)
            train.append(entry(rel, "OK"))
    # NG/BX object 3: C1 anomalous with mask, C2 under NG/ but the JSON says OK (no mask)
    r1 = f"NG/BX/S0003/{cat}_0003_NG_BX_C1_20230923.jpg"
    img(res / r1, 31)
    mask(res / r1.replace(".jpg", ".png"), B)
    test.append(entry(r1, "BX", r1.replace(".jpg", ".png")))
    r2 = f"NG/BX/S0003/{cat}_0003_NG_BX_C2_20230923.jpg"
    img(res / r2, 32)
    test.append(entry(r2, "OK"))
    # doubled underscore in the name
    r3 = f"NG/HS/S0004/{cat}__0004_NG_HS_C1_20230924.jpg"
    img(res / r3, 41)
    mask(res / r3.replace(".jpg", ".png"), A)
    test.append(entry(r3, "HS", r3.replace(".jpg", ".png")))
    r3b = f"NG/HS/S0004/{cat}__0004_NG_HS_C2_20230924.jpg"
    img(res / r3b, 42)
    mask(res / r3b.replace(".jpg", ".png"), [(20, 20, 30, 26)])
    test.append(entry(r3b, "HS", r3b.replace(".jpg", ".png")))
    # empty NG mask: skipped
    r4 = f"NG/PS/S0005/{cat}_0005_NG_PS_C1_20230925.jpg"
    img(res / r4, 51)
    mask(res / r4.replace(".jpg", ".png"), [])
    test.append(entry(r4, "PS", r4.replace(".jpg", ".png")))
    # object 6: the JSON lists C1 in train and C2 in test -> the whole object goes to test
    r5 = f"OK/S0006/{cat}_0006_OK_C1_20230926.jpg"
    r6 = f"OK/S0006/{cat}_0006_OK_C2_20230926.jpg"
    img(res / r5, 61)
    img(res / r6, 62)
    train.append(entry(r5, "OK"))
    test.append(entry(r6, "OK"))
    jdir = root / "realiad_jsons" / ("realiad_jsons" if nested_json else "")
    jdir.mkdir(parents=True, exist_ok=True)
    (jdir / f"{cat}.json").write_text(json.dumps({"meta": {"prefix": f"{cat}/", "normal_class": "OK"},
                                                  "train": train, "test": test}))
    return root


def realiad_d3(root: Path, cat="limit-switch") -> Path:
    entries = {"train": [], "validation": [], "test": []}
    for i in range(2):
        rel = f"{cat}/OK/{i:04d}/rgb.png"
        img(root / rel, i)
        entries["train"].append({"category": cat, "anomaly_class": "OK", "image_path": rel, "mask_path": None,
                                 "ps_path": rel.replace("rgb", "ps"), "xyz_path": rel.replace("rgb.png", "xyz.tiff")})
    rel = f"{cat}/OK/0009/rgb.png"
    img(root / rel, 9)
    entries["validation"].append({"category": cat, "anomaly_class": "OK", "image_path": rel, "mask_path": None})
    rel = f"{cat}/OK/0010/rgb.png"
    img(root / rel, 10)
    entries["test"].append({"category": cat, "anomaly_class": "OK", "image_path": rel, "mask_path": None})
    rel, mrel = f"{cat}/NG/AK/0011/rgb.png", f"{cat}/NG/AK/0011/mask.png"
    img(root / rel, 11)
    mask(root / mrel, A)
    entries["test"].append({"category": cat, "anomaly_class": "AK", "image_path": rel, "mask_path": mrel})
    (root / f"{cat}.json").write_text(json.dumps({"meta": {"normal_class": "OK"}, **entries}))
    return root


V = 32  # MANTA view side


def manta(root: Path, domain="electronics", cls="led", stacked=False) -> Path:
    c = root / domain / cls
    size = (V, 5 * V) if stacked else (5 * V, V)

    def at(view, x1, y1, x2, y2):  # rectangle inside view k (1-based)
        o = (view - 1) * V
        return (x1, y1 + o, x2, y2 + o) if stacked else (x1 + o, y1, x2 + o, y2)

    for i in range(2):
        img(c / "train" / "good" / f"{i}.png", i, size=size)
    img(c / "test" / "good" / "0.png", 5, size=size)
    img(c / "test" / "scratch" / "0.png", 6, size=size)
    mask(c / "ground_truth" / "scratch" / "0.png", [at(2, 4, 4, 12, 10), at(4, 20, 20, 28, 30)], size=size)
    return root


def miad(root: Path, cat="witness_mark") -> Path:
    # the doubled-folder variant: ROOT/<cat>/<cat>/train/...
    inner = root / cat / cat
    for i in range(2):
        img(inner / "train" / "good" / f"{i:06d}.png", i)
    img(inner / "test" / "good" / "000000.png", 4)
    img(inner / "test" / "missing" / "000000.png", 5)
    mask(inner / "ground_truth" / "missing" / "000000_mask.png", A)
    return root


def cableinspect(root: Path) -> Path:
    cats = [{"id": 1, "name": "Bent strand"}, {"id": 2, "name": "Broken strands"}, {"id": 3, "name": "Deposit"}]
    images, anns = [], []
    names = [f"Cable_1/images/01/C01_A01_{i:04d}.png" for i in range(4)] + ["Cable_1/images/02/C01_B02_0000.png"]
    for k, n in enumerate(names):
        img(root / n, k, size=(64, 36))
        images.append({"id": k + 1, "file_name": n, "width": 64, "height": 36})
    # image 2: two boxes, one rotated 90 degrees about its centre; image 5 (pass 02): one box
    anns.append({"id": 1, "image_id": 2, "category_id": 1, "bbox": [10.0, 5.0, 8.0, 4.0], "area": 32.0,
                 "attributes": {"rotation": 0.0, "anomaly_id": "001_01", "gradation": "light"}})
    anns.append({"id": 2, "image_id": 2, "category_id": 3, "bbox": [30.0, 10.0, 10.0, 4.0], "area": 40.0,
                 "attributes": {"rotation": 90.0, "anomaly_id": "002_01", "gradation": "heavy"}})
    anns.append({"id": 3, "image_id": 5, "category_id": 2, "bbox": [50.5, 20.2, 20.0, 10.0], "area": 200.0,
                 "attributes": {"rotation": 0.0, "anomaly_id": "003_02", "gradation": "light"}})
    (root / "cable_1.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (root / "cable_1_seg.json").write_text(json.dumps({"images": [], "annotations": [], "categories": cats}))
    return root


def wfdd(root: Path, cls="grey_cloth", odd_mask_names=False) -> Path:
    c = root / cls
    for i in range(2):
        img(c / "train" / "good" / f"{i:03d}.png", i)
    img(c / "test" / "good" / "000.png", 4)
    img(c / "test" / "hole" / "000.png", 5)
    img(c / "test" / "hole" / "001.png", 6)
    names = ("gt_a.png", "gt_b.png") if odd_mask_names else ("000.png", "001.png")
    mask(c / "ground_truth" / "hole" / names[0], A)
    mask(c / "ground_truth" / "hole" / names[1], [(20, 20, 30, 30)])
    mask(root / "fg_mask" / cls / "000.png", [(0, 0, S, S)])  # optional foreground masks: not a category
    return root


def texturead(root: Path, cat="cloth_plain") -> Path:
    c = root / cat
    for i in range(2):
        img(c / "train" / "good" / f"{i:03d}.png", i)
    img(c / "test" / "good" / "000.png", 4)
    img(c / "test" / "defect" / "000.png", 5)
    mask(c / "ground_truth" / "defect" / "000.png", B)
    return root


def cad3(root: Path, cat="Aluminum_Middle-Frame") -> Path:
    c = root / cat
    for i in range(2):
        img(c / "train" / "good" / f"{i:06d}.png", i)
    img(c / "test" / "good" / "000395.png", 4)
    img(c / "test" / "scratch" / "000396.png", 5)
    mask(c / "ground_truth" / "scratch" / "000396.png", A)
    return root


#: source name -> (format, builder); distinct category names across sources
ALL = {
    "MVTecAD": ("mvtec", lambda r: mvtec(r, cats=("bottle",))),
    "VisA": ("visa", lambda r: visa(r, obj="candle")),
    "MVTecLOCO": ("loco", loco),
    "MVTec3D": ("mvtec3d", lambda r: mvtec3d(r, cat="bagel")),
    "MPDD": ("mpdd", lambda r: mvtec(r, cats=("bracket_black",), defect="hole")),
    "GoodsAD": ("goodsad", goodsad),
    "RealIAD": ("realiad", realiad),
    "RealIAD-D3": ("realiad-d3", realiad_d3),
    "MANTA": ("manta", manta),
    "MIAD": ("miad", miad),
    "CableInspect": ("cableinspect", cableinspect),
    "WFDD": ("wfdd", wfdd),
    "TextureAD": ("texturead", texturead),
    "3CAD": ("3cad", cad3),
}


def realiad_d3_folders(root: Path, cat="knob-cap") -> Path:
    """The folder layout Real-IAD D3's official code reads: several lightings per sample, masks in gt/rgb/."""
    c = root / cat
    k = 0
    for split, kind, n in (("train", "GOOD", 2), ("test", "GOOD", 1), ("test", "scratch", 2)):
        for s in range(n):
            sample = c / split / kind / "rgb" / f"{s:04d}"
            for light in ("L01", "L05"):
                img(sample / f"{cat}_{s:04d}_{light}_RGB.jpg", k)
                k += 1
            (c / split / kind / "xyz").mkdir(parents=True, exist_ok=True)
    rects = [A, [(20, 20, 30, 30)]]
    for s in range(2):
        mask(c / "test" / "scratch" / "gt" / "rgb" / f"{s:04d}.png", rects[s])
    return root
