"""An MMAD-format miniature of the bundled synthetic benchmark, written from its known labels.

``write_synth_mmad(SYNTH)`` reads ``SYNTH/manifest.jsonl`` (``mmrbench data synth`` output) and writes
``mmad.json`` next to the images (default ``SYNTH/images/mmad.json``, keys relative to that folder, so
the first path component is the subdataset and the second the category, as in MMAD). Every test image
gets questions whose answers follow from the generator's labels:

* Anomaly Detection: is there a defect (normal images live under ``.../good/...``: MMAD's normal rule);
* Object Classification: which product (the other options are other categories of the manifest);
* anomalous images only: Defect Classification (the first box's defect type; the other options are
  defect types of the manifest absent from the image) and Defect Localization (the 3 x 3 grid cell of
  the first box's centre; the other options are cells holding no box centre).

Option order is shuffled per question with a seed, so the right letter is not always the same.
``similar_templates`` starts with the image's retrieved normal reference; ``random_templates`` is a
seeded shuffle of the category's training normals. The question wording is this project's own.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from mmrbench.data.manifest import read_manifest
from mmrbench.data.schema import Sample
from mmrbench.errors import MMRBenchError
from mmrbench.mmad.data import LETTERS, NORMAL_FLAG

ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")


def grid_cell(x: float, y: float, width: int, height: int) -> str:
    r = min(2, max(0, int(3 * y / height)))
    c = min(2, max(0, int(3 * x / width)))
    if (r, c) == (1, 1):
        return "center"
    return f"{ROWS[r]} {COLS[c]}"


ALL_CELLS = tuple(grid_cell((c + 0.5) / 3, (r + 0.5) / 3, 1, 1) for r in range(3) for c in range(3))


def _human(name: str) -> str:
    return name.replace("_", " ")


def _mcq(rng: random.Random, question: str, right: str, wrong: list[str], qtype: str, n_options: int = 4) -> dict[str, Any]:
    opts = [right] + rng.sample(wrong, min(len(wrong), n_options - 1))
    rng.shuffle(opts)
    return {"Question": question, "Options": {LETTERS[i]: o for i, o in enumerate(opts)},
            "Answer": LETTERS[opts.index(right)], "type": qtype}


def _questions(s: Sample, rng: random.Random, categories: list[str], defect_types: list[str]) -> list[dict]:
    anomalous = s.is_anomalous
    qs = [_mcq(rng, "Does the query image show any defect?", "Yes." if anomalous else "No.",
               ["No." if anomalous else "Yes."], "Anomaly Detection", 2)]
    qs.append(_mcq(rng, "Which product is shown in the query image?", _human(s.category) + ".",
                   [_human(c) + "." for c in categories if c != s.category], "Object Classification"))
    if anomalous and s.boxes:
        present = {b.label for b in s.boxes}
        first = s.boxes[0]
        qs.append(_mcq(rng, "Which type of defect does the product have?", _human(first.label) + ".",
                       [_human(t) + "." for t in defect_types if t not in present], "Defect Classification"))
        centres = {grid_cell((b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2, s.width, s.height) for b in s.boxes}
        right = grid_cell((first.x1 + first.x2) / 2, (first.y1 + first.y2) / 2, s.width, s.height)
        qs.append(_mcq(rng, "Where in the image is the defect?", f"At the {right}.",
                       [f"At the {c}." for c in ALL_CELLS if c not in centres], "Defect Localization"))
    return qs


def write_synth_mmad(synth_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, seed: int = 0,
                     templates: int = 4) -> Path:
    """Write the miniature's ``mmad.json``; returns its path. Images stay where the generator put them."""
    sd = Path(synth_dir)
    manifest = read_manifest(sd / "manifest.jsonl" if sd.is_dir() else sd, check_files=False)
    out = Path(out_dir) if out_dir is not None else manifest.root / "images"
    out.mkdir(parents=True, exist_ok=True)

    def key_of(rel: str) -> str:
        k = os.path.relpath((manifest.root / rel).resolve(), out.resolve()).replace(os.sep, "/")
        if k.startswith("..") or len(k.split("/")) < 3:
            raise MMRBenchError(f"{manifest.path}: field 'image': {rel} is not under {out} as "
                                f"<subdataset>/<category>/...; pass the images folder as the output folder")
        return k

    test = [s for s in manifest.samples if s.split == "test"]
    if not test:
        raise MMRBenchError(f"{manifest.path}: no test samples to ask about")
    categories = sorted({s.category for s in manifest.samples})
    defect_types = sorted({b.label for s in manifest.samples for b in s.boxes if b.label})
    normals: dict[tuple[str, str], list[str]] = {}
    for s in manifest.samples:
        if s.split == "train" and not s.is_anomalous:
            normals.setdefault((s.subdataset, s.category), []).append(key_of(s.image))
    obj: dict[str, Any] = {}
    for s in test:
        key = key_of(s.image)
        if (NORMAL_FLAG in key) == s.is_anomalous:
            raise MMRBenchError(f"{manifest.path}: sample '{s.id}': field 'image': MMAD tells normal images by "
                                f"'{NORMAL_FLAG}' in the path, which disagrees with label '{s.label}'")
        rng = random.Random(f"{seed}/{s.id}")
        pool = sorted(normals.get((s.subdataset, s.category), []))
        ref = key_of(s.reference) if s.reference else None
        similar = ([ref] if ref else []) + [p for p in pool if p != ref]
        shuffled = pool[:]
        rng.shuffle(shuffled)
        obj[key] = {"conversation": _questions(s, rng, categories, defect_types),
                    "similar_templates": similar[:templates], "random_templates": shuffled[:templates],
                    "mask_path": None}
    path = out / "mmad.json"
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
