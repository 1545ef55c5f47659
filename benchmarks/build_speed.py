"""``data build`` throughput: images per second on this machine and the projection for MMR-AD's 127k.

Writes a GoodsAD-like tree (JPEG images at --size px, PNG masks for the anomalies, --categories
categories of --per-category images, a third of them anomalous test images), builds it with the
appendix-B retrieval for every sample, and prints images/s, the projected time for 127,000 images
and the peak resident memory. The images are synthetic scenes; real sources' larger files
(Real-IAD 1024 px and raw, GoodsAD 3000 px) decode slower, so take the projection as a lower bound.

Usage: python benchmarks/build_speed.py [--categories 4] [--per-category 300] [--size 512]
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from mmrbench.data.build import build

TOTAL = 127_000  # MMR-AD's images (Table 1's sum, rounded)


def scene(rng: np.random.Generator, size: int) -> np.ndarray:
    img = np.full((size, size, 3), 190, np.uint8)
    for _ in range(10):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        x, y = (int(v) for v in rng.integers(size // 10, size - size // 10, 2))
        cv2.circle(img, (x, y), int(rng.integers(size // 40, size // 8)), c, -1)
    return img


def make_tree(root: Path, categories: int, per: int, size: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    n = 0
    for c in range(categories):
        cat = root / f"cat{c}"
        for i in range(per):
            img = scene(rng, size)
            kind = ("train/good", "test/good", "test/dent")[i % 3]
            p = cat / kind / f"{i:05d}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            if kind == "test/dent":
                x, y = (int(v) for v in rng.integers(size // 8, size - size // 4, 2))
                img[y:y + size // 10, x:x + size // 10] = 20
                m = np.zeros((size, size), np.uint8)
                m[y:y + size // 10, x:x + size // 10] = 255
                mp = cat / "ground_truth" / "dent" / f"{i:05d}.png"
                mp.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(mp), m)
            cv2.imwrite(str(p), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--categories", type=int, default=4)
    ap.add_argument("--per-category", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--reference", default="retrieval")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "GoodsAD"
        n = make_tree(root, a.categories, a.per_category, a.size)
        src = Path(tmp) / "SOURCES.toml"
        src.write_text(f'[GoodsAD]\nroot = "{root}"\n')
        t = time.perf_counter()
        rep = build(src, Path(tmp) / "out", reference=a.reference, progress=False)
        dt = time.perf_counter() - t
    rate = rep.samples / dt
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"built {rep.samples} of {n} images ({a.categories} categories x {a.per_category}, {a.size} px JPEG, "
          f"reference={a.reference}) in {dt:.1f} s: {rate:.1f} images/s")
    print(f"projection for {TOTAL:,} images: {TOTAL / rate / 3600:.2f} h at this rate (one process)")
    print(f"peak resident memory: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
