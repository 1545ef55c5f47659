"""A tiny MMR-AD-format manifest with generated PNGs, and a deterministic "model" over it.

The runner tests need real files (the runner loads and encodes them) and a server that answers
each sample the same way every time; the server recognises a sample by the decoded pixels of its
query image (encoding-independent), so answers survive resizing-free re-encoding.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mmrbench.data.manifest import read_manifest, write_manifest
from mmrbench.data.schema import Box, Sample

SUBDATASETS = ("SubA", "SubB")
CATEGORIES = ("widget", "gear")


def _noise(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    return rng.integers(60, 200, size=(h, w, 3), dtype=np.uint8)


def make_tiny_manifest(root: Path, *, size=(48, 40), normals=2, anomalous=2) -> Path:
    """2 subdatasets x 2 categories x (normals + anomalous) test images, one train normal each."""
    root = Path(root)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    w, h = size
    samples: list[Sample] = []
    for sub in SUBDATASETS:
        for cat in CATEGORIES:
            ref = f"img/{sub}_{cat}_ref.png"
            Image.fromarray(_noise(rng, w, h)).save(root / ref)
            samples.append(Sample(f"{sub}/{cat}/train0", sub, cat, "train", ref, "normal", w, h))
            for i in range(normals):
                rel = f"img/{sub}_{cat}_n{i}.png"
                Image.fromarray(_noise(rng, w, h)).save(root / rel)
                samples.append(Sample(f"{sub}/{cat}/n{i}", sub, cat, "test", rel, "normal", w, h, reference=ref))
            for i in range(anomalous):
                arr = _noise(rng, w, h)
                x1, y1 = 5 + 3 * i, 6 + 2 * i
                x2, y2 = x1 + 12, y1 + 10
                arr[y1:y2, x1:x2] = (250, 20, 20)
                rel = f"img/{sub}_{cat}_a{i}.png"
                Image.fromarray(arr).save(root / rel)
                label = "scratch" if i % 2 == 0 else "hole"
                samples.append(Sample(f"{sub}/{cat}/a{i}", sub, cat, "test", rel, "anomalous", w, h,
                                      reference=ref, boxes=[Box(x1, y1, x2, y2, label)]))
    path = root / "manifest.jsonl"
    write_manifest(path, samples)
    return path


def pixel_digest(image) -> str:
    im = image.convert("RGB")
    return hashlib.sha256(f"{im.size}".encode() + im.tobytes()).hexdigest()


def answer_for(sample: Sample) -> str:
    """Deterministic answers with some mistakes, so metrics are neither 0 nor 100."""
    k = int(hashlib.sha256(sample.id.encode()).hexdigest(), 16)
    if sample.is_anomalous:
        if k % 3 == 0:
            return "<think>looks fine</think><answer>No.</answer>"
        b = sample.boxes[0]
        return (f"<think>a defect</think><answer>Yes. {{'bbox_2d': [{int(b.x1)}, {int(b.y1)}, {int(b.x2)}, "
                f"{int(b.y2)}], 'label': '{b.label}'}}</answer>")
    if k % 4 == 0:
        return "<think>hmm</think><answer>Yes. {'bbox_2d': [1, 1, 9, 9], 'label': 'stain'}</answer>"
    return "<think>clean</think><answer>No.</answer>"


def digest_index(manifest_path: Path) -> dict[str, Sample]:
    """query-pixel digest -> sample, for the test split."""
    from mmrbench.vision.images import load_rgb
    m = read_manifest(manifest_path)
    return {pixel_digest(load_rgb(m.resolve(s.image))): s for s in m.samples if s.split == "test"}


def write_scripted_answers(manifest_path: Path, out: Path) -> Path:
    m = read_manifest(manifest_path)
    with open(out, "w", encoding="utf-8") as f:
        for s in m.samples:
            if s.split == "test":
                f.write(json.dumps({"id": s.id, "response": answer_for(s)}) + "\n")
    return out


def bytes_index(manifest_path: Path) -> dict[str, Sample]:
    """sha256 of the query file's bytes -> sample (the runner sends unmodified files as they are)."""
    m = read_manifest(manifest_path)
    return {hashlib.sha256(m.resolve(s.image).read_bytes()).hexdigest(): s for s in m.samples if s.split == "test"}


def copy_samples(src_manifest: Path, keep, out: Path) -> Path:
    """Copy the samples ``keep(sample)`` accepts (their manifest lines and files) into ``out``, so a test
    may modify or re-run them; returns the new manifest path."""
    import shutil
    src = read_manifest(src_manifest)
    kept = [s for s in src.samples if keep(s)]
    for s in kept:
        for rel in (s.image, s.reference, s.mask):
            if rel:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src.resolve(rel), out / rel)
    write_manifest(out / "manifest.jsonl", kept)
    return out / "manifest.jsonl"


def copy_categories(src_manifest: Path, categories, out: Path) -> Path:
    """:func:`copy_samples` of some categories."""
    wanted = set(categories)
    return copy_samples(src_manifest, lambda s: s.category in wanted, out)
