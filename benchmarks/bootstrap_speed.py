"""Bootstrap CI cost: vectorised resampling (mmrbench.leaderboard.stats) vs a per-resample Python loop.

Prints wall time for one subdataset of N images in C categories with B resamples, and the speed-up
measured in the same run. Usage: python benchmarks/bootstrap_speed.py [N] [C] [B]
"""
from __future__ import annotations

import sys
import time

import numpy as np

from mmrbench.leaderboard.stats import PerImage, bootstrap_ci, det_metrics, loc_metrics


def synthetic(n: int, c: int, seed: int = 0) -> dict[str, PerImage]:
    rng = np.random.default_rng(seed)
    sizes = np.full(c, n // c)
    sizes[: n % c] += 1
    det, loc = [], []
    for k in sizes:
        lab = rng.integers(0, 4, size=k)  # which of tp/fp/fn/tn this image is
        det.append(np.eye(4, dtype=np.int64)[lab])
        loc.append(rng.integers(0, 3, size=(k, 3)))
    return {"S": PerImage([f"c{i}" for i in range(c)], [[f"{i}-{j}" for j in range(k)] for i, k in enumerate(sizes)],
                          det, loc)}


def loop_ci(per: dict[str, PerImage], resamples: int, seed: int) -> float:
    """Reference implementation: one resample at a time, sums in Python-level loops over categories."""
    p = per["S"]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(resamples):
        accs = []
        for d, l in zip(p.det, p.loc):
            idx = rng.integers(0, len(d), size=len(d))
            accs.append((det_metrics(d[idx].sum(axis=0))["accuracy"], loc_metrics(l[idx].sum(axis=0))["accuracy"]))
        vals.append(np.mean(accs, axis=0))
    return float(np.quantile(np.asarray(vals)[:, 0], 0.025))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    c = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    b = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    per = synthetic(n, c)
    t0 = time.perf_counter()
    bootstrap_ci(per, resamples=b, seed=0)
    t_vec = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop_ci(per, b, 0)
    t_loop = time.perf_counter() - t0
    print(f"images={n} categories={c} resamples={b}")
    print(f"vectorised bootstrap (all 6 cells x det/loc): {t_vec:.2f} s")
    print(f"per-resample loop (2 cells only):            {t_loop:.2f} s")
    print(f"speed-up: {t_loop / t_vec:.1f}x")


if __name__ == "__main__":
    main()
