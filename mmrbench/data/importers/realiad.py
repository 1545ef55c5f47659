"""Real-IAD and Real-IAD D3: JSON-indexed releases.

Real-IAD::

    ROOT/realiad_{1024,512,256,raw}/<cat>/OK/S0001/<cat>_0001_OK_C1_<time>.jpg
    ROOT/realiad_{1024,...}/<cat>/NG/<CODE>/S0001/<cat>_0001_NG_<CODE>_C1_<time>.jpg   (+ same-stem .png mask)
    ROOT/realiad_jsons/<cat>.json      (also nested: realiad_jsons/realiad_jsons/<cat>.json)

Each JSON is ``{"meta": {"prefix": "<cat>/", "normal_class": "OK"}, "train": [...], "test": [...]}``
with entries ``{category, anomaly_class, image_path, mask_path}``. The JSON is the truth, not the
folder: many images under ``NG/`` say ``anomaly_class: "OK"`` (the defect cannot be seen from
that camera) and are normal. Defect codes become names (AK pit, BX deformation, ...). The five
views of one object (``..._C1_`` ... ``..._C5_``) share a group id; some names carry a doubled
underscore (``audiojack__0001_...``), which the group id ignores.

Real-IAD D3: per-category JSON with ``train``, ``validation`` and ``test`` lists whose entries
carry ``image_path`` (RGB; the pseudo-3D and point-cloud paths are ignored) and ``mask_path``.
The archive layout is not documented, so an image path is tried against the JSON's folder, the
root and ``<root>/<category>``. Without JSONs, the folder layout the official code reads::

    ROOT/<cat>/{train,test}/{GOOD,<defect>}/rgb/<sample>/*RGB*.jpg     (one image per lighting)
    ROOT/<cat>/test/<defect>/gt/rgb/*.png                               (paired in sorted order)

is accepted: one image per sample, the ``L05`` lighting the official code uses when present.
Four categories are spelled with hyphens in the official code; the import uses underscores.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from mmrbench.data.importers.common import ImportFormatError, RawItem

#: Real-IAD defect codes -> names (the dataset's README)
REALIAD_CODES = {
    "AK": "pit", "BX": "deformation", "CH": "abrasion", "HS": "scratch", "PS": "damage",
    "QS": "missing parts", "YW": "foreign objects", "ZW": "contamination",
}
RESOLUTIONS = ("realiad_1024", "realiad_raw", "realiad_512", "realiad_256")
_VIEW = re.compile(r"^(?P<obj>.+?)_(?P<view>C\d)_")


def _load_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(d, dict) or not any(k in d for k in ("train", "test")):
        raise ImportFormatError(f"{path}: expected an object with 'train'/'test' lists; found "
                                f"{type(d).__name__} with keys {', '.join(list(d)[:5]) if isinstance(d, dict) else '-'}")
    return d


def view_group(stem: str) -> tuple[str, str | None]:
    """(object key, camera) from a Real-IAD file stem; the object key ignores doubled underscores."""
    m = _VIEW.match(stem)
    if not m:
        return re.sub(r"_+", "_", stem), None
    return re.sub(r"_+", "_", m.group("obj")), m.group("view")


def realiad_json_dir(root: Path, json_dir: str | None = None) -> Path:
    """The folder of ``<category>.json`` files.

    The release unpacks as ``realiad_jsons/{realiad_jsons,realiad_jsons_sv,realiad_jsons_fuiad_0.1,...}/``;
    some copies are flat (``realiad_jsons/<cat>.json``) or use ``realiad_jsons/jsons/``. ``json_dir``
    names another set (``realiad_jsons_sv``), relative to ROOT or to ROOT/realiad_jsons.
    """
    from mmrbench.data.importers.layout import layout_error

    if json_dir:
        bases = [root / json_dir, root / "realiad_jsons" / json_dir]
        if not any(b.is_dir() for b in bases):
            raise layout_error("realiad", root, f"no JSON folder {json_dir}")
    else:
        if not (root / "realiad_jsons").is_dir():
            raise layout_error("realiad", root, "no realiad_jsons/")
        bases = [root / "realiad_jsons"]
    for b in bases:
        for d in (b, b / b.name, b / "realiad_jsons", b / "jsons"):
            if d.is_dir() and any(d.glob("*.json")):
                return d
    raise layout_error("realiad", root, f"no <category>.json in {bases[-1].relative_to(root)}")


def image_dir(root: Path, resolution: str | None = None) -> Path:
    from mmrbench.data.importers.layout import layout_error

    names = [resolution if resolution.startswith("realiad_") else f"realiad_{resolution}"] if resolution else list(RESOLUTIONS)
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise layout_error("realiad", root, f"no image folder {' / '.join(names)}")


def walk_realiad(root: Path, subdataset: str = "RealIAD", *, resolution: str | None = None,
                 json_dir: str | None = None) -> Iterator[RawItem]:
    root = Path(root)
    from mmrbench.data.importers.layout import layout_error

    if not root.is_dir():
        raise layout_error("realiad", root)
    jdir = realiad_json_dir(root, json_dir)
    imgs = image_dir(root, resolution)
    for jf in sorted(jdir.glob("*.json")):
        d = _load_json(jf)
        meta = d.get("meta") or {}
        prefix = str(meta.get("prefix", f"{jf.stem}/"))
        normal = str(meta.get("normal_class", "OK"))
        cat = jf.stem
        for split in ("train", "test"):
            entries = d.get(split) or []
            if not isinstance(entries, list):
                raise ImportFormatError(f"{jf}: '{split}' must be a list")
            for n, e in enumerate(entries):
                if not isinstance(e, dict) or not isinstance(e.get("image_path"), str):
                    raise ImportFormatError(f"{jf}: {split}[{n}]: expected an object with image_path, got {e!r}"[:300])
                img = imgs / f"{prefix}{e['image_path']}"
                if not img.is_file():
                    raise ImportFormatError(f"{jf}: {split}[{n}]: image not found: {img}")
                code = str(e.get("anomaly_class", normal))
                obj, view = view_group(img.stem)
                extra = {"view": view} if view else {}
                if code == normal:
                    if "/NG/" in f"/{e['image_path']}":
                        extra["folder"] = "NG"  # the defect is not visible from this camera
                    yield RawItem(subdataset, cat, split, "normal", img, id=f"{subdataset}/{cat}/{img.stem}",
                                  group=f"{subdataset}/{cat}/{obj}", extra=extra)
                    continue
                mp = e.get("mask_path")
                mask = imgs / f"{prefix}{mp}" if isinstance(mp, str) and mp else None
                if mask is None or not mask.is_file():
                    raise ImportFormatError(f"{jf}: {split}[{n}]: anomalous ({code}) but its mask "
                                            f"{'is null' if mask is None else 'is missing: ' + str(mask)}")
                yield RawItem(subdataset, cat, split, "anomalous", img, defect=REALIAD_CODES.get(code, code),
                              mask=mask, id=f"{subdataset}/{cat}/{img.stem}", group=f"{subdataset}/{cat}/{obj}",
                              extra={**extra, "defect_code": code})


def _canonical(cat: str) -> str:
    return cat.replace("-", "_")


def _d3_jsons(root: Path) -> list[Path]:
    found = []
    for pattern in ("*.json", "*/*.json", "*/*/*.json"):
        for p in sorted(root.glob(pattern)):
            try:
                with open(p, encoding="utf-8") as f:
                    head = f.read(4096)
            except (OSError, UnicodeDecodeError):
                continue
            if '"train"' in head or '"test"' in head or '"validation"' in head:
                found.append(p)
        if found:
            break
    return found


def walk_realiad_d3(root: Path, subdataset: str = "RealIAD-D3") -> Iterator[RawItem]:
    from mmrbench.data.importers.layout import layout_error

    root = Path(root)
    if not root.is_dir():
        raise layout_error("realiad-d3", root)
    jsons = _d3_jsons(root)
    if not jsons:
        if any((d / "train").is_dir() or (d / "test").is_dir() for d in root.iterdir() if d.is_dir()):
            yield from walk_realiad_d3_folders(root, subdataset)
            return
        raise layout_error("realiad-d3", root, "no JSON with train/test lists, no <category>/{train,test}/")
    for jf in jsons:
        d = _load_json(jf)
        meta = d.get("meta") or {}
        normal = str(meta.get("normal_class", "OK"))
        prefix = str(meta.get("prefix", ""))
        cat = _canonical(str(meta.get("category") or jf.stem))
        bases = [jf.parent, root, root / jf.stem, root / cat]

        def resolve(rel: str) -> Path | None:
            for b in bases:
                for cand in (b / f"{prefix}{rel}", b / rel):
                    if cand.is_file():
                        return cand
            return None

        for split in ("train", "validation", "test"):
            entries = d.get(split) or []
            for n, e in enumerate(entries):
                if not isinstance(e, dict) or not isinstance(e.get("image_path"), str):
                    raise ImportFormatError(f"{jf}: {split}[{n}]: expected an object with image_path, got {e!r}"[:300])
                img = resolve(e["image_path"])
                if img is None:
                    raise ImportFormatError(f"{jf}: {split}[{n}]: image {e['image_path']} not found under "
                                            f"{', '.join(str(b) for b in bases)}")
                ecat = _canonical(str(e.get("category") or cat))
                code = str(e.get("anomaly_class", normal))
                rel = Path(e["image_path"]).with_suffix("").as_posix()
                sid = f"{subdataset}/{ecat}/{split}/{rel}"
                extra = {"source_split": split} if split == "validation" else {}
                if code == normal:
                    yield RawItem(subdataset, ecat, "test" if split == "test" else "train", "normal", img, id=sid,
                                  extra=extra)
                    continue
                mp = e.get("mask_path")
                mask = resolve(mp) if isinstance(mp, str) and mp else None
                if mask is None:
                    raise ImportFormatError(f"{jf}: {split}[{n}]: anomalous ({code}) but mask {mp!r} not found")
                yield RawItem(subdataset, ecat, "train" if split == "train" else "test", "anomalous", img,
                              defect=REALIAD_CODES.get(code, code), mask=mask, id=sid,
                              extra={**extra, "defect_code": code})


_GOOD = {"good", "ok"}


def _d3_sample_image(sample: Path) -> Path | None:
    """The sample's RGB image: the L05 lighting (the official code's choice), else the first RGB image."""
    from mmrbench.data.importers.common import list_images

    imgs = list_images(sample) if sample.is_dir() else []
    rgb = [p for p in imgs if "rgb" in p.name.lower()] or imgs
    l05 = [p for p in rgb if "L05" in p.name]
    picks = l05 or rgb
    return picks[0] if picks else None


def walk_realiad_d3_folders(root: Path, subdataset: str = "RealIAD-D3") -> Iterator[RawItem]:
    from mmrbench.data.importers.common import list_images

    for cat_dir in sorted(d for d in root.iterdir() if d.is_dir() and ((d / "train").is_dir() or (d / "test").is_dir())):
        cat = _canonical(cat_dir.name)
        for split in ("train", "test"):
            sdir = cat_dir / split
            if not sdir.is_dir():
                continue
            for kind in sorted(d for d in sdir.iterdir() if d.is_dir()):
                rgb = kind / "rgb"
                if not rgb.is_dir():
                    raise ImportFormatError(f"{kind}: expected rgb/<sample>/*RGB*.jpg (Real-IAD D3); found "
                                            f"{', '.join(sorted(p.name for p in kind.iterdir())) or 'nothing'}")
                samples = sorted(d for d in rgb.iterdir() if d.is_dir())
                images = [im for im in map(_d3_sample_image, samples) if im is not None] or list_images(rgb)
                normal = kind.name.lower() in _GOOD
                pre = f"{subdataset}/{cat}/{split}/{kind.name}"
                if normal:
                    for im in images:
                        yield RawItem(subdataset, cat, split, "normal", im, id=f"{pre}/{im.parent.name}/{im.stem}",
                                      group=None)
                    continue
                masks = list_images(kind / "gt" / "rgb") if (kind / "gt" / "rgb").is_dir() else []
                if len(masks) != len(images):
                    raise ImportFormatError(f"{kind}: expected one mask in gt/rgb/ per sample ({len(images)}); "
                                            f"found {len(masks)}")
                code = kind.name
                for im, m in zip(images, masks):
                    yield RawItem(subdataset, cat, "test", "anomalous", im, defect=REALIAD_CODES.get(code.upper(), code),
                                  mask=m, id=f"{pre}/{im.parent.name}/{im.stem}", extra={"defect_code": code})
