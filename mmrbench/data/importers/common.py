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
from typing import Iterable, Iterator, Sequence

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
    #: views of one physical object (Real-IAD cameras, MANTA montage panels) share a group id
    group: str | None = None
    #: (x1, y1, x2, y2) of the part of ``image`` (and ``mask``) that is this sample (montage panels)
    crop: tuple[int, int, int, int] | None = None


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


def load_for_retrieval(path: Path, size: int = 256) -> np.ndarray:
    import cv2

    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster for large images
        rgb = np.asarray(im.convert("RGB"))
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


class LazyImages(Sequence):
    """Images loaded on access, so a retriever over thousands of normals holds features, not pixels."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return load_for_retrieval(self.paths[i])


def pick_references(queries: Sequence[Path], normals: Sequence[Path], method: str, rng: np.random.Generator) -> list[Path | None]:
    """The normal reference of every query among one category's train normals."""
    return pick_references_excluding(queries, normals, method, rng, None)


def pick_references_excluding(queries: Sequence[Path], normals: Sequence[Path], method: str, rng: np.random.Generator,
                              banned: Sequence[set[int]] | None) -> list[Path | None]:
    """Like :func:`pick_references`; ``banned[i]`` are normal indices query i may not get (itself,
    other views of its own object). With retrieval the nearest allowed of the top-k neighbours wins."""
    if method == "none" or not normals:
        return [None] * len(queries)
    ban = list(banned) if banned is not None else [set() for _ in queries]
    if method in ("first", "random"):
        out: list[Path | None] = []
        for b in ban:
            allowed = [j for j in range(len(normals)) if j not in b]
            if not allowed:
                out.append(None)
            elif method == "first":
                out.append(normals[allowed[0]])
            else:
                out.append(normals[allowed[int(rng.integers(0, len(allowed)))]])
        return out
    if method == "retrieval":
        from mmrbench.data.retrieval import ReferenceRetriever

        r = ReferenceRetriever.fit(LazyImages(normals), seed=int(rng.integers(0, 2**31 - 1)))
        out = []
        chunk = 256  # bounded memory: only a chunk of query pixels at a time
        for c0 in range(0, len(queries), chunk):
            qs = LazyImages(queries[c0:c0 + chunk])
            hq = np.stack([r.histograms(qs[i]) for i in range(len(qs))])
            nbs = r.neighbours_from_hist(hq)
            for k, nb in enumerate(nbs):
                b = ban[c0 + k]
                pick = next((int(j) for j in nb.indices if int(j) not in b), None)
                if pick is None and b:  # all top-k banned: the nearest allowed overall
                    from mmrbench.data.retrieval import alignment_distances
                    tau = min(r.config.tau, hq.shape[1] - 1)
                    d = alignment_distances(hq[k:k + 1], r.normal_hist, tau)[0]
                    d[list(b)] = np.inf
                    pick = int(np.argmin(d)) if np.isfinite(d).any() else None
                out.append(normals[pick] if pick is not None else None)
        return out
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


def default_id(item: RawItem, root: Path) -> str:
    try:
        rel = item.image.resolve().relative_to(root.resolve()).with_suffix("")
        return f"{item.subdataset}/{rel.as_posix()}"
    except ValueError:
        return f"{item.subdataset}/{item.category}/{item.split}/{item.image.stem}"


def materialise_crop(item: RawItem, sid: str, out: Path) -> RawItem:
    """Write the panel ``item.crop`` of a montage (and of its mask) under ``out/files/`` and point
    the item at those files: a manifest sample is a whole image file."""
    if item.crop is None:
        return item
    from dataclasses import replace

    safe = sid.replace("/", "__")
    dest = out / "files" / "crops" / f"{safe}.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with Image.open(item.image) as im:
            im.crop(item.crop).save(dest)
        mask = None
        if item.mask is not None:
            mask = out / "files" / "crops" / f"{safe}_mask.png"
            with Image.open(item.mask) as mm:
                mw, mh = mm.size
                iw, ih = image_size(item.image)
                x1, y1, x2, y2 = item.crop
                sx, sy = mw / iw, mh / ih  # masks shipped at another resolution
                mm.convert("L").crop((round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy))).save(mask)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImportFormatError(f"cannot crop {item.image}: {exc}") from None
    return replace(item, image=dest, mask=mask, crop=None)


def category_samples(items: list[RawItem], root: Path, out: Path, opts: ImportOptions, rng: np.random.Generator, *,
                     reference_all: bool = False, placed: dict[Path, str] | None = None,
                     seen: dict[str, Path] | None = None, skipped: list[str] | None = None,
                     keep: set[str] | None = None) -> list[Sample]:
    """Samples of one (subdataset, category): boxes, sizes, references, paths.

    References come from the category's own train normals only. By default only test queries get
    one (``data import``); ``reference_all`` gives one to every sample (``data build``: MMR-AD pairs
    every image with a reference), never itself nor another view of the same object. ``keep``
    (sample ids) limits the output to a sample of the category; the reference pool stays whole.
    """
    placed = {} if placed is None else placed
    seen = {} if seen is None else seen
    skipped = [] if skipped is None else skipped
    ids = [it.id or default_id(it, root) for it in items]
    for sid, it in zip(ids, items):
        if sid in seen:
            raise ImportFormatError(f"two images map to the same id '{sid}': {seen[sid]} and {it.image}")
        seen[sid] = it.image
    if keep is not None:  # only kept samples and the reference pool are needed
        sel = [k for k, (sid, it) in enumerate(zip(ids, items))
               if sid in keep or (it.split == "train" and it.label == "normal")]
        ids, items = [ids[k] for k in sel], [items[k] for k in sel]
    items = [materialise_crop(it, sid, out) for it, sid in zip(items, ids)]
    normal_idx = [i for i, it in enumerate(items) if it.split == "train" and it.label == "normal"]
    normals = [items[i].image for i in normal_idx]
    wanted = [keep is None or sid in keep for sid in ids]
    if reference_all:
        need = [i for i, it in enumerate(items) if it.reference is None and wanted[i]]
    else:
        need = [i for i, it in enumerate(items) if it.split == "test" and it.reference is None and wanted[i]]
    pos = {i: k for k, i in enumerate(normal_idx)}
    by_group: dict[str, set[int]] = {}
    for i in normal_idx:
        grp = items[i].group
        if grp:
            by_group.setdefault(grp, set()).add(pos[i])
    banned = []
    for i in need:
        grp = items[i].group
        b = set(by_group.get(grp, set())) if grp else set()
        if i in pos:
            b.add(pos[i])
        banned.append(b)
    refs = dict(zip(need, pick_references_excluding([items[i].image for i in need], normals, opts.reference, rng, banned)))

    def place(p: Path) -> str:
        if p not in placed:
            placed[p] = _place(p, out, opts, f"files/{_default_id_path(p, root)}")
        return placed[p]

    samples: list[Sample] = []
    for i, (sid, it) in enumerate(zip(ids, items)):
        if not wanted[i]:
            continue
        w, h = image_size(it.image)
        boxes = boxes_for(it, (w, h)) if it.label == "anomalous" else []
        if it.label == "anomalous" and not boxes and (it.split == "test" or it.mask is not None):
            log.warning("skipping %s: anomalous but its mask %s has no component", it.image, it.mask)
            skipped.append(str(it.image))
            continue
        ref = it.reference if it.reference is not None else refs.get(i)
        mask_rel = place(it.mask) if it.mask is not None and it.label == "anomalous" else None
        extra = dict(it.extra)
        if it.group:
            extra["group"] = it.group
        samples.append(Sample(id=sid, subdataset=it.subdataset, category=it.category, split=it.split,
                              image=place(it.image), label=it.label, width=int(w), height=int(h),
                              reference=place(ref) if ref is not None else None, boxes=boxes, mask=mask_rel,
                              reasoning=it.reasoning, extra=extra))
    return samples


def group_by_category(items: Iterable[RawItem]) -> Iterator[tuple[tuple[str, str], list[RawItem]]]:
    """Consecutive runs of one (subdataset, category); walkers yield a category's items together."""
    cur: tuple[str, str] | None = None
    buf: list[RawItem] = []
    done: set[tuple[str, str]] = set()
    for it in items:
        key = (it.subdataset, it.category)
        if key != cur:
            if cur is not None:
                yield cur, buf
                done.add(cur)
            if key in done:  # a walker listed a category twice: merge by falling back to a full sort
                raise ImportFormatError(f"category '{key[1]}' of {key[0]} listed in two places (two folders that "
                                        "spell the same category?)")
            cur, buf = key, []
        buf.append(it)
    if cur is not None:
        yield cur, buf


def enforce_group_splits(items: list[RawItem]) -> list[RawItem]:
    """A multi-view object lies wholly in one split: a group with any test view goes to test."""
    from dataclasses import replace

    test_groups = {it.group for it in items if it.group and it.split == "test"}
    out = []
    for it in items:
        if it.group in test_groups and it.split != "test":
            it = replace(it, split="test", extra={**it.extra, "source_split": it.extra.get("source_split", it.split)})
        out.append(it)
    return out


def build_manifest(items: Iterable[RawItem], root: Path, out: Path, opts: ImportOptions) -> ImportReport:
    """Turn raw items into samples (boxes, sizes, references, paths) and write ``out/manifest.jsonl``."""
    items = list(items)
    if not items:
        raise ImportFormatError(f"no images found under {root}")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(opts.seed)
    groups: dict[tuple[str, str], list[RawItem]] = {}
    for it in items:
        groups.setdefault((it.subdataset, it.category), []).append(it)
    iterator = groups.items()
    if opts.progress:
        from tqdm import tqdm
        iterator = tqdm(list(iterator), desc="categories", unit="category")
    samples: list[Sample] = []
    skipped: list[str] = []
    per_cat: dict[tuple[str, str], dict[str, int]] = {}
    seen: dict[str, Path] = {}
    placed: dict[Path, str] = {}
    for key, its in iterator:
        its = enforce_group_splits(its)
        for s in category_samples(its, root, out, opts, rng, placed=placed, seen=seen, skipped=skipped):
            samples.append(s)
            c = per_cat.setdefault(key, {"train": 0, "test_normal": 0, "test_anomalous": 0, "boxes": 0})
            c["train" if s.split == "train" else ("test_anomalous" if s.is_anomalous else "test_normal")] += 1
            c["boxes"] += len(s.boxes)
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
