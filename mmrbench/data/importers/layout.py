"""What a folder looks like, for the one-line "expected ..., found ..." error of a wrong root.

Users point an importer at the wrong level (the archive's parent, one category) or at another
dataset. ``describe`` summarises the top of the tree in a few words and ``guess`` names the
source whose signature it carries, so the error says both what was expected and what is there.
"""
from __future__ import annotations

from pathlib import Path

from mmrbench.data.importers.common import ImportFormatError

#: format -> the layout it expects, in one phrase
EXPECTED = {
    "mvtec": "<category>/{train/good,test/<defect>,ground_truth/<defect>}",
    "mpdd": "<category>/{train/good,test/<defect>,ground_truth/<defect>}",
    "mvtec3d": "<category>/{train/good/rgb,test/<defect>/{rgb,gt}}",
    "visa": "split_csv/1cls.csv and <object>/Data/{Images,Masks}",
    "loco": "<category>/{train/good,test/{logical,structural}_anomalies,ground_truth/<kind>/<id>/<region>.png,"
            "defects_config.json}",
    "goodsad": "<category>/{train/good,test/<defect>,ground_truth/<defect>}/*.jpg with .png masks",
    "realiad": "realiad_jsons/<category>.json and realiad_{256,512,1024,raw}/<category>/{OK,NG}",
    "realiad-d3": "<category>.json files with train/validation/test lists (image_path, mask_path), or "
                  "<category>/{train,test}/{GOOD,<defect>}/rgb/<sample>/*RGB*.jpg",
    "manta": "<domain>/<class>/{train/good,test/<defect>,ground_truth/<defect>} with 5-view montages",
    "miad": "<category>/{train/good,test/<defect>,ground_truth/<defect>/<id>_mask.png}",
    "cableinspect": "cable_{1,2,3}.json (COCO boxes) and Cable_{1,2,3}/images/<pass>/*.png",
    "wfdd": "<class>/{train/good,test/<defect>,ground_truth/<defect>}",
    "texturead": "<category>/{train/good,test/<defect>[,ground_truth/<defect>]}",
    "3cad": "<category>/{train/good,test/<defect>,ground_truth/<defect>/<same stem>.png}",
}


def _names(path: Path, limit: int = 5) -> str:
    kids = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir() if not p.name.startswith("."))
    if not kids:
        return "an empty folder"
    more = f", ... ({len(kids)} entries)" if len(kids) > limit else ""
    return ", ".join(kids[:limit]) + more


def guess(root: Path) -> str | None:
    """The source whose signature ``root`` carries, if any."""
    if not root.is_dir():
        return None
    top = {p.name for p in root.iterdir()}
    if any(n.startswith("realiad_") for n in top):
        return "Real-IAD"
    if {"cable_1.json", "cable_2.json", "cable_3.json"} & top or {"Cable_1", "Cable_2", "Cable_3"} & top:
        return "CableInspect-AD"
    if (root / "split_csv").is_dir():
        return "VisA"
    if any(n.endswith(".json") for n in top) and not any((root / n).is_dir() and (root / n / "train").is_dir() for n in top):
        return "a JSON-indexed release (Real-IAD D3 / MMR-AD?)"
    subdirs = [root / n for n in sorted(top) if (root / n).is_dir()]
    if {"train", "test"} & top:
        return "a single category (point at its parent)"
    for d in subdirs:
        if (d / "defects_config.json").is_file():
            return "MVTec LOCO AD"
        if (d / "train" / "good" / "rgb").is_dir():
            return "MVTec 3D-AD"
        if (d / d.name / "train").is_dir():
            return "an MVTec-like tree with doubled folders (MIAD)"
        if (d / "train").is_dir() or (d / "test").is_dir():
            gt = d / "ground_truth"
            if gt.is_dir():
                names = [m.name for g in gt.iterdir() if g.is_dir() for m in g.iterdir()][:20]
                if any(n.endswith("_mask.png") for n in names):
                    return "an MVTec-like tree with <id>_mask.png masks (MVTec AD / MPDD / MIAD)"
                return "an MVTec-like tree with same-stem masks"
            return "an MVTec-like tree"
        if any((c / "train").is_dir() for c in d.iterdir() if c.is_dir()):
            return "a <domain>/<class>/ tree (MANTA)"
    return None


def describe(root: Path) -> str:
    if not root.exists():
        return "nothing (the path does not exist)"
    if not root.is_dir():
        return f"a file, not a folder ({root.name})"
    g = guess(root)
    return _names(root) + (f"; it looks like {g}" if g else "")


def layout_error(fmt: str, root: Path, detail: str | None = None) -> ImportFormatError:
    """One line: the format's expected layout and what ``root`` holds."""
    what = f" ({detail})" if detail else ""
    return ImportFormatError(f"{root}: not a {fmt} tree{what}: expected {EXPECTED.get(fmt, fmt)}; found {describe(root)}")
