"""Deep check of a manifest: every image, reference and mask decodes and agrees with its record.

``read_manifest`` validates the JSON structure; this module additionally opens every file (so a
truncated PNG or a JPEG renamed .png is caught before a long evaluation run), compares decoded
sizes with ``width``/``height``, and checks that masks match their image and cover every box.
Problems are collected, one line each, instead of stopping at the first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mmrbench.vision.images import ImageLoadError, decode
from mmrbench.data.manifest import Manifest


@dataclass
class CheckReport:
    samples: int = 0
    files: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _decode(path: Path) -> tuple[Image.Image | None, str | None]:
    if not path.is_file():
        return None, "file not found"
    try:
        return decode(path), None
    except ImageLoadError as exc:
        return None, f"cannot decode ({str(exc).split(': ', 1)[-1]})"


def check_manifest(manifest: Manifest, *, progress: bool = False, boxes: bool = False) -> CheckReport:
    """Decode every file the manifest names; ``boxes`` also compares boxes with mask components."""
    rep = CheckReport(samples=len(manifest))
    sizes: dict[str, tuple[int, int] | str] = {}

    def size_of(rel: str) -> tuple[int, int] | str:
        if rel not in sizes:
            im, err = _decode(manifest.resolve(rel))
            if err:
                sizes[rel] = err
            else:
                assert im is not None  # _decode returns an image exactly when there is no error
                sizes[rel] = im.size
            rep.files += 1
        return sizes[rel]

    it = manifest.samples
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="check", unit="sample")
    for s in it:
        got = size_of(s.image)
        if isinstance(got, str):
            rep.problems.append(f"{s.id}: image {s.image}: {got}")
        elif got != (s.width, s.height):
            rep.problems.append(f"{s.id}: image {s.image} is {got[0]}x{got[1]} but the manifest says {s.width}x{s.height}")
        if s.reference is not None:
            r = size_of(s.reference)
            if isinstance(r, str):
                rep.problems.append(f"{s.id}: reference {s.reference}: {r}")
        if s.mask is not None:
            im, err = _decode(manifest.resolve(s.mask))
            rep.files += 1
            if err:
                rep.problems.append(f"{s.id}: mask {s.mask}: {err}")
                continue
            assert im is not None  # _decode returns an image exactly when there is no error
            m = np.asarray(im.convert("L")) > 0
            if not isinstance(got, str) and (m.shape[1], m.shape[0]) != got:
                rep.problems.append(f"{s.id}: mask {s.mask} is {m.shape[1]}x{m.shape[0]}, image is {got[0]}x{got[1]}")
                continue
            if s.is_anomalous and not m.any():
                rep.problems.append(f"{s.id}: mask {s.mask} is empty for an anomalous sample")
            for i, b in enumerate(s.boxes):
                x1, y1, x2, y2 = (int(v) for v in (b.x1, b.y1, np.ceil(b.x2), np.ceil(b.y2)))
                if not m[y1:y2, x1:x2].any():
                    rep.problems.append(f"{s.id}: box {i} {list(b.xyxy)} covers no mask pixel")
            if boxes:
                from mmrbench.data.masks import boxes_from_mask

                want = sorted(bb.xyxy for bb in boxes_from_mask(m))
                have = sorted(bb.xyxy for bb in s.boxes)
                if want != have:
                    rep.problems.append(f"{s.id}: boxes {have} differ from the mask's components {want}")
    return rep
