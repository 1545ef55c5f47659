"""Reference retrieval speed: fit on N normals, query M images (synthetic 256 px scenes).

Prints the time of each stage; the all-pairs block-KL part is vectorised (one einsum per chunk).
Usage: python benchmarks/retrieval_speed.py [--normals 500] [--queries 2000]
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from mmrbench.data.retrieval import ReferenceRetriever, alignment_distances


def scene(rng: np.random.Generator) -> np.ndarray:
    img = np.full((256, 256, 3), 190, np.uint8)
    for _ in range(8):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        x, y = (int(v) for v in rng.integers(20, 236, 2))
        cv2.circle(img, (x, y), int(rng.integers(8, 30)), c, -1)
    return img


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--normals", type=int, default=500)
    ap.add_argument("--queries", type=int, default=2000)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    normals = [scene(rng) for _ in range(a.normals)]
    queries = [scene(rng) for _ in range(min(a.queries, 200))]
    t = time.perf_counter()
    r = ReferenceRetriever.fit(normals)
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    hq = np.stack([r.histograms(q) for q in queries])
    t_hist = (time.perf_counter() - t) / len(queries)
    hq = hq[rng.integers(0, len(hq), a.queries)]
    t = time.perf_counter()
    d = alignment_distances(hq, r.normal_hist, r.config.tau)
    t_dist = time.perf_counter() - t
    print(f"fit on {a.normals} normals (features + k-means + histograms): {t_fit:.2f} s")
    print(f"query features + histograms: {t_hist * 1000:.2f} ms per image")
    print(f"all-pairs alignment distances {a.queries} x {a.normals} ({d.size:,} pairs, 25 blocks each): {t_dist:.2f} s")
    total = t_fit + t_hist * a.queries + t_dist
    print(f"estimated total for {a.queries} queries: {total:.1f} s")


if __name__ == "__main__":
    main()
