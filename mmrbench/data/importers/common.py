"""Shared machinery of the importers: raw items -> validated samples -> manifest.

A format module only walks its source layout and yields :class:`RawItem` records (absolute paths
plus what the layout says: split, label, defect name). Everything else is common: reading the image
size from the header, boxes from mask components, path handling (relative links or copies),
reference selection, and writing the manifest.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmrbench.data.manifest import write_manifest
from mmrbench.data.masks import boxes_from_mask
from mmrbench.data.schema import Box, Sample
from mmrbench.errors import MMRBenchError

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FILE_MODES = ("relative", "copy", "symlink")
REFERENCE_METHODS = ("retrieval", "random", "first", "none")


class ImportFormatError(MMRBenchError):
    """The source tree does not look like the format it was imported as."""


@dataclass
class RawItem:
    """One source image as the layout describes it (paths absolute)."""

    subdataset: str
    category: str
    split: str
    label: str  # normal | anomalous
    image: Path
    defect: str | None = None  # folder/annotation name; becomes the box label
    mask: Path | None = None
    boxes: list[Box] | None = None  # given directly (conversation-form releases)
    reference: Path | None = None  # given directly (conversation-form releases)
    reasoning: str | None = None
    id: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class ImportOptions:
    files: str = "relative"  # relative | copy | symlink
    reference: str = "retrieval"
    seed: int = 0
    progress: bool = False


@dataclass
class ImportReport:
    manifest: Path
    sha256: str
    samples: int
    skipped: list[str]
    per_category: dict[tuple[str, str], dict[str, int]]


def box_label(defect: str | None) -> str:
    return (defect or "anomaly").replace("_", " ").strip()


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ImportFormatError(f"missing folder: {path} ({what})")
    return path


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels."""
    if not path.is_file():
        raise ImportFormatError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImportFormatError(f"cannot read image {path}: {exc}") from None


def read_mask(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ImportFormatError(f"mask not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImportFormatError(f"cannot read mask {path}: {exc}") from None


def boxes_for(item: RawItem, size: tuple[int, int]) -> list[Box]:
    """Boxes of an anomalous item: given ones, else the mask's connected components.

    A mask whose size differs from its image (some releases ship resized masks) has its boxes
    scaled to the image's pixels.
    """
    if item.boxes is not None:
        return item.boxes
    if item.mask is None:
        return []
    m = read_mask(item.mask)
    label = box_label(item.defect)
    boxes = boxes_from_mask(m, label)
    mh, mw = m.shape
    w, h = size
    if (mw, mh) != (w, h):
        sx, sy = w / mw, h / mh
        boxes = [Box(max(0, int(np.floor(b.x1 * sx))), max(0, int(np.floor(b.y1 * sy))),
                     min(w, int(np.ceil(b.x2 * sx))), min(h, int(np.ceil(b.y2 * sy))), b.label) for b in boxes]
    return boxes


def _load_for_retrieval(path: Path, size: int = 256) -> np.ndarray:
    import cv2

    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster for large images
        rgb = np.asarray(im.convert("RGB"))
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def pick_references(queries: Sequence[Path], normals: Sequence[Path], method: str, rng: np.random.Generator) -> list[Path | None]:
    """The normal reference of every query among one category's train normals."""
    if method == "none" or not normals:
        return [None] * len(queries)
    if method == "first":
        return [normals[0]] * len(queries)
    if method == "random":
        return [normals[int(rng.integers(0, len(normals)))] for _ in queries]
    if method == "retrieval":
        from mmrbench.data.retrieval import ReferenceRetriever

        r = ReferenceRetriever.fit([_load_for_retrieval(p) for p in normals], seed=int(rng.integers(0, 2**31 - 1)))
        nbs = r.query_many([_load_for_retrieval(q) for q in queries])
        return [normals[int(nb.indices[0])] for nb in nbs]
    raise MMRBenchError(f"unknown reference method '{method}' (expected one of {', '.join(REFERENCE_METHODS)})")


def _place(src: Path, out: Path, opts: ImportOptions, dest_rel: str) -> str:
    """Make ``src`` reachable from the manifest folder and return the manifest-relative path."""
    if opts.files == "relative":
        return Path(os.path.relpath(src.resolve(), out.resolve())).as_posix()
    dest = out / dest_rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    if opts.files == "copy":
        shutil.copyfile(src, dest)
    elif opts.files == "symlink":
        os.symlink(src.resolve(), dest)
    else:
        raise MMRBenchError(f"unknown file mode '{opts.files}' (expected one of {', '.join(FILE_MODES)})")
    return Path(dest_rel).as_posix()


def _default_id(item: RawItem, root: Path) -> str:
    try:
        rel = item.image.resolve().relative_to(root.resolve()).with_suffix("")
        return f"{item.subdataset}/{rel.as_posix()}"
    except ValueError:
        return f"{item.subdataset}/{item.category}/{item.split}/{item.image.stem}"


def build_manifest(items: Iterable[RawItem], root: Path, out: Path, opts: ImportOptions) -> ImportReport:
    """Turn raw items into samples (boxes, sizes, references, paths) and write ``out/manifest.jsonl``."""
    items = list(items)
    if not items:
        raise ImportFormatError(f"no images found under {root}")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(opts.seed)
    # references: per (subdataset, category), test queries against train normals
    groups: dict[tuple[str, str], list[RawItem]] = {}
    for it in items:
        groups.setdefault((it.subdataset, it.category), []).append(it)
    refs: dict[int, Path | None] = {}
    iterator = groups.items()
    if opts.progress:
        from tqdm import tqdm
        iterator = tqdm(list(iterator), desc="references", unit="category")
    for _, its in iterator:
        normals = [it.image for it in its if it.split == "train" and it.label == "normal"]
        need = [it for it in its if it.split == "test" and it.reference is None]
        for it, ref in zip(need, pick_references([it.image for it in need], normals, opts.reference, rng)):
            refs[id(it)] = ref
    samples: list[Sample] = []
    skipped: list[str] = []
    per_cat: dict[tuple[str, str], dict[str, int]] = {}
    seen: dict[str, Path] = {}
    placed: dict[Path, str] = {}

    def place(p: Path) -> str:
        if p not in placed:
            placed[p] = _place(p, out, opts, f"files/{_default_id_path(p, root)}")
        return placed[p]

    for it in items:
        sid = it.id or _default_id(it, root)
        if sid in seen:
            raise ImportFormatError(f"two images map to the same id '{sid}': {seen[sid]} and {it.image}")
        seen[sid] = it.image
        w, h = image_size(it.image)
        boxes = boxes_for(it, (w, h)) if it.label == "anomalous" else []
        if it.label == "anomalous" and it.split == "test" and not boxes:
            log.warning("skipping %s: anomalous but its mask %s has no component", it.image, it.mask)
            skipped.append(str(it.image))
            continue
        ref = it.reference if it.reference is not None else refs.get(id(it))
        mask_rel = None
        if it.mask is not None and it.label == "anomalous":
            mask_rel = place(it.mask)
        s = Sample(id=sid, subdataset=it.subdataset, category=it.category, split=it.split, image=place(it.image),
                   label=it.label, width=int(w), height=int(h), reference=place(ref) if ref is not None else None,
                   boxes=boxes, mask=mask_rel, reasoning=it.reasoning, extra=dict(it.extra))
        samples.append(s)
        c = per_cat.setdefault((it.subdataset, it.category), {"train": 0, "test_normal": 0, "test_anomalous": 0, "boxes": 0})
        c["train" if it.split == "train" else ("test_anomalous" if it.label == "anomalous" else "test_normal")] += 1
        c["boxes"] += len(boxes)
    if not samples:
        raise ImportFormatError(f"no usable samples under {root}")
    manifest = out / "manifest.jsonl"
    sha = write_manifest(manifest, samples)
    return ImportReport(manifest=manifest, sha256=sha, samples=len(samples), skipped=skipped, per_category=per_cat)


def _default_id_path(p: Path, root: Path) -> str:
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return f"external/{p.name}"
