"""Reading and writing ``manifest.jsonl`` with validation that names the line and the field.

A manifest is the contract between importers, the runner, the scorer and the leaderboard, so it is
validated strictly on read: one bad line is reported as ``path:line: field 'x': what is wrong``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mmrbench.data.schema import LABELS, SPLITS, Box, Sample
from mmrbench.errors import InputError, ManifestError
from mmrbench.hashing import file_sha256
from mmrbench.validation import loads_json

_KNOWN = {
    "id", "subdataset", "category", "split", "image", "reference", "label", "width", "height",
    "boxes", "box_labels", "mask", "reasoning",
}


@dataclass
class Manifest:
    """Samples plus where they live; ``sha256`` identifies the exact file for results."""

    path: Path
    samples: list[Sample]
    sha256: str
    _by_id: dict[str, Sample] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {s.id: s for s in self.samples}

    @property
    def root(self) -> Path:
        return self.path.parent

    def resolve(self, rel: str) -> Path:
        return (self.root / rel).resolve()

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)

    def get(self, sample_id: str) -> Sample | None:
        return self._by_id.get(sample_id)

    def select(self, *, split: str | None = None, subdatasets: Iterable[str] | None = None,
               categories: Iterable[str] | None = None) -> list[Sample]:
        subs = set(subdatasets) if subdatasets else None
        cats = set(categories) if categories else None
        return [s for s in self.samples
                if (split is None or s.split == split)
                and (subs is None or s.subdataset in subs)
                and (cats is None or s.category in cats)]

    @property
    def subdatasets(self) -> list[str]:
        return sorted({s.subdataset for s in self.samples})


def _req(d: dict, key: str, typ, path: str, line: int):
    if key not in d:
        raise ManifestError("missing", path=path, line=line, field=key)
    v = d[key]
    if not isinstance(v, typ) or isinstance(v, bool) and typ is not bool:
        raise ManifestError(f"expected {getattr(typ, '__name__', typ)}, got {type(v).__name__}",
                            path=path, line=line, field=key)
    return v


def parse_sample(d: Any, *, path: str = "<manifest>", line: int = 0) -> Sample:
    """Validate one decoded JSON object and turn it into a :class:`Sample`."""
    if not isinstance(d, dict):
        raise ManifestError(f"expected a JSON object, got {type(d).__name__}", path=path, line=line)
    sid = _req(d, "id", str, path, line)
    if not sid:
        raise ManifestError("empty id", path=path, line=line, field="id")
    sub = _req(d, "subdataset", str, path, line)
    cat = _req(d, "category", str, path, line)
    split = _req(d, "split", str, path, line)
    if split not in SPLITS:
        raise ManifestError(f"unknown split '{split}' (expected one of {', '.join(SPLITS)})", path=path, line=line, field="split")
    image = _req(d, "image", str, path, line)
    label = _req(d, "label", str, path, line)
    if label not in LABELS:
        raise ManifestError(f"unknown label '{label}' (expected one of {', '.join(LABELS)})", path=path, line=line, field="label")
    width = _req(d, "width", int, path, line)
    height = _req(d, "height", int, path, line)
    if width <= 0 or height <= 0:
        raise ManifestError(f"image size must be positive, got {width}x{height}", path=path, line=line, field="width")
    ref = d.get("reference")
    if ref is not None and not isinstance(ref, str):
        raise ManifestError("expected a path or null", path=path, line=line, field="reference")
    raw_boxes = d.get("boxes", [])
    raw_labels = d.get("box_labels", [""] * len(raw_boxes) if isinstance(raw_boxes, list) else [])
    if not isinstance(raw_boxes, list):
        raise ManifestError("expected a list of [x1, y1, x2, y2]", path=path, line=line, field="boxes")
    if not isinstance(raw_labels, list) or len(raw_labels) != len(raw_boxes):
        raise ManifestError(f"expected {len(raw_boxes)} labels, one per box", path=path, line=line, field="box_labels")
    boxes = []
    for i, (b, lab) in enumerate(zip(raw_boxes, raw_labels)):
        fld = f"boxes[{i}]"
        if type(b) is not list or len(b) != 4 or not all(type(v) is int or type(v) is float for v in b):
            raise ManifestError(f"expected [x1, y1, x2, y2] numbers, got {b!r}", path=path, line=line, field=fld)
        x1, y1, x2, y2 = (float(v) for v in b)
        if x2 <= x1 or y2 <= y1:
            raise ManifestError(f"empty box {b} (need x2 > x1 and y2 > y1)", path=path, line=line, field=fld)
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise ManifestError(f"box {b} lies outside the {width}x{height} image", path=path, line=line, field=fld)
        if not isinstance(lab, str):
            raise ManifestError("expected a string", path=path, line=line, field=f"box_labels[{i}]")
        boxes.append(Box(x1, y1, x2, y2, lab))
    if label == "normal" and boxes:
        raise ManifestError("a normal sample cannot have boxes", path=path, line=line, field="boxes")
    if label == "anomalous" and split == "test" and not boxes:
        raise ManifestError("an anomalous test sample needs at least one box", path=path, line=line, field="boxes")
    mask = d.get("mask")
    if mask is not None and not isinstance(mask, str):
        raise ManifestError("expected a path or null", path=path, line=line, field="mask")
    reasoning = d.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        raise ManifestError("expected a string or null", path=path, line=line, field="reasoning")
    extra = {k: v for k, v in d.items() if k not in _KNOWN}
    return Sample(id=sid, subdataset=sub, category=cat, split=split, image=image, label=label,
                  width=width, height=height, reference=ref, boxes=boxes, mask=mask,
                  reasoning=reasoning, extra=extra)


def read_manifest(path: str | os.PathLike, *, check_files: bool = True) -> Manifest:
    """Read and validate a manifest; with ``check_files`` every referenced file must exist."""
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.jsonl"
    if not p.exists():
        raise ManifestError(f"manifest not found: {p}")
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    sp = str(p)
    with open(p, "rb") as f:
        raw = f.read()
    for lineno, bline in enumerate(raw.splitlines(), start=1):
        if not bline.strip():
            continue
        try:
            d = loads_json(bline, sp)
        except InputError as exc:
            raise ManifestError(str(exc).split(": ", 1)[-1], path=sp, line=lineno) from None
        s = parse_sample(d, path=sp, line=lineno)
        if s.id in seen:
            raise ManifestError(f"duplicate id '{s.id}' (first on line {seen[s.id]})", path=sp, line=lineno, field="id")
        seen[s.id] = lineno
        if check_files:
            for fld in ("image", "reference", "mask"):
                rel = getattr(s, fld)
                if rel is not None and not (p.parent / rel).is_file():
                    raise ManifestError(f"file not found: {rel}", path=sp, line=lineno, field=fld)
        samples.append(s)
    if not samples:
        raise ManifestError("manifest has no samples", path=sp)
    return Manifest(path=p.resolve(), samples=samples, sha256=hashlib.sha256(raw).hexdigest())


def dumps_sample(s: Sample) -> str:
    return json.dumps(s.to_json(), ensure_ascii=False, sort_keys=False, separators=(", ", ": "))


def write_manifest(path: str | os.PathLike, samples: Iterable[Sample]) -> str:
    """Write samples (atomically) and return the file's sha256."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    from mmrbench.rundir import atomic_write_bytes
    atomic_write_bytes(p, "".join(dumps_sample(s) + "\n" for s in samples).encode("utf-8"), fsync=False)
    return file_sha256(p)
